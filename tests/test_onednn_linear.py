"""HfViTLinear: float32 CPU linears on oneDNN where that is the faster library, with torch's own F.linear results."""

import pytest
import torch
from conftest import randomize_head, tiny_config
from transformers.dynamic_module_utils import get_class_from_dynamic_module

from hf_vit import HfViTForImageClassification, build_image_processor, save_model_folder
from hf_vit import modeling_hf_vit as modeling
from hf_vit.modeling_hf_vit import HfViTLinear, _onednn_linear_by_default

needs_onednn = pytest.mark.skipif(modeling._ONEDNN_LINEAR is None, reason="this torch build has no oneDNN linear")


@pytest.fixture
def onednn_switch(monkeypatch):
    """Set `HfViTLinear.use_onednn` inside a test; monkeypatch brings the import-time choice back afterwards."""
    return lambda flag: monkeypatch.setattr(HfViTLinear, "use_onednn", flag)


def _forward_backward(layer, inputs, grad_output):
    inputs = inputs.detach().requires_grad_(True)
    layer.zero_grad()
    output = layer(inputs)
    output.backward(grad_output)
    grads = [inputs.grad, layer.weight.grad] + ([layer.bias.grad] if layer.bias is not None else [])
    return [output.detach()] + [grad.clone() for grad in grads]


@needs_onednn
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(37, 48), (3, 11, 48)], ids=["2d", "3d"])
def test_onednn_linear_gives_the_float32_product_and_its_gradients(onednn_switch, shape, bias):
    torch.manual_seed(0)
    layer = HfViTLinear(48, 80, bias=bias)
    inputs = torch.randn(*shape)
    grad_output = torch.randn(*shape[:-1], 80)
    onednn_switch(True)
    onednn = _forward_backward(layer, inputs, grad_output)
    # Reference in float64 (F.linear): both libraries must sit within float32 rounding of it.
    exact = _forward_backward(layer.double(), inputs.double(), grad_output.double())
    layer.float()
    onednn_switch(False)
    aten = _forward_backward(layer, inputs, grad_output)
    names = ["output", "d_input", "d_weight", "d_bias"][: len(exact)]
    for name, ours, theirs, reference in zip(names, onednn, aten, exact, strict=True):
        assert ours.dtype == torch.float32 and ours.shape == reference.shape, name
        torch.testing.assert_close(ours.double(), reference, rtol=1e-5, atol=1e-5, msg=name)
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5, msg=name)


@needs_onednn
def test_non_contiguous_inputs_and_frozen_weights(onednn_switch):
    """A transposed input is read as it is; a frozen layer (fine-tuning a head only) gets no weight gradient."""
    onednn_switch(True)
    layer = HfViTLinear(16, 8).requires_grad_(False)
    inputs = torch.randn(16, 10).t().requires_grad_(True)
    output = layer(inputs)
    output.sum().backward()
    torch.testing.assert_close(output, torch.nn.functional.linear(inputs, layer.weight, layer.bias))
    torch.testing.assert_close(inputs.grad, layer.weight.sum(0).expand(10, 16))
    assert layer.weight.grad is None


@needs_onednn
@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_model_on_onednn_linears_matches_the_aten_model(onednn_switch, compiled):
    """Logits and every gradient of a model agree with the F.linear model, eager and under torch.compile with
    fullgraph (the custom op is opaque to inductor, whose own oneDNN lowering needs frozen weights)."""
    torch.manual_seed(0)
    model = randomize_head(HfViTForImageClassification(tiny_config(num_hidden_layers=3)))
    pixels, labels = torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 3])

    def run(flag):
        onednn_switch(flag)
        model.zero_grad()
        torch._dynamo.reset()
        forward = torch.compile(model, fullgraph=True) if compiled and flag else model
        output = forward(pixels, labels=labels)
        output.loss.backward()
        return output.logits.detach(), {name: p.grad.clone() for name, p in model.named_parameters()}

    aten_logits, aten_grads = run(False)
    logits, grads = run(True)
    torch.testing.assert_close(logits, aten_logits, rtol=1e-5, atol=1e-5)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, aten_grads[name], rtol=1e-4, atol=1e-6, msg=name)


