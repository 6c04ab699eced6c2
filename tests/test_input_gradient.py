"""The input-gradient explainer against a slow reference through the model's OWN forward
(open_clip ``encode_image``, timm ``forward``), one image and one target at a time."""
import pytest
import torch
import torch.nn.functional as F

from avlegrad.explain import create_explainer, list_explainers
from conftest import assert_model_unchanged, make_tiny_clip, model_snapshot
from test_legrad_timm import timm_vit


def reference(score_fn, image, mode):
    image = image.clone().requires_grad_(True)
    grad = torch.autograd.grad(score_fn(image), image)[0][0]
    m = grad.abs().amax(dim=0) if mode == "saliency" else (grad * image.detach()[0]).sum(dim=0).abs()
    return (m - m.min()) / (m.max() - m.min())


@pytest.mark.parametrize("mode", ["gradient_x_input", "saliency"])
def test_open_clip_equals_reference(mode):
    model = make_tiny_clip(seed=21)
    torch.manual_seed(22)
    images, targets = torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32)
    maps = create_explainer("input_gradient", model, mode=mode)(images, targets)
    assert maps.shape == (2, 3, 32, 32) and maps.dtype == torch.float32
    for b in range(2):
        for k in range(3):
            t = F.normalize(targets[b, k], dim=0)
            ref = reference(lambda x: F.normalize(model.encode_image(x), dim=-1)[0] @ t, images[b:b + 1], mode)
            assert (maps[b, k] - ref).abs().max().item() < 1e-5


def test_timm_class_and_embedding_targets_equal_reference():
    t = timm_vit(seed=23)
    torch.manual_seed(24)
    images = torch.randn(2, 3, 32, 32)
    maps = create_explainer("input_gradient", t)(images, torch.tensor([4, 7]))
    for b, c in enumerate((4, 7)):
        ref = reference(lambda x: t(x)[0, c], images[b:b + 1], "gradient_x_input")
        assert (maps[b] - ref).abs().max().item() < 1e-5
    target = torch.randn(64)
    maps = create_explainer("input_gradient", t, mode="saliency")(images[:1], target[None])
    pre = lambda x: t.forward_head(t.forward_features(x), pre_logits=True)  # noqa: E731
    ref = reference(lambda x: F.normalize(pre(x), dim=-1)[0] @ F.normalize(target, dim=0), images[:1], "saliency")
    assert (maps[0] - ref).abs().max().item() < 1e-5


def test_registered_model_unchanged_frozen_same_and_bad_mode():
    assert "input_gradient" in list_explainers()
    model = make_tiny_clip(seed=25).train()
    before = model_snapshot(model)
    images, targets = torch.randn(2, 3, 32, 40), torch.randn(2, 32)
    maps = create_explainer("input_gradient", model)(images, targets)
    assert maps.shape == (2, 32, 40)
    assert_model_unchanged(before, model_snapshot(model))
    model.requires_grad_(False)
    torch.testing.assert_close(create_explainer("input_gradient", model)(images, targets), maps)
    with pytest.raises(ValueError, match="mode must be one of gradient_x_input, saliency; got 'smooth'"):
        create_explainer("input_gradient", model, mode="smooth")
