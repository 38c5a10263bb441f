"""hf_vit: a Vision Transformer (Dosovitskiy et al., 2021) for image classification, as a transformers model.

Read top to bottom: embeddings (patches, class and register tokens, positions), attention, MLP, the pre-norm block,
then the two models.

This file travels with every saved model as Hub remote code and runs on the loader's transformers: 4.57 (the last
4.x) and 5.x, with torch 2.4 or newer. So it imports only torch, transformers and its sibling configuration file,
uses only public APIs present in both lines, and holds no machine-specific tuning (hf_vit's own speed-ups, applied
by `hf_vit.speedups.apply`, live in the installed package).
"""

from __future__ import annotations  # annotations such as `int | None` stay unevaluated on Python 3.9

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPooling, ImageClassifierOutput
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils import can_return_tuple

from .configuration_hf_vit import HfViTConfig

try:  # transformers 5: initialisers that leave alone the weights from_pretrained has loaded
    from transformers import initialization as init
except ImportError:  # transformers 4.x calls _init_weights only on modules whose weights it did not load
    from torch.nn import init


def sincos_position_embedding(grid_h: int, grid_w: int, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """Fixed 2-D sin-cos embedding (MoCo v3 / MAE), shape [1, grid_h * grid_w, dim]: a quarter of the channels
    each for sin(y), cos(y), sin(x), cos(x)."""
    y, x = torch.meshgrid(
        torch.arange(grid_h, dtype=torch.float32), torch.arange(grid_w, dtype=torch.float32), indexing="ij"
    )
    omega = 1.0 / temperature ** (torch.arange(dim // 4, dtype=torch.float32) / (dim // 4))
    y = y.reshape(-1, 1) * omega
    x = x.reshape(-1, 1) * omega
    return torch.cat([y.sin(), y.cos(), x.sin(), x.cos()], dim=1).unsqueeze(0)


class HfViTConvStem(nn.Module):
    """`config.stem_channels`: 3x3 convolutions of stride 2, each followed by BatchNorm and ReLU (Xiao et al. 2021,
    "Early Convolutions Help Transformers See Better"). Overlapping, local filters instead of one big-stride patch
    filter: on small data the transformer then learns in fewer epochs. The 1x1 projection to the model width is
    `HfViTEmbeddings.patch_embeddings`, as timm's hybrid models do it."""

    def __init__(self, config: HfViTConfig):
        super().__init__()
        channels = [config.num_channels, *config.stem_channels]
        self.convs = nn.ModuleList(
            nn.Conv2d(c_in, c_out, kernel_size=3, stride=2, padding=1, bias=False)  # BatchNorm carries the bias
            for c_in, c_out in zip(channels[:-1], channels[1:])  # noqa: B905 (Python 3.9 has no strict)
        )
        self.norms = nn.ModuleList(nn.BatchNorm2d(c_out) for c_out in channels[1:])

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        features = pixel_values
        for conv, norm in zip(self.convs, self.norms):  # noqa: B905 (Python 3.9 has no strict)
            features = F.relu(norm(conv(features)))
        return features


class HfViTEmbeddings(nn.Module):
    """Patches -> tokens, prefixed by [class token, distillation token (DeiT), register tokens], with position
    embeddings on patch tokens.

    A class token's own position slot (transformers and timm checkpoints have one) is a constant added to a constant,
    so converters fold it into `cls_token`; register tokens carry no position. This keeps one position table, over
    the patch grid only, which resamples cleanly to any grid.
    """

    def __init__(self, config: HfViTConfig):
        super().__init__()
        self.grid_size = config.grid_size
        self.num_channels = config.num_channels
        if config.stem_channels:
            self.stem = HfViTConvStem(config)
            self.patch_embeddings = nn.Conv2d(config.stem_channels[-1], config.hidden_size, kernel_size=1)
        else:
            self.stem = None
            self.patch_embeddings = nn.Conv2d(
                config.num_channels, config.hidden_size, kernel_size=config.patch_hw, stride=config.patch_hw
            )
        hidden = config.hidden_size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, hidden)) if config.use_class_token else None
        self.distillation_token = nn.Parameter(torch.zeros(1, 1, hidden)) if config.use_distillation_token else None
        self.register_tokens = (
            nn.Parameter(torch.zeros(1, config.num_register_tokens, hidden)) if config.num_register_tokens else None
        )
        self.learned_positions = config.position_embedding == "learned"
        if self.learned_positions:
            self.position_embeddings = nn.Parameter(torch.zeros(1, self.grid_size[0] * self.grid_size[1], hidden))
        else:
            self.register_buffer(
                "position_embeddings", sincos_position_embedding(*self.grid_size, hidden), persistent=False
            )
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def positions_for_grid(self, grid_h: int, grid_w: int) -> torch.Tensor:
        if (grid_h, grid_w) == self.grid_size:
            return self.position_embeddings
        if not self.learned_positions:
            return sincos_position_embedding(grid_h, grid_w, self.position_embeddings.shape[-1]).to(
                self.position_embeddings
            )
        # Bicubic with antialiasing, as timm's resample_abs_pos_embed: it keeps fine-tuning at a new resolution stable.
        dim = self.position_embeddings.shape[-1]
        table = self.position_embeddings.reshape(1, *self.grid_size, dim).permute(0, 3, 1, 2)
        table = F.interpolate(table.float(), size=(grid_h, grid_w), mode="bicubic", antialias=True, align_corners=False)
        return table.to(self.position_embeddings.dtype).permute(0, 2, 3, 1).reshape(1, grid_h * grid_w, dim)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        batch_size = pixel_values.shape[0]
        features = self.stem(pixel_values) if self.stem is not None else pixel_values
        patches = self.patch_embeddings(features)
        grid_h, grid_w = patches.shape[-2:]
        patches = patches.flatten(2).transpose(1, 2) + self.positions_for_grid(grid_h, grid_w)
        prefix = [
            t.expand(batch_size, -1, -1)
            for t in (self.cls_token, self.distillation_token, self.register_tokens)
            if t is not None
        ]
        tokens = torch.cat([*prefix, patches], dim=1) if prefix else patches
        return self.dropout(tokens)


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference attention that also returns the weights; same contract as transformers' attention functions."""
    scores = torch.matmul(query, key.transpose(-2, -1)) * scaling
    if attention_mask is not None:
        scores = scores + attention_mask
    weights = F.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = F.dropout(weights, p=dropout, training=module.training)
    output = torch.matmul(weights, value).transpose(1, 2).contiguous()
    return output, weights


def attention_function(implementation: str | None) -> Callable:
    """The attention function transformers has registered under `implementation` ("sdpa", "flash_attention_2",
    "flex_attention", or one registered with `AttentionInterface.register`); "eager" is this file's own."""
    if implementation in (None, "eager"):
        return eager_attention_forward
    if hasattr(ALL_ATTENTION_FUNCTIONS, "get_interface"):  # transformers 5: checks the name, says what is wrong
        return ALL_ATTENTION_FUNCTIONS.get_interface(implementation, eager_attention_forward)
    return ALL_ATTENTION_FUNCTIONS[implementation]  # transformers 4.x


class HfViTAttention(nn.Module):
    def __init__(self, config: HfViTConfig):
        super().__init__()
        self.config = config
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.scaling = self.head_dim**-0.5
        self.attention_dropout = config.attention_probs_dropout_prob
        # transformers' sdpa function reads this and defaults to causal without it.
        self.is_causal = False
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=config.qkv_bias)
        self.q_norm = nn.LayerNorm(self.head_dim, eps=config.layer_norm_eps) if config.qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(self.head_dim, eps=config.layer_norm_eps) if config.qk_norm else nn.Identity()
        self.proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.proj_dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor, output_attentions: bool = False, num_queries: int | None = None):
        """`num_queries`: outputs for the first `num_queries` tokens only (they still attend to all tokens)."""
        batch_size, num_tokens, width = hidden_states.shape
        qkv = self.qkv(hidden_states).view(batch_size, num_tokens, 3, self.num_heads, self.head_dim)
        # Split q/k/v first, then move the heads forward: the same strided views as `permute(2, 0, 3, 1, 4).unbind(0)`,
        # but backward stacks their gradients straight into the qkv layout (one copy instead of two).
        query, key, value = (part.transpose(1, 2) for part in qkv.unbind(2))
        if num_queries is not None:
            query = query[:, :, :num_queries]
        query, key = self.q_norm(query), self.k_norm(key)

        # Fused kernels (sdpa, flash, flex) never materialise the weights, so a request for them takes the eager path.
        implementation = "eager" if output_attentions else self.config._attn_implementation
        output, weights = attention_function(implementation)(
            self,
            query,
            key,
            value,
            None,
            scaling=self.scaling,
            dropout=self.attention_dropout if self.training else 0.0,
        )
        output = self.proj_dropout(self.proj(output.reshape(batch_size, query.shape[2], width)))
        return output, weights