@needs_onednn
def test_inference_fuses_fc1_and_gelu_unless_something_would_see_fc1s_output(onednn_switch):
    torch.manual_seed(0)
    model = randomize_head(HfViTForImageClassification(tiny_config(num_hidden_layers=3))).eval()
    mlp = model.vit.layers[0].mlp
    pixels, tokens = torch.randn(4, 3, 16, 16), torch.randn(4, 17, 32)
    onednn_switch(False)
    with torch.no_grad():
        aten_logits = model(pixels).logits
        assert not mlp.fc1_and_gelu_fuse(tokens)
    onednn_switch(True)
    with torch.inference_mode():
        assert mlp.fc1_and_gelu_fuse(tokens)
        torch.testing.assert_close(model(pixels).logits, aten_logits, rtol=1e-5, atol=1e-5)
        torch._dynamo.reset()
        compiled = torch.compile(model, fullgraph=True)
        torch.testing.assert_close(compiled(pixels).logits, aten_logits, rtol=1e-5, atol=1e-5)
    assert not mlp.fc1_and_gelu_fuse(tokens)  # autograd on: GELU's backward needs fc1's output
    seen = []
    hook = mlp.fc1.register_forward_hook(lambda module, args, output: seen.append(output))
    with torch.no_grad():
        model(pixels)
    hook.remove()
    assert len(seen) == 1 and seen[0].shape == (4, 17, 64)  # a hooked fc1 runs on its own
    assert not HfViTForImageClassification(tiny_config(hidden_act="gelu_new")).vit.layers[0].mlp.gelu_fusable


def test_autocast_and_other_dtypes_take_f_linear(onednn_switch):
    onednn_switch(True)
    layer = HfViTLinear(8, 4)
    inputs = torch.randn(3, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert layer(inputs).dtype == torch.bfloat16
    assert layer.double()(inputs.double()).dtype == torch.float64
    assert layer.float()(torch.randn(0, 8)).shape == (0, 4)


def test_choice_follows_the_environment_variable(monkeypatch):
    monkeypatch.setenv("HF_VIT_ONEDNN_LINEAR", "0")
    assert _onednn_linear_by_default() is False
    monkeypatch.setenv("HF_VIT_ONEDNN_LINEAR", "maybe")
    with pytest.raises(ValueError, match="HF_VIT_ONEDNN_LINEAR='maybe' must be 'auto', '0'"):
        _onednn_linear_by_default()
    monkeypatch.setenv("HF_VIT_ONEDNN_LINEAR", "1")
    if modeling._ONEDNN_LINEAR is None:
        with pytest.raises(ValueError, match="no oneDNN linear"):
            _onednn_linear_by_default()
    else:
        assert _onednn_linear_by_default() is True
    monkeypatch.setenv("HF_VIT_ONEDNN_LINEAR", "auto")
    with open("/proc/cpuinfo") as cpuinfo:
        is_amd = "AuthenticAMD" in cpuinfo.read(4096)
    assert _onednn_linear_by_default() is (is_amd and modeling._ONEDNN_LINEAR is not None)


@needs_onednn
def test_remote_code_copy_in_the_same_process_reuses_the_op(tmp_path, onednn_switch, monkeypatch):
    """transformers imports a folder's modeling file as a second module beside hf_vit's; both use one custom op
    (a second definition of `hf_vit::onednn_linear` would be an error) and give the same logits."""
    onednn_switch(True)
    torch.manual_seed(0)
    model = randomize_head(HfViTForImageClassification(tiny_config())).eval()
    save_model_folder(model, build_image_processor(model.config), tmp_path)
    # Where hf_vit is registered, the Auto classes take hf_vit's own class: import the folder's copy directly.
    remote_class = get_class_from_dynamic_module("modeling_hf_vit.HfViTForImageClassification", tmp_path)
    remote = remote_class.from_pretrained(tmp_path).eval()
    remote_linear = type(remote.vit.layers[0].attention.qkv)
    assert remote_linear is not HfViTLinear and remote_linear.__module__.startswith("transformers_modules")
    monkeypatch.setattr(remote_linear, "use_onednn", True)
    pixels = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(remote(pixels).logits, model(pixels).logits)
