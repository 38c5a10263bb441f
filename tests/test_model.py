"""The model itself: shapes, options, attention backends, resolution changes, losses, init, checkpointing, compile."""

import pytest
import torch
import torch.nn.functional as F
from conftest import randomize_head, tiny_config
from transformers import AutoConfig, AutoModel, AutoModelForImageClassification

from hf_vit import HfViTConfig, HfViTForImageClassification, HfViTModel, preset_config
from hf_vit.modeling_hf_vit import sincos_position_embedding

TOKEN_OPTIONS = {
    "cls": dict(),
    "mean-with-cls": dict(pooling="mean"),
    "mean-no-cls": dict(pooling="mean", use_class_token=False),
    "registers": dict(num_register_tokens=3),
    "registers-no-cls": dict(num_register_tokens=2, use_class_token=False, pooling="mean"),
    "sincos": dict(position_embedding="sincos"),
    "qk-norm-layerscale": dict(qk_norm=True, layerscale_init=1e-5, qkv_bias=False),
}


def build(seed=0, **overrides):
    torch.manual_seed(seed)
    return randomize_head(HfViTForImageClassification(tiny_config(**overrides))).eval()


@pytest.mark.parametrize("options", TOKEN_OPTIONS.values(), ids=TOKEN_OPTIONS.keys())
def test_forward_shapes_for_every_token_option(options):
    model = build(**options)
    config = model.config
    pixels = torch.randn(3, 3, 16, 16)
    out = model(pixels, output_hidden_states=True, output_attentions=True)
    tokens = 16 + config.num_prefix_tokens
    assert out.logits.shape == (3, 5)
    assert len(out.hidden_states) == config.num_hidden_layers + 1
    assert all(h.shape == (3, tokens, 32) for h in out.hidden_states)
    assert len(out.attentions) == config.num_hidden_layers
    assert all(a.shape == (3, 2, tokens, tokens) for a in out.attentions)

    base = model.vit(pixels)
    expected_pool = (
        base.last_hidden_state[:, 0]
        if config.pooling == "cls"
        else base.last_hidden_state[:, config.num_prefix_tokens :].mean(1)
    )
    torch.testing.assert_close(base.pooler_output, expected_pool)
    torch.testing.assert_close(out.logits, model.classifier(base.pooler_output))


def test_mean_pooling_ignores_class_and_register_tokens():
    model = build(pooling="mean", num_register_tokens=2)
    pixels = torch.randn(2, 3, 16, 16)
    before = model(pixels).logits
    with torch.no_grad():
        # The prefix tokens still influence patches through attention, so cut that path with a single-layer,
        # zero-attention model: then only what the pooling reads matters.
        for layer in model.vit.layers:
            layer.attention.proj.weight.zero_()
            layer.attention.proj.bias.zero_()
        reference = model(pixels).logits
        model.vit.embeddings.cls_token.add_(5.0)
        model.vit.embeddings.register_tokens.add_(5.0)
        assert torch.equal(model(pixels).logits, reference)
    assert not torch.equal(before, reference)


def test_non_square_images():
    model = build(image_size=(16, 24), patch_size=(4, 8))
    assert model.config.grid_size == (4, 3)
    out = model.vit(torch.randn(2, 3, 16, 24))
    assert out.last_hidden_state.shape == (2, 1 + 12, 32)


@pytest.mark.parametrize("position_embedding", ["learned", "sincos"])
def test_other_resolutions_resample_positions(position_embedding):
    model = build(position_embedding=position_embedding)
    embeddings = model.vit.embeddings
    for size in [(16, 16), (24, 24), (8, 8), (32, 20)]:
        out = model(torch.randn(2, 3, *size), interpolate_pos_encoding=True)
        assert out.logits.shape == (2, 5) and torch.isfinite(out.logits).all()
    assert embeddings.positions_for_grid(4, 4) is embeddings.position_embeddings
    table = embeddings.positions_for_grid(8, 5)
    assert table.shape == (1, 40, 32)
    if position_embedding == "sincos":
        torch.testing.assert_close(table, sincos_position_embedding(8, 5, 32))
    else:
        # Upsampling a constant table must stay constant (bicubic weights sum to one).
        with torch.no_grad():
            embeddings.position_embeddings.fill_(0.25)
        torch.testing.assert_close(embeddings.positions_for_grid(8, 5), torch.full((1, 40, 32), 0.25))


