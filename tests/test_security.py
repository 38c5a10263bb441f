"""No code from a checkpoint ever runs: weights load from safetensors, or as plain tensors (weights_only=True)."""

import ast
import pickle
from pathlib import Path

import pytest
from conftest import tiny_config

from hf_vit import HfViTForImageClassification
from hf_vit.convert import convert_timm

PACKAGE = Path(__file__).resolve().parent.parent / "hf_vit"


class _WritesAFileWhenUnpickled:
    """A pickle payload: unpickling it calls Path.touch on the marker (any callable would do)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def write_malicious_pickle(path: Path, marker: Path) -> None:
    with open(path, "wb") as handle:
        pickle.dump({"weights": _WritesAFileWhenUnpickled(marker)}, handle)


def test_from_pretrained_never_unpickles_a_bin_file(tmp_path):
    folder = tmp_path / "model"
    HfViTForImageClassification(tiny_config()).save_pretrained(folder)
    (folder / "model.safetensors").unlink()
    marker = tmp_path / "pwned"
    write_malicious_pickle(folder / "pytorch_model.bin", marker)
    with pytest.raises(Exception):  # noqa: B017 - what matters is that nothing ran
        HfViTForImageClassification.from_pretrained(folder)
    assert not marker.exists(), "loading executed code from the checkpoint"


def test_converter_never_unpickles_a_checkpoint(tmp_path):
    pytest.importorskip("timm")
    marker = tmp_path / "pwned"
    checkpoint = tmp_path / "vit.pth"
    write_malicious_pickle(checkpoint, marker)
    with pytest.raises(ValueError, match="weights_only=True"):
        convert_timm(str(checkpoint), model_name="vit_tiny_patch16_224")
    assert not marker.exists(), "conversion executed code from the checkpoint"


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node


def test_no_unsafe_deserialisation_in_the_package():
    """A reviewer's grep, made exact with the AST: every torch.load passes weights_only=True, numpy never allows
    pickles, and neither pickle, eval nor exec appear."""
    offences = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [alias.name for alias in node.names] + [getattr(node, "module", None) or ""]
                if any(name.split(".")[0] in ("pickle", "dill", "cloudpickle", "joblib") for name in names):
                    offences.append(f"{path.name}:{node.lineno} imports a pickle library")
        for call in _calls(tree):
            func = call.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            keywords = {k.arg: k.value for k in call.keywords}
            if name == "load" and isinstance(func, ast.Attribute) and getattr(func.value, "id", "") == "torch":
                flag = keywords.get("weights_only")
                if not (isinstance(flag, ast.Constant) and flag.value is True):
                    offences.append(f"{path.name}:{call.lineno} torch.load without weights_only=True")
            if name == "load" and isinstance(func, ast.Attribute) and getattr(func.value, "id", "") in ("np", "numpy"):
                flag = keywords.get("allow_pickle")
                if not (isinstance(flag, ast.Constant) and flag.value is False):
                    offences.append(f"{path.name}:{call.lineno} numpy.load without allow_pickle=False")
            if isinstance(func, ast.Name) and func.id in ("eval", "exec"):
                offences.append(f"{path.name}:{call.lineno} calls {func.id}")
            if keywords.get("trust_remote_code") is not None:
                flag = keywords["trust_remote_code"]
                if not (isinstance(flag, ast.Constant) and flag.value is False):
                    offences.append(f"{path.name}:{call.lineno} loads with trust_remote_code (runs the repo's code)")
    assert not offences, "\n".join(offences)
