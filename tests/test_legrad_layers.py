"""LeGrad's per-layer and per-head maps (one backward) and its ablation switches, each against
the slow reference extended by the same switch (tests/reference.py)."""
import pytest
import torch

from avlegrad import LeGrad
from conftest import assert_model_unchanged, make_tiny_clip, model_snapshot
from reference import reference_legrad_parts, reference_maps


@pytest.mark.parametrize("layer_index", [-2, 0])
def test_layers_sum_to_the_default_map_and_heads_average_to_layers(tiny_clip, layer_index):
    torch.manual_seed(1)
    images, targets = torch.randn(3, 3, 32, 40), torch.randn(3, 2, 32)
    explainer = LeGrad(tiny_clip, layer_index=layer_index)
    out = explainer.explain_layers(images, targets)
    L = 3 if layer_index == 0 else 2
    assert out.layers.shape == (3, 2, L, 32, 40) and out.heads.shape == (3, 2, L, 4, 4, 5)
    assert out.share.shape == (3, 2, L) and out.layer_ids == list(range(3 - L, 3))
    # the final maps are exactly the default call's
    default = explainer(images, targets)
    assert (out.maps - default).abs().max() < 1e-5
    # the layer maps (before normalisation) sum to the default map before normalisation
    summed = out.layers.sum(dim=2)
    lo, hi = summed.amin(dim=(-2, -1), keepdim=True), summed.amax(dim=(-2, -1), keepdim=True)
    assert ((summed - lo) / (hi - lo) - default).abs().max() < 1e-5
    # heads average to the layer map on the grid; upsampled it is the layer map
    layer_grid = out.heads.mean(dim=3)
    up = torch.nn.functional.interpolate(layer_grid.reshape(-1, 1, 4, 5), scale_factor=8, mode="bilinear")
    assert (up.reshape(out.layers.shape) - out.layers).abs().max() < 1e-6
    torch.testing.assert_close(out.share.sum(dim=-1), torch.ones(3, 2))
    assert (out.share >= 0).all()
    # and every piece is the reference's
    for b in range(3):
        for k in range(2):
            ref_map, ref_layers, ref_heads = reference_legrad_parts(tiny_clip.visual, images[b:b + 1], targets[b, k],
                                                                    layer_index)
            assert (out.layers[b, k] - ref_layers).abs().max() < 1e-6
            assert (out.heads[b, k] - ref_heads).abs().max() < 1e-6
            assert (out.maps[b, k] - ref_map).abs().max() < 1e-5


def test_layers_one_target_per_image_and_model_unchanged(tiny_clip):
    torch.manual_seed(2)
    before = model_snapshot(tiny_clip)
    out = LeGrad(tiny_clip, layer_index=0).explain_layers(torch.randn(2, 3, 32, 32), torch.randn(2, 32))
    assert out.maps.shape == (2, 32, 32) and out.layers.shape == (2, 3, 32, 32)
    assert out.heads.shape == (2, 3, 4, 4, 4) and out.share.shape == (2, 3)
    assert_model_unchanged(before, model_snapshot(tiny_clip))


SWITCHES = [
    dict(score_tokens="cls"),
    dict(score_tokens="patches"),
    dict(relu=False),
    dict(head_aggregation="max"),
    dict(layers=[0, 2]),
    dict(layers=[-1]),
    dict(layer_aggregation="product"),
    dict(layer_aggregation="product", head_aggregation="max", relu=False),
    dict(score_tokens="cls", layers=[1], relu=False),
]


@pytest.mark.parametrize("switches", SWITCHES, ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items()))
def test_ablation_switch_equals_reference(tiny_clip, switches):
    torch.manual_seed(3)
    images, targets = torch.randn(2, 3, 32, 40), torch.randn(2, 2, 32)
    explainer = LeGrad(tiny_clip, layer_index=0, **switches)
    maps = explainer(images, targets)
    ref = reference_maps(tiny_clip, images, targets, 0, **switches)
    assert (maps - ref).abs().max() < 1e-5
    # the variant really differs from the official map (a switch that did nothing would pass above)
    official = reference_maps(tiny_clip, images, targets, 0)
    assert (ref - official).abs().max() > 1e-3
    # per-layer maps of a variant are the reference's per-layer maps too
    out = explainer.explain_layers(images, targets)
    assert (out.maps - maps).abs().max() < 1e-5
    _, ref_layers, ref_heads = reference_legrad_parts(tiny_clip.visual, images[:1], targets[0, 0], 0, **switches)
    assert (out.layers[0, 0] - ref_layers).abs().max() < 1e-6
    assert (out.heads[0, 0] - ref_heads).abs().max() < 1e-6