def test_bad_inputs_get_clear_errors():
    model = build()
    with pytest.raises(ValueError, match="not a multiple of the patch size"):
        model(torch.randn(1, 3, 18, 16))
    with pytest.raises(ValueError, match="expects num_channels=3"):
        model(torch.randn(1, 1, 16, 16))
    with pytest.raises(ValueError, match=r"\(batch, channels, height, width\)"):
        model(torch.randn(3, 16, 16))
    with pytest.raises(ValueError, match="floating-point"):
        model(torch.zeros(1, 3, 16, 16, dtype=torch.uint8))


def test_eager_and_sdpa_agree_and_attention_weights_are_distributions():
    model = build(num_register_tokens=1, qk_norm=True)
    assert model.config._attn_implementation == "sdpa"
    pixels = torch.randn(4, 3, 16, 16)
    sdpa_logits = model(pixels).logits
    sdpa_with_weights = model(pixels, output_attentions=True)
    model.set_attn_implementation("eager")
    assert model.config._attn_implementation == "eager"
    eager = model(pixels, output_attentions=True)
    torch.testing.assert_close(eager.logits, sdpa_logits, atol=1e-5, rtol=0)
    for weights_a, weights_b in zip(eager.attentions, sdpa_with_weights.attentions, strict=True):
        assert weights_a.shape == (4, 2, 18, 18)
        torch.testing.assert_close(weights_a.sum(-1), torch.ones(4, 2, 18))
        torch.testing.assert_close(weights_a, weights_b)


def test_flex_attention_agrees_where_available():
    model = build()
    pixels = torch.randn(2, 3, 16, 16)
    reference = model(pixels).logits
    model.set_attn_implementation("flex_attention")
    # On CPU, flex attention has no backward; inference is what can be checked here.
    with torch.no_grad():
        torch.testing.assert_close(model(pixels).logits, reference, atol=1e-5, rtol=0)


def test_flash_attention_2_is_refused_clearly_without_its_kernels():
    pytest.importorskip("torch")
    try:
        import flash_attn  # noqa: F401
    except ImportError:
        with pytest.raises((ImportError, ValueError)):
            build().set_attn_implementation("flash_attention_2")
    else:
        pytest.skip("flash_attn is installed; the GPU check covers it")


def test_losses_follow_problem_type():
    model = build()
    pixels = torch.randn(4, 3, 16, 16)
    logits = model(pixels).logits

    labels = torch.tensor([0, 3, 4, 1])
    torch.testing.assert_close(model(pixels, labels=labels).loss, F.cross_entropy(logits, labels))

    soft = F.softmax(torch.randn(4, 5), dim=-1)
    model.config.problem_type = "single_label_classification"
    torch.testing.assert_close(model(pixels, labels=soft).loss, F.cross_entropy(logits, soft))

    multi = (torch.rand(4, 5) > 0.5).float()
    model.config.problem_type = None
    torch.testing.assert_close(model(pixels, labels=multi).loss, F.binary_cross_entropy_with_logits(logits, multi))

    regression = build(num_labels=1)
    target = torch.randn(4)
    torch.testing.assert_close(
        regression(pixels, labels=target).loss, F.mse_loss(regression(pixels).logits.squeeze(-1), target)
    )


def test_return_dict_false_gives_tuples():
    model = build()
    pixels = torch.randn(2, 3, 16, 16)
    loss, logits = model(pixels, labels=torch.tensor([1, 2]), return_dict=False)
    torch.testing.assert_close(logits, model(pixels).logits)
    assert loss.ndim == 0


def test_headless_model_returns_pooled_features():
    model = build(num_labels=0)
    assert isinstance(model.classifier, torch.nn.Identity)
    pixels = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(model(pixels).logits, model.vit(pixels).pooler_output)


def test_weight_initialisation():
    config = preset_config("vit-small-patch16-224", num_labels=10, layerscale_init=0.1)
    torch.manual_seed(0)
    model = HfViTForImageClassification(config)
    qkv = model.vit.layers[0].attention.qkv
    # timm's and transformers' truncated normal cuts at +-2 absolute, i.e. a plain normal of std 0.02 in practice.
    assert abs(qkv.weight.std().item() - 0.02) < 0.001 and abs(qkv.weight.mean().item()) < 0.001
    assert torch.count_nonzero(qkv.bias) == 0
    assert torch.count_nonzero(model.classifier.weight) == 0
    assert torch.equal(model.vit.norm.weight, torch.ones(384))
    assert torch.allclose(model.vit.layers[3].layer_scale1.gamma, torch.full((384,), 0.1))
    assert 0.015 < model.vit.embeddings.position_embeddings.std().item() < 0.025
    assert 0.015 < model.vit.embeddings.cls_token.std().item() < 0.025


