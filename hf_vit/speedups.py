"""CPU speed-ups for a built hf_vit model, applied in one visible call: `hf_vit.speedups.apply(model)`.

The Hub files (`modeling_hf_vit.py`) stay plain torch + transformers, the same on every machine. What is faster on one
kind of CPU lives here, in the installed package, and changes no weight and no saved file:

- **Linears on oneDNN** (`onednn_linear`): float32 CPU products of the blocks' qkv, proj, fc1 and fc2 run on oneDNN
  instead of torch's default BLAS (MKL). MKL picks its AVX-512 kernels on Intel CPUs only, so on AMD x86-64 CPUs
  oneDNN's are the faster ones; on Intel CPUs MKL is. "auto" therefore asks for an AMD x86-64 Linux CPU.
  At inference, fc1 and its exact GELU run as one oneDNN call.
- **Short-sequence attention** (`short_sequence_attention`): for "sdpa" models, on CPU, while there are no more keys
  than channels per head, the plain product + softmax instead of torch's flash kernel, whose fixed costs per block
  outweigh its savings on short sequences. Registered in transformers' `AttentionInterface` as
  `"hf_vit_short_sdpa"`; longer sequences, other devices and torch.compile take transformers' sdpa unchanged.

Both compute the same functions, rounded differently by float32 ulps. Measured effects: docs/performance.md.
`hf-vit train`, `evaluate`, `predict` and `benchmark` call `apply` and log what it changed.
"""

from __future__ import annotations

import platform

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AttentionInterface
from transformers.activations import GELUActivation
from transformers.integrations.sdpa_attention import sdpa_attention_forward

SHORT_SEQUENCE_ATTENTION = "hf_vit_short_sdpa"


# ---------------------------------------------------------------------------------------------------------------------
# oneDNN linear: `hf_vit::onednn_linear(x, W, b, activation) = activation(x W^T + b)` as a torch custom op, an opaque
# kernel to torch.compile (inductor's own lowering of oneDNN's linear takes frozen weights only). Differentiable with
# activation "none"; "gelu" (exact GELU fused into the product) is for inference.
def _register_onednn_linear():
    if not (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")):
        return None

    @torch.library.custom_op("hf_vit::onednn_linear", mutates_args=())
    def onednn_linear(
        inputs: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, activation: str = "none"
    ) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(inputs, weight, bias, activation, [], "none")

    @onednn_linear.register_fake
    def _(inputs, weight, bias, activation="none"):
        return inputs.new_empty((*inputs.shape[:-1], weight.shape[0]))

    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0], inputs[1])
        ctx.has_bias = inputs[2] is not None
        ctx.activation = inputs[3] if len(inputs) > 3 else "none"

    def backward(ctx, grad_output):
        if ctx.activation != "none":
            raise RuntimeError(f"hf_vit::onednn_linear with activation {ctx.activation!r} is for inference only.")
        inputs, weight = ctx.saved_tensors
        grad_output_2d = grad_output.reshape(-1, grad_output.shape[-1])
        grad_inputs = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:  # dL/dx = g W: a linear whose "weight" is W^T
            grad_inputs = onednn_linear(grad_output, weight.t(), None)
        if ctx.needs_input_grad[1]:  # dL/dW = g^T x
            grad_weight = onednn_linear(grad_output_2d.t(), inputs.reshape(-1, inputs.shape[-1]).t(), None)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad_output_2d.sum(0)
        return grad_inputs, grad_weight, grad_bias, None

    onednn_linear.register_autograd(backward, setup_context=setup_context)
    return torch.ops.hf_vit.onednn_linear.default


ONEDNN_LINEAR = _register_onednn_linear()  # None where this torch build has no oneDNN linear


def onednn_is_faster(vendor: str | None = None, machine: str | None = None, system: str | None = None) -> bool:
    """Whether float32 CPU linears are faster on oneDNN than on torch's default BLAS here: an AMD x86-64 Linux CPU.
    The arguments name another machine (vendor as in /proc/cpuinfo: "AuthenticAMD", "GenuineIntel"); by default this
    one. Unknown means no: torch's default is never wrong, only sometimes slower."""
    if ONEDNN_LINEAR is None:
        return False
    system = platform.system() if system is None else system
    machine = (platform.machine() if machine is None else machine).lower()
    if system != "Linux" or machine not in ("x86_64", "amd64"):
        return False
    if vendor is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as cpuinfo:
                vendor = "AuthenticAMD" if "AuthenticAMD" in cpuinfo.read(4096) else "other"
        except OSError:
            return False
    return vendor == "AuthenticAMD"


def runs_on_onednn(linear: nn.Linear, inputs: torch.Tensor) -> bool:
    """oneDNN takes plain float32 CPU tensors outside autocast, tracing and export; everything else is `F.linear`."""
    return (
        ONEDNN_LINEAR is not None
        and inputs.device.type == "cpu"
        and inputs.dtype == linear.weight.dtype == torch.float32
        and inputs.numel() > 0
        and type(inputs) is torch.Tensor
        and type(linear.weight) in (torch.Tensor, nn.Parameter)
        and torch.backends.mkldnn.enabled
        and not torch.is_autocast_enabled("cpu")
        and not torch.jit.is_tracing()
        and not torch.compiler.is_exporting()
    )


