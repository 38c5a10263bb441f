"""hf_vit.speedups: the installed package's CPU speed-ups compute what the plain model computes.

Every branch runs on any machine: the oneDNN switch is forced on and off (its automatic choice depends on the CPU
vendor, which is passed in), and the attention path is chosen by sequence length, which the tests set.
"""

import pytest
import torch
from conftest import randomize_head, tiny_config
from transformers.dynamic_module_utils import get_class_from_dynamic_module

from hf_vit import HfViTForImageClassification, build_image_processor, save_model_folder, speedups
from hf_vit.speedups import SHORT_SEQUENCE_ATTENTION, FusedGeluMLP, OneDNNLinear, apply, onednn_is_faster

needs_onednn = pytest.mark.skipif(speedups.ONEDNN_LINEAR is None, reason="this torch build has no oneDNN linear")


def tiny_model(**overrides):
    torch.manual_seed(0)
    return randomize_head(HfViTForImageClassification(tiny_config(**overrides)))


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
def test_onednn_linear_gives_the_float32_product_and_its_gradients(shape, bias):
    torch.manual_seed(0)
    layer = torch.nn.Linear(48, 80, bias=bias)
    inputs = torch.randn(*shape)
    grad_output = torch.randn(*shape[:-1], 80)
    aten = _forward_backward(layer, inputs, grad_output)
    exact = _forward_backward(layer.double(), inputs.double(), grad_output.double())  # float64 reference
    layer.float().__class__ = OneDNNLinear
    onednn = _forward_backward(layer, inputs, grad_output)
    names = ["output", "d_input", "d_weight", "d_bias"][: len(exact)]
    for name, ours, theirs, reference in zip(names, onednn, aten, exact, strict=True):
        assert ours.dtype == torch.float32 and ours.shape == reference.shape, name
        # Both libraries within float32 rounding of the float64 product (48- or 37-term sums of values near 1).
        torch.testing.assert_close(ours.double(), reference, rtol=1e-5, atol=1e-5, msg=name)
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5, msg=name)


@needs_onednn
def test_non_contiguous_inputs_and_frozen_weights():
    """A transposed input is read as it is; a frozen layer (fine-tuning a head only) gets no weight gradient."""
    layer = torch.nn.Linear(16, 8).requires_grad_(False)
    layer.__class__ = OneDNNLinear
    inputs = torch.randn(16, 10).t().requires_grad_(True)
    output = layer(inputs)
    output.sum().backward()
    torch.testing.assert_close(output, torch.nn.functional.linear(inputs, layer.weight, layer.bias))
    torch.testing.assert_close(inputs.grad, layer.weight.sum(0).expand(10, 16))
    assert layer.weight.grad is None


@needs_onednn
@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_model_with_speedups_matches_the_plain_model(compiled):
    """Logits and every gradient agree with the plain model, eager and under torch.compile with fullgraph (the custom
    op is opaque to inductor); the state dict is the plain model's, key for key."""
    plain = tiny_model(num_hidden_layers=3)
    fast = tiny_model(num_hidden_layers=3)
    applied = apply(fast, onednn_linear=True)
    assert len(applied) == 2 and "12 block linears on oneDNN" in applied[0]
    assert fast.state_dict().keys() == plain.state_dict().keys()
    pixels, labels = torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 3])

    def run(model):
        torch._dynamo.reset()
        forward = torch.compile(model, fullgraph=True) if compiled else model
        output = forward(pixels, labels=labels)
        output.loss.backward()
        return output.logits.detach(), {name: p.grad.clone() for name, p in model.named_parameters()}

    plain_logits, plain_grads = run(plain)
    logits, grads = run(fast)
    torch.testing.assert_close(logits, plain_logits, rtol=1e-5, atol=1e-5)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, plain_grads[name], rtol=1e-4, atol=1e-6, msg=name)


@needs_onednn
def test_inference_fuses_fc1_and_gelu_unless_something_would_see_fc1s_output():
    model = tiny_model(num_hidden_layers=3).eval()
    pixels, tokens = torch.randn(4, 3, 16, 16), torch.randn(4, 17, 32)
    with torch.no_grad():
        plain_logits = model(pixels).logits
    apply(model, onednn_linear=True)
    mlp = model.vit.layers[0].mlp
    assert type(mlp) is FusedGeluMLP
    with torch.inference_mode():
        assert mlp.fc1_and_gelu_fuse(tokens)
        torch.testing.assert_close(model(pixels).logits, plain_logits, rtol=1e-5, atol=1e-5)
        torch._dynamo.reset()
        compiled = torch.compile(model, fullgraph=True)
        torch.testing.assert_close(compiled(pixels).logits, plain_logits, rtol=1e-5, atol=1e-5)
    assert not mlp.fc1_and_gelu_fuse(tokens)  # autograd on: GELU's backward needs fc1's output
    seen = []
    hook = mlp.fc1.register_forward_hook(lambda module, args, output: seen.append(output))
    with torch.no_grad():
        model(pixels)
    hook.remove()
    assert len(seen) == 1 and seen[0].shape == (4, 17, 64)  # a hooked fc1 runs on its own
    tanh_gelu = tiny_model(hidden_act="gelu_new")
    apply(tanh_gelu, onednn_linear=True)
    assert type(tanh_gelu.vit.layers[0].mlp) is not FusedGeluMLP  # oneDNN fuses the exact GELU only