def test_drop_path_rises_linearly_and_is_off_in_eval():
    model = build(num_hidden_layers=5, drop_path_rate=0.4)
    rates = [getattr(layer.drop_path, "drop_prob", 0.0) for layer in model.vit.layers]
    assert rates == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])
    pixels = torch.randn(8, 3, 16, 16)
    torch.testing.assert_close(model(pixels).logits, model(pixels).logits)
    model.train()
    torch.manual_seed(1)
    first = model(pixels).logits
    assert not torch.allclose(first, model(pixels).logits)


def test_gradient_checkpointing_gives_the_same_gradients():
    model = build(num_hidden_layers=3, hidden_dropout_prob=0.0).train()
    pixels = torch.randn(4, 3, 16, 16)
    labels = torch.tensor([0, 1, 2, 3])

    def gradients():
        model.zero_grad()
        model(pixels, labels=labels).loss.backward()
        return {name: p.grad.clone() for name, p in model.named_parameters()}

    plain = gradients()
    # transformers 5 renames it activation_checkpointing_enable (the old name warns); 4.57 has the old name only.
    getattr(model, "activation_checkpointing_enable", model.gradient_checkpointing_enable)()
    assert all(layer.gradient_checkpointing for layer in model.vit.layers)
    checkpointed = gradients()
    for name, grad in plain.items():
        torch.testing.assert_close(checkpointed[name], grad, msg=name)


def test_config_validation():
    for bad, message in [
        (dict(hidden_size=30, num_attention_heads=4), "not divisible by num_attention_heads"),
        (dict(image_size=18, patch_size=4), "not a multiple of the patch height"),
        (dict(image_size=(16, 18), patch_size=4), "not a multiple of the patch width"),
        (dict(pooling="cls", use_class_token=False), "needs use_class_token=True"),
        (dict(pooling="max"), "'cls' or 'mean'"),
        (dict(hidden_size=0), "hidden_size=0 must be a positive integer"),
        (dict(num_hidden_layers=-1), "num_hidden_layers=-1"),
        (dict(hidden_dropout_prob=1.0), r"hidden_dropout_prob=1.0 must be in \[0, 1\)"),
        (dict(drop_path_rate=-0.1), "drop_path_rate"),
        (dict(attention_probs_dropout_prob=1.5), "attention_probs_dropout_prob"),
        (dict(position_embedding="rope"), "'learned' or 'sincos'"),
        (dict(layerscale_init=0.0), "layerscale_init"),
        (dict(image_size=(16, 16, 16)), "image_size"),
        (dict(stem_channels=[8, 16, 32]), r"3 convolutions of stride 2 \(total stride 8\), but patch_size is 4"),
        (dict(patch_size=(4, 2), image_size=16, stem_channels=[8, 16]), "patch_size is \\[4, 2\\]"),
        (dict(stem_channels=[8, 0]), "non-empty list of positive ints"),
        (dict(stem_channels=[]), "non-empty list of positive ints"),
    ]:
        with pytest.raises(ValueError, match=message):
            tiny_config(**bad)
    with pytest.raises(ValueError, match="Unknown preset 'vit-gigantic'"):
        preset_config("vit-gigantic")


def test_config_round_trip(tmp_path):
    config = tiny_config(
        image_size=(16, 24), patch_size=(4, 8), num_labels=2, id2label={0: "cat", 1: "dog"}, qk_norm=True
    )
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, HfViTConfig)
    drop_path = {"_name_or_path"}
    assert {k: v for k, v in loaded.to_dict().items() if k not in drop_path} == {
        k: v for k, v in config.to_dict().items() if k not in drop_path
    }
    assert loaded.grid_size == (4, 3) and loaded.label2id == {"cat": 0, "dog": 1}


def test_presets_build_and_match_their_names():
    from hf_vit import PRESETS
    from hf_vit.flops import count_parameters

    for name in PRESETS:
        config = preset_config(name, num_labels=1000)
        patch, size = name.split("-patch")[1].split("-")
        assert config.patch_size == int(patch) and config.image_size == int(size)
        with torch.device("meta"):
            model = HfViTForImageClassification(config)
        assert sum(p.numel() for p in model.parameters()) == count_parameters(config), name
    assert preset_config("vit-base-patch16-224", num_labels=3).num_labels == 3


