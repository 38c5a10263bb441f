"""Analytic size and cost of a ViT, from its config alone (no weights are built)."""

from .configuration_hf_vit import HfViTConfig, grid_for_image


def _stem_convolutions(config: HfViTConfig) -> list[tuple[int, int]]:
    """(input, output) channels of each 3x3 convolution of a convolutional stem; empty without one."""
    channels = [config.num_channels, *(config.stem_channels or [])]
    return list(zip(channels[:-1], channels[1:], strict=True))


def count_parameters(config: HfViTConfig) -> int:
    """Trainable parameters of `HfViTForImageClassification(config)`; tests check it against the real model."""
    width, mlp, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    patch_h, patch_w = config.patch_hw
    grid_h, grid_w = config.grid_size
    head_dim = width // config.num_attention_heads
    if config.stem_channels:
        convolutions = _stem_convolutions(config)
        embeddings = sum(9 * c_in * c_out + 2 * c_out for c_in, c_out in convolutions)  # 3x3 convolutions, BatchNorms
        embeddings += config.stem_channels[-1] * width + width  # 1x1 projection
    else:
        embeddings = config.num_channels * patch_h * patch_w * width + width  # patch projection
    embeddings += width * config.num_prefix_tokens
    if config.position_embedding == "learned":
        embeddings += grid_h * grid_w * width
    block = 2 * 2 * width  # two LayerNorms
    block += 3 * width * width + (3 * width if config.qkv_bias else 0) + width * width + width  # qkv and projection
    block += 2 * width * mlp + mlp + width  # MLP
    if config.qk_norm:
        block += 2 * 2 * head_dim
    if config.layerscale_init is not None:
        block += 2 * width
    head = width * config.num_labels + config.num_labels if config.num_labels > 0 else 0
    head *= 2 if config.distillation_head else 1  # DeiT's second head, on the distillation token
    return embeddings + layers * block + 2 * width + head


def forward_flops(
    config: HfViTConfig, image_size: tuple[int, int] | None = None, tokens_to_keep: int | None = None
) -> int:
    """FLOPs (2 x multiply-accumulates) of one image's forward pass, counting matrix products only:
    L * (N * (4 D^2 + 2 D M) + 2 N^2 D) + patches * P^2 * C * D + D * classes, all doubled (with a convolutional
    stem, its 3x3 convolutions and 1x1 projection instead of the patch projection).

    `tokens_to_keep`: the FLOPs actually executed when the last block computes only its first tokens (what
    `HfViTForImageClassification` does with class-token pooling): keys and values are still computed for all N
    tokens, queries, attention, projection and MLP for the kept tokens only."""
    height, width_px = image_size or config.image_hw
    patch_h, patch_w = config.patch_hw
    grid_h, grid_w = grid_for_image(config, height, width_px)
    patches = grid_h * grid_w
    tokens = patches + config.num_prefix_tokens
    dim, mlp = config.hidden_size, config.intermediate_size

    def block(queries: int) -> int:
        return tokens * 3 * dim * dim + queries * (dim * dim + 2 * dim * mlp) + 2 * queries * tokens * dim

    last = tokens if tokens_to_keep is None else tokens_to_keep
    macs = (config.num_hidden_layers - 1) * block(tokens) + block(last) if config.num_hidden_layers else 0
    if config.stem_channels:
        for index, (c_in, c_out) in enumerate(_stem_convolutions(config), start=1):
            macs += -(-height // 2**index) * -(-width_px // 2**index) * 9 * c_in * c_out  # sizes rounded up
        macs += patches * config.stem_channels[-1] * dim
    else:
        macs += patches * patch_h * patch_w * config.num_channels * dim
    macs += dim * max(config.num_labels, 0) * (2 if config.distillation_head else 1)
    return 2 * macs
