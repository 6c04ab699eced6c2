"""LeGrad against a slow reference written here from the definition (shared/docs/legrad.md):
one image at a time, attention materialised, one autograd.grad per layer."""
import copy

import pytest
import torch
import torch.nn as nn

from avlegrad import LeGrad
from avlegrad.explain.vit import UnsupportedModelError
from conftest import assert_model_unchanged, make_tiny_clip, model_snapshot
from reference import reference_forward, reference_maps


def test_reference_forward_is_the_models_forward(tiny_clip):
    image = torch.randn(1, 3, 32, 32)
    _, outputs, _, _ = reference_forward(tiny_clip.visual, image)
    pooled = tiny_clip.visual.ln_post(outputs[-1])[:, 0] @ tiny_clip.visual.proj
    torch.testing.assert_close(pooled, tiny_clip.encode_image(image), atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------ equality
@pytest.mark.parametrize("layer_index", [-1, -2, -3, 0, 1, 2])
@pytest.mark.parametrize("size", [(32, 32), (48, 24)])
def test_equals_reference(tiny_clip, layer_index, size):
    torch.manual_seed(1)
    images = torch.randn(3, 3, *size)
    targets = torch.randn(3, 2, 32)  # K = 2 per image, not unit norm
    maps = LeGrad(tiny_clip, layer_index=layer_index)(images, targets)
    assert maps.shape == (3, 2, *size) and maps.dtype == torch.float32
    ref = reference_maps(tiny_clip, images, targets, layer_index)
    assert (maps - ref).abs().max().item() < 1e-5
    assert maps.min() == 0 and maps.amax(dim=(-2, -1)).eq(1).all()


def test_one_target_per_image_gives_bhw(tiny_clip):
    torch.manual_seed(2)
    images, targets = torch.randn(2, 3, 32, 32), torch.randn(2, 32)
    maps = LeGrad(tiny_clip)(images, targets)
    assert maps.shape == (2, 32, 32)
    ref = reference_maps(tiny_clip, images, targets[:, None], -2)[:, 0]
    assert (maps - ref).abs().max().item() < 1e-5


@pytest.mark.parametrize("options", [dict(ls_init_value=0.5), dict(act_layer_quick=True),
                                     dict(qk_norm=True, scale_heads=True, scale_attn_inner=True,
                                          scale_attn=True, scale_fc=True)])
def test_equals_reference_on_block_variants(options):
    import open_clip

    if options.pop("act_layer_quick", False):
        model = make_tiny_clip(seed=3)
        model = open_clip.CLIP(embed_dim=32, quick_gelu=True,
                               vision_cfg=dict(image_size=32, patch_size=8, width=64, layers=3, head_width=16),
                               text_cfg=dict(context_length=16, vocab_size=100, width=32, heads=2,
                                             layers=1)).eval()
    else:
        model = make_tiny_clip(seed=3, **options)
    torch.manual_seed(3)
    images, targets = torch.randn(2, 3, 40, 32), torch.randn(2, 1, 32)
    for layer_index in (-2, 0):
        maps = LeGrad(model, layer_index=layer_index)(images, targets)
        ref = reference_maps(model, images, targets, layer_index)
        assert (maps - ref).abs().max().item() < 1e-5


def test_accepts_visual_tower_alone(tiny_clip):
    torch.manual_seed(4)
    images, targets = torch.randn(2, 3, 32, 32), torch.randn(2, 32)
    torch.testing.assert_close(LeGrad(tiny_clip)(images, targets), LeGrad(tiny_clip.visual)(images, targets))


def test_batch_independence(tiny_clip):
    torch.manual_seed(5)
    images, targets = torch.randn(4, 3, 32, 32), torch.randn(4, 32)
    explainer = LeGrad(tiny_clip, layer_index=0)
    together = explainer(images, targets)
    for b in range(4):
        alone = explainer(images[b:b + 1], targets[b:b + 1])[0]
        assert (alone - together[b]).abs().max().item() < 1e-6
    # a different batch-mate changes nothing either
    other = explainer(torch.cat([images[:1], torch.randn(1, 3, 32, 32)]), targets[:2])
    assert (other[0] - together[0]).abs().max().item() < 1e-6


def test_targets_need_not_be_unit_norm(tiny_clip):
    torch.manual_seed(6)
    images, targets = torch.randn(2, 3, 32, 32), torch.randn(2, 32)
    explainer = LeGrad(tiny_clip)
    torch.testing.assert_close(explainer(images, targets), explainer(images, 7.5 * targets))


def test_constant_map_is_zeros_not_nan(tiny_clip):
    model = copy.deepcopy(tiny_clip)
    with torch.no_grad():
        model.visual.proj.zero_()  # every layer's embedding is 0: no gradient anywhere
    maps = LeGrad(model)(torch.randn(2, 3, 32, 32), torch.randn(2, 32))
    assert torch.isfinite(maps).all() and maps.eq(0).all()


def test_under_no_grad_and_inference_mode(tiny_clip):
    torch.manual_seed(7)
    images, targets = torch.randn(2, 3, 32, 32), torch.randn(2, 32)
    explainer = LeGrad(tiny_clip)
    expected = explainer(images, targets)
    with torch.no_grad():
        torch.testing.assert_close(explainer(images, targets), expected)
    with torch.inference_mode():
        images_inf, targets_inf = images.clone(), targets.clone()
        torch.testing.assert_close(explainer(images_inf, targets_inf).clone(), expected)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_close_to_fp32(tiny_clip, dtype):
    torch.manual_seed(8)
    images, targets = torch.randn(2, 3, 32, 32), torch.randn(2, 32)
    explainer = LeGrad(tiny_clip, layer_index=0)
    fp32 = explainer(images, targets)
    with torch.autocast("cpu", dtype=dtype):
        low = explainer(images, targets)
    assert low.dtype == torch.float32 and low.shape == fp32.shape
    assert (low - fp32).abs().mean() < 0.01 and (low - fp32).abs().max() < 0.05


def test_fp16_autocast_with_many_tokens_and_large_activations(tiny_clip):
    """The per-layer token mean must not overflow fp16 (1,025 tokens of MLP activations of a few hundred: their sum exceeds 65,504)."""
    model = copy.deepcopy(tiny_clip)
    with torch.no_grad():
        for block in model.visual.transformer.resblocks:
            block.mlp.c_fc.weight.mul_(150)
    torch.manual_seed(8)
    images, targets = torch.randn(1, 3, 256, 256), torch.randn(1, 32)
    explainer = LeGrad(model, layer_index=0)
    fp32 = explainer(images, targets)
    with torch.autocast("cpu", dtype=torch.float16):
        low = explainer(images, targets)
    assert torch.isfinite(low).all() and low.max() == 1
    assert (low - fp32).abs().mean() < 0.02


def test_half_precision_weights(tiny_clip):
    torch.manual_seed(8)
    images, targets = torch.randn(2, 3, 32, 32), torch.randn(2, 32)
    fp32 = LeGrad(tiny_clip)(images, targets)
    half = LeGrad(copy.deepcopy(tiny_clip).to(torch.bfloat16))(images.to(torch.bfloat16), targets)
    assert half.dtype == torch.float32 and (half - fp32).abs().mean() < 0.01


# ------------------------------------------------------------------ the model is left as found
@pytest.mark.parametrize("train_mode", [False, True])
def test_model_left_exactly_as_found(train_mode):
    model = make_tiny_clip(seed=9)
    model.train(train_mode)
    for p in model.visual.transformer.resblocks[0].parameters():  # a user's partial freeze
        p.requires_grad_(False)
    torch.manual_seed(9)
    probe = torch.randn(2, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        before_out = model.encode_image(probe)
    model.train(train_mode)
    before = model_snapshot(model)

    explainer = LeGrad(model, layer_index=0)
    explainer(torch.randn(2, 3, 48, 40), torch.randn(2, 3, 32))  # another size: pos-embed resampled
    with torch.autocast("cpu", dtype=torch.bfloat16):
        explainer(probe, torch.randn(2, 32))

    assert_model_unchanged(before, model_snapshot(model))
    model.eval()
    with torch.no_grad():
        assert torch.equal(model.encode_image(probe), before_out)


def test_train_mode_model_gives_the_eval_mode_maps():
    model = make_tiny_clip(seed=10, patch_dropout=0.5)
    torch.manual_seed(10)
    images, targets = torch.randn(2, 3, 32, 32), torch.randn(2, 32)
    expected = LeGrad(model.eval())(images, targets)
    torch.testing.assert_close(LeGrad(model.train())(images, targets), expected)


# ------------------------------------------------------------------ errors
def test_error_target_width(tiny_clip):
    with pytest.raises(ValueError, match="width 16 .* width 32"):
        LeGrad(tiny_clip)(torch.randn(2, 3, 32, 32), torch.randn(2, 16))


def test_error_image_size_not_multiple_of_patch(tiny_clip):
    with pytest.raises(ValueError, match="30x32 is not a multiple of the patch size 8x8"):
        LeGrad(tiny_clip)(torch.randn(1, 3, 30, 32), torch.randn(1, 32))


@pytest.mark.parametrize("images,targets,match", [
    (torch.randn(3, 32, 32), torch.randn(1, 32), r"images must be a tensor \[B, 3, H, W\]"),
    (torch.randn(1, 1, 32, 32), torch.randn(1, 32), r"images must be a tensor \[B, 3, H, W\]"),
    (torch.zeros(1, 3, 32, 32, dtype=torch.uint8), torch.randn(1, 32), "floating point"),
    (torch.randn(1, 3, 32, 32), torch.randn(32), r"targets must be a tensor \[B, D\] or \[B, K, D\]"),
    (torch.randn(1, 3, 32, 32), torch.randn(1, 1, 1, 32), r"targets must be a tensor"),
    (torch.randn(2, 3, 32, 32), torch.randn(3, 32), "2 images but targets for 3"),
    (torch.randn(1, 3, 32, 32), torch.zeros(1, 32), "non-zero"),
    (torch.randn(1, 3, 32, 32), torch.full((1, 32), float("nan")), "NaN"),
])
def test_error_shapes(tiny_clip, images, targets, match):
    with pytest.raises(ValueError, match=match):
        LeGrad(tiny_clip)(images, targets)


@pytest.mark.parametrize("layer_index", [3, -4, 1.5, True])
def test_error_layer_index(tiny_clip, layer_index):
    with pytest.raises(ValueError, match=r"layer_index must be an int in \[-3, 2\]"):
        LeGrad(tiny_clip, layer_index=layer_index)


def test_error_unsupported_models():
    import open_clip

    resnet_clip = open_clip.CLIP(embed_dim=32, vision_cfg=dict(image_size=64, layers=[1, 1, 1, 1], width=16),
                                 text_cfg=dict(context_length=16, vocab_size=100, width=32, heads=2, layers=1))
    with pytest.raises(UnsupportedModelError, match="ModifiedResNet.*Supported: .*OpenCLIP VisionTransformer"):
        LeGrad(resnet_clip)
    with pytest.raises(UnsupportedModelError, match="Supported"):
        LeGrad(nn.Linear(3, 3))
    # CoCa's attentional pooler is supported (tests/test_legrad_coca.py); the two-pooler WIP variants are not
    two_poolers = make_tiny_clip(seed=11, attentional_pool="parallel", attn_pooler_queries=4, attn_pooler_heads=2)
    with pytest.raises(UnsupportedModelError, match="two attentional poolers"):
        LeGrad(two_poolers)