class HfViTMLP(nn.Module):
    def __init__(self, config: HfViTConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.activation = ACT2FN[config.hidden_act]
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = self.dropout(self.activation(self.fc1(hidden_states)))
        return self.dropout(self.fc2(hidden_states))


class HfViTLayerScale(nn.Module):
    """Per-channel gain on a residual branch (CaiT); initialised to `config.layerscale_init` by `_init_weights`."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(hidden_size))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return hidden_states * self.gamma


class HfViTDropPath(nn.Module):
    """Stochastic depth: drops a residual branch for whole samples.

    timm has one, but this file may import only torch and transformers."""

    def __init__(self, drop_prob: float):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return hidden_states
        keep_prob = 1.0 - self.drop_prob
        mask = hidden_states.new_empty(hidden_states.shape[0], 1, 1).bernoulli_(keep_prob)
        return hidden_states * mask / keep_prob

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


class HfViTLayer(GradientCheckpointingLayer):
    """Pre-norm block: x + attn(norm(x)), then x + mlp(norm(x)); each branch with LayerScale and drop path."""

    def __init__(self, config: HfViTConfig, drop_path_rate: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attention = HfViTAttention(config)
        self.norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = HfViTMLP(config)
        use_layerscale = config.layerscale_init is not None
        self.layer_scale1 = HfViTLayerScale(config.hidden_size) if use_layerscale else nn.Identity()
        self.layer_scale2 = HfViTLayerScale(config.hidden_size) if use_layerscale else nn.Identity()
        self.drop_path = HfViTDropPath(drop_path_rate) if drop_path_rate > 0 else nn.Identity()

    def forward(self, hidden_states: torch.Tensor, output_attentions: bool = False, num_queries: int | None = None):
        """`num_queries`: compute the block for the first `num_queries` tokens only (see `HfViTModel.forward`)."""
        attention_output, attention_weights = self.attention(self.norm1(hidden_states), output_attentions, num_queries)
        if num_queries is not None:
            hidden_states = hidden_states[:, :num_queries]
        hidden_states = hidden_states + self.drop_path(self.layer_scale1(attention_output))
        hidden_states = hidden_states + self.drop_path(self.layer_scale2(self.mlp(self.norm2(hidden_states))))
        return hidden_states, attention_weights


class HfViTPreTrainedModel(PreTrainedModel):
    config_class = HfViTConfig
    config: HfViTConfig
    base_model_prefix = "vit"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _no_split_modules = ["HfViTEmbeddings", "HfViTLayer"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _can_compile_fullgraph = True
    # The loss is a per-batch mean; Trainer then handles gradient accumulation itself instead of passing
    # num_items_in_batch (which it would do for any forward taking **kwargs).
    accepts_loss_kwargs = False

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """transformers' loading, made strict: a truncated weights file or missing encoder weights is an error,
        never a model with random weights and a warning. Only the classification heads may be missing (they are
        new when a folder of the encoder is loaded for classification)."""
        want_loading_info = kwargs.pop("output_loading_info", False)
        try:
            model, loading_info = super().from_pretrained(*args, output_loading_info=True, **kwargs)
        except Exception as error:
            if type(error).__name__ != "SafetensorError":
                raise
            raise OSError(
                f"the weights file of {args[0] if args else kwargs.get('pretrained_model_name_or_path')} is truncated "
                f"or corrupt ({error}); download or save the model again."
            ) from error
        missing = [
            k for k in loading_info["missing_keys"] if not k.startswith(("classifier.", "distillation_classifier."))
        ]
        if missing:
            shown = ", ".join(sorted(missing)[:6]) + (f", ... ({len(missing)} in all)" if len(missing) > 6 else "")
            raise OSError(
                f"{args[0] if args else 'the checkpoint'} lacks weights of this model ({shown}); it is incomplete or "
                "belongs to another architecture. Save it again, or convert it with `hf-vit convert`."
            )
        return (model, loading_info) if want_loading_info else model

    def _init_weights(self, module: nn.Module):
        # Linears and convolutions: truncated normal, as timm and big_vision (transformers' default is a plain normal).
        std = self.config.initializer_range
        heads = (getattr(self, "classifier", None), getattr(self, "distillation_classifier", None))
        if isinstance(module, nn.Linear) and any(module is head for head in heads):
            # A zero head starts every class at equal odds (timm, big_vision); fine-tuning heads start here too.
            init.zeros_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, (nn.Linear, nn.Conv2d)):
            init.trunc_normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, (nn.LayerNorm, nn.BatchNorm2d)):
            super()._init_weights(module)  # transformers' own: weights one, biases zero (BatchNorm statistics reset)
        elif isinstance(module, HfViTLayerScale):
            init.constant_(module.gamma, self.config.layerscale_init)
        elif isinstance(module, HfViTEmbeddings):
            for token in (module.cls_token, module.distillation_token, module.register_tokens):
                if token is not None:
                    init.trunc_normal_(token, mean=0.0, std=std)
            if module.learned_positions:
                init.trunc_normal_(module.position_embeddings, mean=0.0, std=std)
            else:  # a non-persistent buffer: not in the weights file, so computed again when a model is loaded
                fixed = sincos_position_embedding(*module.grid_size, module.position_embeddings.shape[-1])
                if hasattr(init, "copy_"):  # transformers 5's, which leaves tensors the checkpoint filled alone
                    init.copy_(module.position_embeddings, fixed)
                else:
                    with torch.no_grad():
                        module.position_embeddings.copy_(fixed)


def check_pixel_values(pixel_values: torch.Tensor, config: HfViTConfig) -> None:
    """Fail early, naming the problem, instead of deep inside a convolution."""
    if not isinstance(pixel_values, torch.Tensor):
        raise TypeError(
            f"pixel_values must be a torch.Tensor, got {type(pixel_values).__name__}; use the image processor."
        )
    if pixel_values.ndim != 4:
        raise ValueError(
            f"pixel_values must have shape (batch, channels, height, width), got {tuple(pixel_values.shape)}; "
            "add a batch dimension with pixel_values.unsqueeze(0) for a single image."
        )
    if not pixel_values.is_floating_point():
        raise ValueError(
            f"pixel_values must be a floating-point tensor, got {pixel_values.dtype}; "
            "convert and normalise images with the model's image processor."
        )
    _, channels, height, width = pixel_values.shape
    if channels != config.num_channels:
        raise ValueError(
            f"pixel_values has {channels} channels but the model expects num_channels={config.num_channels}; "
            "convert the images (e.g. to RGB) with the model's image processor."
        )
    patch_h, patch_w = config.patch_hw
    if (height % patch_h or width % patch_w) and not config.stem_channels:  # a stem pads: any size works
        raise ValueError(
            f"image size {height}x{width} is not a multiple of the patch size {patch_h}x{patch_w}; "
            "resize or crop the images to a multiple of the patch size."
        )
    # NaN and inf reach the minimum or the maximum, so one aminmax pass finds them. On CPU only: on an accelerator the
    # check would wait for the device on every call. Skipped under torch.compile, where it would break the graph.
    if pixel_values.device.type != "cpu" or not pixel_values.numel() or torch.compiler.is_compiling():
        return
    low, high = torch.aminmax(pixel_values)
    if not (low.isfinite() and high.isfinite()):
        raise ValueError(
            "pixel_values contain NaN or inf; check the image decoding and normalisation (e.g. a zero image_std)."
        )


class HfViTModel(HfViTPreTrainedModel):
    """The ViT encoder: returns all token states (after the final norm) and the pooled image embedding. With
    `config.fc_norm` the final norm applies to the pooled embedding instead, and the token states are unnormalised."""

    def __init__(self, config: HfViTConfig):
        super().__init__(config)
        self.embeddings = HfViTEmbeddings(config)
        # Stochastic depth rises linearly with depth (DeiT, timm).
        rates = [
            config.drop_path_rate * i / max(config.num_hidden_layers - 1, 1) for i in range(config.num_hidden_layers)
        ]
        self.layers = nn.ModuleList(HfViTLayer(config, rate) for rate in rates)
        # timm's fc_norm: the final norm moves from all tokens to the pooled embedding.
        self.norm = nn.Identity() if config.fc_norm else nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.fc_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps) if config.fc_norm else None
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.embeddings.patch_embeddings

    def pool(self, last_hidden_state: torch.Tensor) -> torch.Tensor:
        if self.config.pooling == "cls":
            pooled = last_hidden_state[:, 0]
        else:
            # Mean over patch tokens only: class, distillation and register tokens are not image content (as timm).
            pooled = last_hidden_state[:, self.config.num_prefix_tokens :].mean(dim=1)
        return self.fc_norm(pooled) if self.fc_norm is not None else pooled

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        interpolate_pos_encoding: bool | None = None,
        tokens_to_keep: int | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPooling:
        """`interpolate_pos_encoding` is accepted for transformers compatibility: any input whose sides are multiples
        of the patch size works, with position embeddings resampled to its patch grid.

        `tokens_to_keep`: when only the first tokens' final states are read (class-token pooling, DeiT's
        distillation token), the last block computes those tokens only: about 10/12 of that block's work is for
        outputs nobody reads. `last_hidden_state` then holds just those tokens. Ignored when hidden states or
        attentions are requested, which are returned for all tokens."""
        output_attentions = self.config.output_attentions if output_attentions is None else output_attentions
        output_hidden_states = (
            self.config.output_hidden_states if output_hidden_states is None else output_hidden_states
        )
        check_pixel_values(pixel_values, self.config)
        pixel_values = pixel_values.to(self.embeddings.patch_embeddings.weight.dtype)

        hidden_states = self.embeddings(pixel_values)
        all_hidden_states = [hidden_states] if output_hidden_states else None
        all_attentions = [] if output_attentions else None
        if output_hidden_states or output_attentions:
            tokens_to_keep = None
        for index, layer in enumerate(self.layers):
            num_queries = tokens_to_keep if index == len(self.layers) - 1 else None
            hidden_states, attention_weights = layer(
                hidden_states, output_attentions=output_attentions, num_queries=num_queries
            )
            if output_hidden_states:
                all_hidden_states.append(hidden_states)
            if output_attentions:
                all_attentions.append(attention_weights)

        last_hidden_state = self.norm(hidden_states)
        return BaseModelOutputWithPooling(
            last_hidden_state=last_hidden_state,
            pooler_output=self.pool(last_hidden_state),
            hidden_states=tuple(all_hidden_states) if output_hidden_states else None,
            attentions=tuple(all_attentions) if output_attentions else None,
        )


class HfViTForImageClassification(HfViTPreTrainedModel):
    """ViT with a linear head on the pooled embedding. With `num_labels=0` the head is the identity and the logits
    are the pooled features (as transformers' ViT). With `config.distillation_head` (DeiT "with teacher") a second
    head reads the distillation token and the logits are the average of both heads'."""

    def __init__(self, config: HfViTConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.vit = HfViTModel(config)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels) if config.num_labels > 0 else nn.Identity()
        if config.distillation_head:
            self.distillation_classifier = (
                nn.Linear(config.hidden_size, config.num_labels) if config.num_labels > 0 else nn.Identity()
            )
        self.post_init()

    def tokens_read_by_heads(self) -> int | None:
        """With class-token pooling the heads read only the class token and DeiT's distillation token right after
        it, so the last block need compute no other token (`HfViTModel.forward`'s `tokens_to_keep`); mean pooling
        reads every patch token (None)."""
        if self.config.pooling != "cls":
            return None
        return 2 if self.config.distillation_head else 1

    def classification_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """transformers' problem types: regression (MSE), single-label (cross-entropy, also on soft targets such as
        MixUp/CutMix produce), multi-label (BCE). Unset, the type is inferred from the labels as transformers does."""
        problem_type = self.config.problem_type
        if problem_type is None:
            if self.num_labels == 1:
                problem_type = "regression"
            elif labels.dtype in (torch.long, torch.int):
                problem_type = "single_label_classification"
            else:
                problem_type = "multi_label_classification"
        if problem_type == "regression":
            labels = labels.to(logits.dtype)
            if self.num_labels == 1:
                return F.mse_loss(logits.squeeze(-1), labels.squeeze(-1))
            return F.mse_loss(logits, labels)
        if problem_type == "single_label_classification":
            if labels.is_floating_point() and labels.shape == logits.shape:
                return F.cross_entropy(logits.float(), labels.float())
            return F.cross_entropy(logits.float().view(-1, self.num_labels), labels.view(-1))
        return F.binary_cross_entropy_with_logits(logits.float(), labels.to(torch.float32))

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        interpolate_pos_encoding: bool | None = None,
        **kwargs,
    ) -> ImageClassifierOutput:
        outputs = self.vit(
            pixel_values,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            tokens_to_keep=self.tokens_read_by_heads(),
        )
        logits = self.classifier(outputs.pooler_output)
        if self.config.distillation_head:
            distillation_logits = self.distillation_classifier(outputs.last_hidden_state[:, 1])
            logits = (logits + distillation_logits) / 2
        loss = self.classification_loss(logits, labels) if labels is not None else None
        return ImageClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


__all__ = ["HfViTPreTrainedModel", "HfViTModel", "HfViTForImageClassification"]
