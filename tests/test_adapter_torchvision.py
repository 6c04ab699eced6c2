"""LeGrad on torchvision ViT classifiers against a slow reference written here from
torchvision's modules (attention materialised from ``in_proj``), checked against the model's
own ``forward``; the adapter's contract itself is checked by tests/test_adapters.py."""
import pytest
import torch
import torch.nn.functional as F
from torchvision.models.vision_transformer import VisionTransformer

from avlegrad import LeGrad
from avlegrad.explain import UnsupportedModelError, create_explainer
from avlegrad.explain.adapters import adapter_for
from avlegrad.explain.adapters.base import randomised_example


def tv_vit(**kw):
    cfg = dict(image_size=32, patch_size=8, num_layers=3, num_heads=4, hidden_dim=64, mlp_dim=96, num_classes=10)
    cfg.update(kw)
    return randomised_example(lambda: VisionTransformer(**cfg), seed=31)


def reference_forward(m, image):
    """One image: every block's attention probabilities and output tokens, and the logits."""
    x = m.conv_proj(image).flatten(2).transpose(1, 2)
    x = torch.cat([m.class_token, x], dim=1) + m.encoder.pos_embedding
    attentions, outputs = [], []
    for blk in m.encoder.layers:
        a = blk.self_attention
        N, C = x.shape[1], x.shape[2]
        q, k, v = F.linear(blk.ln_1(x), a.in_proj_weight, a.in_proj_bias).chunk(3, dim=-1)
        q, k, v = (t.reshape(1, N, a.num_heads, -1).transpose(1, 2) for t in (q, k, v))
        A = torch.softmax(q @ k.transpose(-1, -2) / (C // a.num_heads) ** 0.5, dim=-1)
        x = x + a.out_proj((A @ v).transpose(1, 2).reshape(1, N, C))
        x = x + blk.mlp(blk.ln_2(x))  # eval mode: dropout is the identity
        attentions.append(A)
        outputs.append(x)
    return attentions, outputs


def pre_logits(m, tokens):
    x = m.encoder.ln(tokens)[:, 0]
    return m.heads[:-1](x)  # pre_logits + tanh when representation_size is set, else nothing


def reference_legrad(m, image, target, layers):
    attentions, outputs = reference_forward(m, image)
    total = 0
    for layer in layers:
        f = pre_logits(m, outputs[layer])
        s = m.heads.head(f)[0, target] if isinstance(target, int) else F.normalize(f, dim=-1)[0] @ target
        g = torch.autograd.grad(s, attentions[layer], retain_graph=True)[0]
        e = g.clamp(min=0).mean(dim=(1, 2))[0, 1:].reshape(1, 1, 4, 4)
        total = total + F.interpolate(e, scale_factor=8, mode="bilinear")[0, 0]
    return (total - total.min()) / (total.max() - total.min())


@pytest.mark.parametrize("representation_size", [None, 48])
def test_reference_is_the_models_forward(representation_size):
    m = tv_vit(representation_size=representation_size)
    image = torch.randn(1, 3, 32, 32)
    _, outputs = reference_forward(m, image)
    torch.testing.assert_close(m.heads.head(pre_logits(m, outputs[-1])), m(image), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("representation_size", [None, 48])
@pytest.mark.parametrize("layer_index", [-2, 0])
def test_legrad_equals_reference(representation_size, layer_index):
    m = tv_vit(representation_size=representation_size)
    torch.manual_seed(32)
    images = torch.randn(2, 3, 32, 32)
    explainer = LeGrad(m, layer_index=layer_index)
    layers = range(layer_index % 3, 3)
    classes = torch.tensor([[2, 9], [0, 5]])
    maps = explainer(images, classes)
    width = representation_size or 64
    targets = torch.randn(2, width)
    emb_maps = explainer(images, targets)
    for b in range(2):
        for k in range(2):
            ref = reference_legrad(m, images[b:b + 1], int(classes[b, k]), layers)
            assert (maps[b, k] - ref).abs().max().item() < 1e-5
        ref = reference_legrad(m, images[b:b + 1], F.normalize(targets[b], dim=0), layers)
        assert (emb_maps[b] - ref).abs().max().item() < 1e-5


def test_other_sizes_baselines_and_refusals():
    m = tv_vit()
    vit = adapter_for(m)
    assert (vit.num_classes, vit.embed_dim, vit.num_prefix_tokens) == (10, 64, 1)
    for name in ("legrad", "similarity", "attention", "rollout", "gradcam", "chefercam", "input_gradient"):
        maps = create_explainer(name, m)(torch.randn(2, 3, 40, 24), torch.tensor([1, 3]) if name != "similarity"
                                         else torch.randn(2, 64))
        assert maps.shape == (2, 40, 24) and torch.isfinite(maps).all(), name
    from torchvision.models.vision_transformer import ConvStemConfig

    stem = tv_vit(conv_stem_configs=[ConvStemConfig(out_channels=16, kernel_size=3, stride=8)])
    with pytest.raises(UnsupportedModelError, match="conv stem.*Supported: .*torchvision VisionTransformer"):
        LeGrad(stem)
