"""transformers' own test helpers (`tests/test_modeling_common.py`, `tests/test_configuration_common.py`), taken from
the source distribution of the installed transformers version, so that hf_vit is held to the checks of the release
its users run.

The wheel carries no tests, so the sdist is fetched with pip on first use and its `tests/` folder is cached under
`$XDG_CACHE_HOME/hf_vit-tests/transformers-X/` (`~/.cache/...` by default; `HF_VIT_TEST_CACHE` overrides the root).
A run extracts into a private temporary folder and renames it into place, so a concurrent run sees either no cache or
a complete one, never half an extract.
"""

import importlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import types
from pathlib import Path

import transformers

# The name under which the sdist's `tests` package is imported: our own `tests/` folder (no `__init__.py`) would
# otherwise merge with it as one namespace package called `tests`.
PACKAGE = "transformers_sdist_tests"


class SdistUnavailable(Exception):
    """The sdist of the installed transformers could not be fetched (no registry, no pip); the message says why."""


def cache_root() -> Path:
    if os.environ.get("HF_VIT_TEST_CACHE"):
        return Path(os.environ["HF_VIT_TEST_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hf_vit-tests"


def tests_dir(version: str = transformers.__version__, timeout: float = 300) -> Path:
    """The `tests/` folder of transformers' sdist for `version`, fetched and cached on first use."""
    final = cache_root() / f"transformers-{version}"
    if (final / "tests" / "test_modeling_common.py").is_file():
        return final / "tests"
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".transformers-{version}-", dir=final.parent))
    staging.chmod(0o755)  # mkdtemp's 0700 would hide a shared cache from other users once renamed into place
    try:
        _download_and_extract(version, staging, timeout)
        try:
            os.rename(staging, final)
        except OSError:
            # Another run finished first (the target exists and is not empty): use its copy.
            if not (final / "tests" / "test_modeling_common.py").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final / "tests"


def _download_and_extract(version: str, staging: Path, timeout: float) -> None:
    download = staging / "download"
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
               "--disable-pip-version-check", "--retries", "1", "--timeout", "15",
               f"transformers=={version}", "-d", str(download)]  # fmt: skip
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as error:
        raise SdistUnavailable(f"`pip download transformers=={version}` took over {timeout:.0f} s") from error
    archives = sorted(download.glob("transformers-*.tar.gz"))
    if result.returncode != 0 or not archives:
        last_lines = " | ".join((result.stderr or result.stdout).strip().splitlines()[-2:])
        raise SdistUnavailable(f"`pip download transformers=={version}` (the sdist) failed: {last_lines}")
    with tarfile.open(archives[0]) as archive:
        prefix = f"{archive.getnames()[0].split('/')[0]}/tests/"
        members = [m for m in archive.getmembers() if m.name.startswith(prefix) and (m.isfile() or m.isdir())]
        for member in members:
            member.name = "tests/" + member.name[len(prefix) :]
        archive.extractall(staging, members=members, filter="data")
    if not (staging / "tests" / "test_modeling_common.py").is_file():
        raise SdistUnavailable(f"the sdist of transformers {version} holds no tests/test_modeling_common.py")
    # The repository's tests/ is a package; the sdist leaves out its (empty) `__init__.py`, which
    # test_configuration_common.py reads through `direct_transformers_import(Path(__file__).parent)`.
    (staging / "tests" / "__init__.py").touch()
    shutil.rmtree(download)


def import_common_tests(stand_ins: dict[str, dict]) -> tuple[types.ModuleType, types.ModuleType]:
    """Import the sdist's `test_modeling_common` and `test_configuration_common` under `PACKAGE`.

    `stand_ins` maps a submodule the two import but the sdist does not ship (e.g. "generation.test_utils") to the
    names it must provide; the caller says what each stands for."""
    directory = tests_dir()
    if PACKAGE not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            PACKAGE, directory / "__init__.py", submodule_search_locations=[str(directory)]
        )
        package = importlib.util.module_from_spec(spec)
        sys.modules[PACKAGE] = package
        spec.loader.exec_module(package)
        for dotted, names in stand_ins.items():
            parts = dotted.split(".")
            if directory.joinpath(*parts).with_suffix(".py").is_file():
                continue  # this sdist ships the module itself: use it
            for depth in range(1, len(parts) + 1):
                name = ".".join([PACKAGE, *parts[:depth]])
                if name not in sys.modules:
                    module = types.ModuleType(name)
                    if depth < len(parts):
                        module.__path__ = []
                    sys.modules[name] = module
            vars(sys.modules[".".join([PACKAGE, *parts])]).update(names)
    return (
        importlib.import_module(f"{PACKAGE}.test_modeling_common"),
        importlib.import_module(f"{PACKAGE}.test_configuration_common"),
    )