def test_onednn_off_leaves_the_linears_plain_and_autocast_takes_f_linear():
    model = tiny_model()
    apply(model, onednn_linear=False)
    assert not any(isinstance(m, OneDNNLinear) for m in model.modules())
    layer = torch.nn.Linear(8, 4)
    layer.__class__ = OneDNNLinear
    inputs = torch.randn(3, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert layer(inputs).dtype == torch.bfloat16
    assert layer.double()(inputs.double()).dtype == torch.float64
    assert layer.float()(torch.randn(0, 8)).shape == (0, 4)


def test_automatic_choice_takes_onednn_on_amd_x86_linux_only():
    expected = speedups.ONEDNN_LINEAR is not None
    assert onednn_is_faster("AuthenticAMD", "x86_64", "Linux") is expected
    assert onednn_is_faster("GenuineIntel", "x86_64", "Linux") is False
    assert onednn_is_faster("AuthenticAMD", "aarch64", "Linux") is False
    assert onednn_is_faster("AuthenticAMD", "x86_64", "Windows") is False
    with open("/proc/cpuinfo") as cpuinfo:
        vendor = "AuthenticAMD" if "AuthenticAMD" in cpuinfo.read(4096) else "GenuineIntel"
    assert onednn_is_faster() is onednn_is_faster(vendor)


def attention_kernels_run(model, pixels) -> set[str]:
    """Names of the attention operators a forward and backward of `model` runs, as torch's profiler records them."""
    with torch.profiler.profile() as profiler:
        model(pixels).logits.sum().backward()
    names = {event.key for event in profiler.key_averages()}
    return {name for name in names if "scaled_dot_product" in name or name == "aten::bmm"}


@pytest.mark.parametrize("num_heads, short", [(1, True), (2, False)], ids=["32-per-head", "16-per-head"])
def test_short_sequence_attention_computes_matmul_and_softmax_while_keys_fit_the_head(num_heads, short):
    """With the speed-up, sdpa models take matmul + softmax while there are no more keys (here 17) than channels per
    head (width 32 over 1 or 2 heads), sdpa's own kernel otherwise; the plain model always runs sdpa's kernel. Either
    way they compute what eager attention computes, gradients included."""
    pixels = torch.randn(2, 3, 16, 16)
    plain = tiny_model(num_attention_heads=num_heads).train()
    assert "aten::_scaled_dot_product_flash_attention_for_cpu" in attention_kernels_run(plain, pixels)
    model = tiny_model(num_attention_heads=num_heads).train()
    apply(model, onednn_linear=False)
    assert model.config._attn_implementation == SHORT_SEQUENCE_ATTENTION
    kernels = attention_kernels_run(model, pixels)
    assert ("aten::_scaled_dot_product_flash_attention_for_cpu" in kernels) != short, kernels
    assert ("aten::bmm" in kernels) == short, kernels
    logits = model(pixels).logits
    grads = torch.autograd.grad(logits.square().sum(), model.parameters())
    model.set_attn_implementation("eager")
    eager_logits = model(pixels).logits
    eager_grads = torch.autograd.grad(eager_logits.square().sum(), model.parameters())
    torch.testing.assert_close(logits, eager_logits, atol=1e-5, rtol=0)
    for grad, eager_grad in zip(grads, eager_grads, strict=True):
        torch.testing.assert_close(grad, eager_grad, atol=1e-4, rtol=1e-4)


def test_a_chosen_attention_implementation_is_kept_and_saved_folders_stay_plain(tmp_path):
    eager = tiny_model()
    eager.set_attn_implementation("eager")
    assert not any("attention" in change for change in apply(eager, onednn_linear=False))
    assert eager.config._attn_implementation == "eager"
    model = tiny_model()
    apply(model, onednn_linear=True)
    save_model_folder(model, build_image_processor(model.config), tmp_path)
    assert SHORT_SEQUENCE_ATTENTION not in (tmp_path / "config.json").read_text()
    reloaded = HfViTForImageClassification.from_pretrained(tmp_path)
    assert reloaded.config._attn_implementation == "sdpa"
    assert not any(isinstance(m, OneDNNLinear) for m in reloaded.modules())


@needs_onednn
def test_remote_code_copy_takes_the_speedups_too(tmp_path):
    """transformers imports a folder's modeling file as a second module beside hf_vit's; `apply` finds its blocks by
    class name, and both copies use the one custom op registered by hf_vit.speedups."""
    model = tiny_model().eval()
    save_model_folder(model, build_image_processor(model.config), tmp_path)
    # Where hf_vit is registered, the Auto classes take hf_vit's own class: import the folder's copy directly.
    remote_class = get_class_from_dynamic_module("modeling_hf_vit.HfViTForImageClassification", tmp_path)
    remote = remote_class.from_pretrained(tmp_path).eval()
    assert remote_class.__module__.startswith("transformers_modules")
    apply(remote, onednn_linear=True)
    assert type(remote.vit.layers[0].attention.qkv) is OneDNNLinear
    assert remote.config._attn_implementation == SHORT_SEQUENCE_ATTENTION
    pixels = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(remote(pixels).logits, model(pixels).logits, rtol=1e-5, atol=1e-5)