def test_auto_classes_in_process():
    config = tiny_config()
    assert isinstance(AutoConfig.for_model("hf_vit", hidden_size=64, num_attention_heads=4), HfViTConfig)
    assert isinstance(AutoModel.from_config(config), HfViTModel)
    assert isinstance(AutoModelForImageClassification.from_config(config), HfViTForImageClassification)


def test_torch_compile_fullgraph_forward_and_backward():
    """With stochastic depth and the convolutional stem, the branchiest model (the patch embedding compiles in
    test_benchmark's frozen-weights test)."""
    model = build(drop_path_rate=0.1, stem_channels=[8, 16])
    pixels = torch.randn(2, 3, 16, 16)
    reference = model(pixels).logits
    compiled = torch.compile(model, fullgraph=True)
    torch.testing.assert_close(compiled(pixels).logits, reference, atol=1e-5, rtol=1e-5)
    model.train()
    loss = compiled(pixels, labels=torch.tensor([1, 4])).loss
    loss.backward()
    assert torch.isfinite(loss) and model.vit.layers[0].attention.qkv.weight.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "options",
    [dict(), dict(use_distillation_token=True, distillation_head=True), dict(num_register_tokens=2, qk_norm=True)],
    ids=["cls", "distillation-head", "registers-qk-norm"],
)
def test_last_block_for_read_tokens_only_gives_the_full_computation(options):
    """With class-token pooling the classifier computes its last block for the tokens its heads read only; logits
    and gradients equal those of the full computation (which `output_hidden_states=True` forces)."""
    model = build(num_hidden_layers=3, **options)
    assert model.tokens_read_by_heads() == (2 if model.config.distillation_head else 1)
    pixels, labels = torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 3])
    with torch.no_grad():
        torch.testing.assert_close(model(pixels).logits, model(pixels, output_hidden_states=True).logits)
    assert model.vit(pixels, tokens_to_keep=1).last_hidden_state.shape == (4, 1, 32)

    def gradients(**kwargs):
        model.zero_grad()
        model.train()(pixels, labels=labels, **kwargs).loss.backward()
        return {name: p.grad.clone() for name, p in model.named_parameters()}

    full = gradients(output_hidden_states=True)
    for name, grad in gradients().items():
        torch.testing.assert_close(grad, full[name], msg=name)
    assert build(pooling="mean").tokens_read_by_heads() is None


def test_conv_stem_tokens_statistics_and_cost(tmp_path):
    """A convolutional stem makes the patch grid's tokens; its BatchNorm statistics, learned in training, are saved
    and used in evaluation; `hf_vit.flops` counts its work as torch's FLOP counter does."""
    from torch.utils.flop_counter import FlopCounterMode

    from hf_vit.flops import count_parameters, forward_flops

    model = build(stem_channels=[8, 16], pooling="mean")
    pixels = torch.randn(4, 3, 16, 16)
    out = model(pixels, output_hidden_states=True)
    assert out.hidden_states[0].shape == (4, 1 + 16, 32)  # class token + the 4x4 grid of patch size 4
    embeddings = model.vit.embeddings
    assert embeddings.stem.convs[1].stride == (2, 2) and embeddings.patch_embeddings.kernel_size == (1, 1)
    assert sum(p.numel() for p in model.parameters()) == count_parameters(model.config)

    model.train()
    model(pixels * 3 + 1)  # BatchNorm's running statistics move in training only
    norm = model.vit.embeddings.stem.norms[0]
    assert norm.num_batches_tracked.item() == 1 and norm.running_mean.abs().sum() > 0
    model.eval()
    model.save_pretrained(tmp_path)
    loaded = HfViTForImageClassification.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(loaded.vit.embeddings.stem.norms[0].running_var, norm.running_var)
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixels).logits, model(pixels).logits)

    def counted(config):
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            HfViTForImageClassification(config).eval()(torch.randn(1, 3, 16, 16), output_hidden_states=True)
        return counter.get_total_flops()

    plain, stem = tiny_config(), tiny_config(stem_channels=[8, 16])
    assert forward_flops(stem) - forward_flops(plain) == counted(stem) - counted(plain) != 0

    # A stem pads at each stride-2 step: any size works, with the grid rounded up (18 px at patch 4: 5 x 5).
    hidden = model.vit(torch.randn(1, 3, 18, 13), output_hidden_states=True).hidden_states[0]
    assert hidden.shape == (1, 1 + 5 * 4, 32)
    assert tiny_config(image_size=18, stem_channels=[8, 16]).grid_size == (5, 5)