class OneDNNLinear(nn.Linear):
    """An `nn.Linear` (same parameters, state dict and hooks) whose float32 CPU products run on oneDNN."""

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if runs_on_onednn(self, inputs):
            return ONEDNN_LINEAR(inputs, self.weight, self.bias)
        return F.linear(inputs, self.weight, self.bias)


class FusedGeluMLP(nn.Module):
    """Stands in for the class of an hf_vit MLP whose activation is the exact GELU (same attributes): at inference fc1
    and GELU run as one oneDNN call, where nothing would see fc1's own output (no autograd, fc1 a plain linear without
    hooks, not a PEFT or quantised replacement)."""

    def fc1_and_gelu_fuse(self, hidden_states: torch.Tensor) -> bool:
        fc1 = self.fc1
        return (
            type(fc1) in (nn.Linear, OneDNNLinear)
            and not (fc1._forward_hooks or fc1._forward_pre_hooks)
            and not (torch.is_grad_enabled() and any(t.requires_grad for t in (hidden_states, *fc1.parameters())))
            and runs_on_onednn(fc1, hidden_states)
        )

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if self.fc1_and_gelu_fuse(hidden_states):
            hidden_states = ONEDNN_LINEAR(hidden_states, self.fc1.weight, self.fc1.bias, "gelu")
        else:
            hidden_states = self.activation(self.fc1(hidden_states))
        return self.dropout(self.fc2(self.dropout(hidden_states)))


# ---------------------------------------------------------------------------------------------------------------------
def short_sequence_sdpa(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """transformers' sdpa, except on CPU while there are no more keys than channels per head: then the plain product +
    softmax, faster there than the flash kernel. Its [tokens, keys] weights kept for backward are then no larger
    than the [tokens, head_dim] output the flash kernel keeps, so training memory does not grow."""
    if query.device.type == "cpu" and key.shape[-2] <= key.shape[-1] and not torch.compiler.is_compiling():
        scores = torch.matmul(query, key.transpose(-2, -1)) * scaling
        if attention_mask is not None:
            scores = scores + attention_mask
        weights = F.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
        weights = F.dropout(weights, p=dropout, training=module.training)
        return torch.matmul(weights, value).transpose(1, 2).contiguous(), None
    return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)


AttentionInterface.register(SHORT_SEQUENCE_ATTENTION, short_sequence_sdpa)


# ---------------------------------------------------------------------------------------------------------------------
def apply(model: nn.Module, onednn_linear: bool | str = "auto", short_sequence_attention: bool = True) -> list[str]:
    """Apply the speed-ups to an hf_vit model (installed or loaded as remote code) in place; returns what changed,
    one line each, for the caller to log. `onednn_linear`: "auto" (where `onednn_is_faster`), True or False.
    `short_sequence_attention`: switch "sdpa" models to `"hf_vit_short_sdpa"`; a model loaded with another attention
    implementation (eager, flash, flex) keeps it. Weights and saved files are unchanged."""
    applied = []
    use_onednn = onednn_is_faster() if onednn_linear == "auto" else bool(onednn_linear)
    if use_onednn and ONEDNN_LINEAR is None:
        raise ValueError("onednn_linear=True, but this torch build has no oneDNN linear; pass 'auto' or False.")
    if use_onednn:
        linears = 0
        for module in model.modules():
            # By class name, so that remote-code copies of the model (another module, same classes) qualify too.
            kind = type(module).__name__
            if kind in ("HfViTAttention", "HfViTMLP"):
                for child in module.children():
                    if type(child) is nn.Linear:
                        child.__class__ = OneDNNLinear
                        linears += 1
            # transformers' "gelu" is the exact (erf) GELU, the one oneDNN fuses; "gelu_new" and others are not.
            if kind == "HfViTMLP" and type(module.activation) is GELUActivation:
                module.__class__ = FusedGeluMLP
        applied.append(f"{linears} block linears on oneDNN for float32 CPU products (fc1 + GELU fused at inference)")
    config = getattr(model, "config", None)
    if short_sequence_attention and config is not None and config._attn_implementation == "sdpa":
        model.set_attn_implementation(SHORT_SEQUENCE_ATTENTION)
        applied.append(f"attention '{SHORT_SEQUENCE_ATTENTION}': plain product + softmax for short sequences on CPU")
    return applied


def apply_and_log(model: nn.Module, log) -> nn.Module:
    """`apply` with its defaults, each change said through `log` (a logging function): what the CLI commands do."""
    for change in apply(model):
        log(f"hf_vit.speedups: {change} (the model file alone runs without them)")
    return model


__all__ = ["apply", "onednn_is_faster", "OneDNNLinear", "FusedGeluMLP", "short_sequence_sdpa", "ONEDNN_LINEAR"]
