"""The fetch-and-cache of transformers' test helpers (tests/transformers_sdist.py): a cached copy is reused without
the registry, and an unreachable registry gives the reason and leaves no half-made copy behind."""

import os
import time

import pytest
import transformers_sdist


@pytest.fixture
def unreachable_registry(tmp_path, monkeypatch):
    """A private cache, and pip pointed at a port where nothing listens (no user pip configuration either)."""
    monkeypatch.setenv("HF_VIT_TEST_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.delenv("PIP_EXTRA_INDEX_URL", raising=False)
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    return tmp_path / "cache"


def test_a_cached_copy_is_used_without_the_registry(unreachable_registry):
    cached = unreachable_registry / "transformers-5.24.0" / "tests"
    cached.mkdir(parents=True)
    (cached / "test_modeling_common.py").write_text("# cached\n")
    start = time.perf_counter()
    assert transformers_sdist.tests_dir("5.24.0") == cached
    assert time.perf_counter() - start < 1.0  # no pip run


def test_an_unreachable_registry_gives_the_reason_and_leaves_nothing_half_made(unreachable_registry):
    with pytest.raises(transformers_sdist.SdistUnavailable, match=r"pip download transformers==5\.24\.0.*failed: "):
        transformers_sdist.tests_dir("5.24.0", timeout=120)
    assert os.listdir(unreachable_registry) == []