def test_product_of_one_layer_is_the_sum(tiny_clip):
    """With one explained layer the rollout product adds only the identity: the same map."""
    torch.manual_seed(4)
    images, targets = torch.randn(2, 3, 32, 32), torch.randn(2, 32)
    a = LeGrad(tiny_clip, layer_index=-1)(images, targets)
    b = LeGrad(tiny_clip, layer_index=-1, layer_aggregation="product")(images, targets)
    # the product map is bilinear-upsampled after the mean over queries, as the sum's: equal
    assert (a - b).abs().max() < 1e-5


def test_timm_classifier_layers_sum_to_default_map():
    import timm

    torch.manual_seed(6)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=5, img_size=32, depth=3).eval()
    images, classes = torch.randn(2, 3, 32, 32), torch.tensor([[1, 3], [0, 4]])
    explainer = LeGrad(model, layer_index=0)
    out = explainer.explain_layers(images, classes)
    summed = out.layers.sum(dim=2)
    lo, hi = summed.amin(dim=(-2, -1), keepdim=True), summed.amax(dim=(-2, -1), keepdim=True)
    assert ((summed - lo) / (hi - lo) - explainer(images, classes)).abs().max() < 1e-5
    with pytest.raises(ValueError, match="score_tokens applies to OpenCLIP towers"):
        LeGrad(model, score_tokens="cls")


@pytest.mark.parametrize("kwargs,match", [
    (dict(score_tokens="mean"), "score_tokens must be one of all, cls, patches"),
    (dict(head_aggregation="sum"), "head_aggregation must be one of mean, max"),
    (dict(layer_aggregation="mul"), "layer_aggregation must be one of sum, product"),
    (dict(layers=[3]), r"layers must be a non-empty list of block indices in \[-3, 2\]"),
    (dict(layers=[]), "non-empty"),
])
def test_ablation_errors(tiny_clip, kwargs, match):
    with pytest.raises(ValueError, match=match):
        LeGrad(tiny_clip, **kwargs)


def test_bf16_layers_close_to_fp32():
    model = make_tiny_clip(seed=5)
    torch.manual_seed(5)
    images, targets = torch.randn(2, 3, 32, 32), torch.randn(2, 32)
    explainer = LeGrad(model, layer_index=0)
    fp32 = explainer.explain_layers(images, targets)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = explainer.explain_layers(images, targets)
    assert low.layers.dtype == torch.float32 and (low.maps - fp32.maps).abs().max() < 0.05


def test_attention_pooled_layers_with_correction_sum_to_the_map():
    from test_legrad_timm import siglip_tower

    tower = siglip_tower(seed=7)
    torch.manual_seed(8)
    images, targets, empty = torch.randn(2, 3, 32, 32), torch.randn(2, 64), torch.randn(64)
    explainer = LeGrad(tower, layer_index=0, correction_target=empty, correction_threshold=0.5)
    out = explainer.explain_layers(images, targets)
    default = explainer(images, targets)
    assert out.layers.shape[:2] == (2, 3) and (out.maps - default).abs().max() < 1e-5
    summed = out.layers.sum(dim=1)
    lo, hi = summed.amin(dim=(-2, -1), keepdim=True), summed.amax(dim=(-2, -1), keepdim=True)
    assert ((summed - lo) / (hi - lo) - default).abs().max() < 1e-5
    gh, gw = out.heads.shape[-2:]
    up = torch.nn.functional.interpolate(out.heads.mean(dim=2).reshape(-1, 1, gh, gw), scale_factor=32 // gh,
                                         mode="bilinear")
    assert (up.reshape(out.layers.shape) - out.layers).abs().max() < 1e-6
    # the corrected cells are zero in every layer and head; the others are the plain explainer's
    plain = LeGrad(tower, layer_index=0).explain_layers(images, targets).heads
    changed = (out.heads != plain).any(dim=1).any(dim=1)  # [B, gh, gw]
    assert changed.any() and (out.heads.abs().sum(dim=(1, 2))[changed] == 0).all()
