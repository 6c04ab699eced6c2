"""LeGrad on timm Vision Transformers (classifiers, register tokens) and attention-pooled
(SigLIP-style) towers, against slow references written here from the definition."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import resample_abs_pos_embed
from timm.models.vision_transformer import VisionTransformer

from avlegrad import LeGrad
from avlegrad.explain import create_explainer
from avlegrad.explain.vit import UnsupportedModelError
from conftest import assert_model_unchanged, model_snapshot


def randomise(model, seed):
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1 and name.endswith("weight"):
                p.copy_(1 + 0.3 * torch.randn_like(p))
            else:
                p.copy_(0.2 * torch.randn_like(p) if p.ndim == 1 else p + 0.02 * torch.randn_like(p))
    return model.eval()


def timm_vit(seed=0, **kw):
    cfg = dict(img_size=32, patch_size=8, embed_dim=64, depth=3, num_heads=4, num_classes=10, qkv_bias=True)
    cfg.update(kw)
    return randomise(VisionTransformer(**cfg), seed)


VARIANTS = {
    "classifier": dict(),  # class token, token pooling
    "registers": dict(class_token=False, reg_tokens=4, no_embed_class=True, global_pool="avg",
                      fc_norm=True, init_values=0.5, qk_norm=True),
    "cls+registers": dict(reg_tokens=2, global_pool="token"),
}


# ------------------------------------------------------------------ references
def reference_tokens(t, image):
    """The timm ViT forward written out: every block's attention and output tokens."""
    p = t.patch_embed.patch_size[0]
    gh, gw = image.shape[-2] // p, image.shape[-1] // p
    x = t.patch_embed.norm(F.conv2d(image, t.patch_embed.proj.weight, t.patch_embed.proj.bias, stride=p)
                           .flatten(2).transpose(1, 2))
    prefix = [tok for tok in (t.cls_token, t.reg_token) if tok is not None]
    n_prefix = sum(tok.shape[1] for tok in prefix)
    pos = t.pos_embed
    if (gh, gw) != tuple(t.patch_embed.grid_size):
        pos = resample_abs_pos_embed(pos, new_size=[gh, gw], old_size=list(t.patch_embed.grid_size),
                                     num_prefix_tokens=0 if t.no_embed_class else n_prefix)
    if t.no_embed_class:
        x = torch.cat(prefix + [x + pos], dim=1)
    else:
        x = torch.cat(prefix + [x], dim=1) + pos
    attentions, outputs = [], []
    for blk in t.blocks:
        a = blk.attn
        N = x.shape[1]
        qkv = a.qkv(blk.norm1(x)).reshape(1, N, 3, a.num_heads, a.head_dim)
        q, k, v = (qkv[:, :, i].transpose(1, 2) for i in range(3))
        q, k = a.q_norm(q), a.k_norm(k)
        A = torch.softmax(q @ k.transpose(-1, -2) * a.head_dim ** -0.5, dim=-1)
        x = x + blk.ls1(a.proj(a.norm((A @ v).transpose(1, 2).reshape(1, N, -1))))
        x = x + blk.ls2(blk.mlp.fc2(blk.mlp.norm(blk.mlp.act(blk.mlp.fc1(blk.norm2(x))))))
        attentions.append(A)
        outputs.append(x)
    return attentions, outputs, (gh, gw), n_prefix


def reference_pre_logits(t, tokens):
    x = t.norm(tokens)
    n_prefix = t.num_prefix_tokens
    pooled = x[:, 0] if t.global_pool == "token" else x[:, n_prefix:].mean(dim=1)
    return t.fc_norm(pooled)


def reference_timm_legrad(t, image, target, layer_index):
    """target: a class index (int) or an embedding [D]."""
    attentions, outputs, (gh, gw), n_prefix = reference_tokens(t, image)
    L = len(t.blocks)
    total = 0
    for layer in range(layer_index % L, L):
        pre = reference_pre_logits(t, outputs[layer])
        if isinstance(target, int):
            s = t.head(pre)[0, target]
        else:
            s = F.normalize(pre, dim=-1)[0] @ (target / target.norm())
        g = torch.autograd.grad(s, attentions[layer], retain_graph=True)[0]
        e = g.clamp(min=0).mean(dim=1).mean(dim=1)[:, n_prefix:].reshape(1, 1, gh, gw)
        total = total + F.interpolate(e, scale_factor=t.patch_embed.patch_size[0], mode="bilinear")
    total = total[0, 0]
    return (total - total.min()) / (total.max() - total.min())


def test_reference_forward_is_the_models_forward():
    for kw in VARIANTS.values():
        t = timm_vit(**kw)
        image = torch.randn(1, 3, 32, 32)
        _, outputs, _, _ = reference_tokens(t, image)
        torch.testing.assert_close(t.head(reference_pre_logits(t, outputs[-1])), t(image), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("layer_index", [-2, 0])
def test_timm_classifier_class_targets(variant, layer_index):
    t = timm_vit(seed=1, **VARIANTS[variant])
    torch.manual_seed(2)
    images = torch.randn(2, 3, 40, 32)  # not the native size: position embedding resampled
    classes = torch.tensor([[3, 7], [0, 9]])
    maps = LeGrad(t, layer_index=layer_index)(images, classes)
    assert maps.shape == (2, 2, 40, 32)
    for b in range(2):
        for k in range(2):
            ref = reference_timm_legrad(t, images[b:b + 1], int(classes[b, k]), layer_index)
            assert (maps[b, k] - ref).abs().max().item() < 1e-5


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_timm_embedding_targets(variant):
    t = timm_vit(seed=3, **VARIANTS[variant])
    torch.manual_seed(4)
    images, targets = torch.randn(2, 3, 32, 32), torch.randn(2, 64)
    maps = LeGrad(t)(images, targets)
    for b in range(2):
        ref = reference_timm_legrad(t, images[b:b + 1], targets[b], -2)
        assert (maps[b] - ref).abs().max().item() < 1e-5


# ------------------------------------------------------------------ attention-pooled (SigLIP)
def siglip_tower(seed=5):
    """An open_clip TimmModel (as open_clip builds SigLIP: map pooling, no projection) with a tiny trunk."""
    from open_clip.timm_model import TimmModel

    tower = TimmModel.__new__(TimmModel)
    nn.Module.__init__(tower)
    tower.trunk = timm_vit(seed=seed, class_token=False, global_pool="map", num_classes=0, depth=3)
    tower.head = nn.Sequential()
    tower.image_size = (32, 32)
    return tower.eval()


def reference_pooled_legrad(tower, image, target, layer_index, correction=None, threshold=0.8):
    t = tower.trunk
    pool = t.attn_pool
    _, outputs, (gh, gw), _ = reference_tokens(t, image)
    L = len(t.blocks)

    def grid_map(tgt):
        total = 0
        for layer in range(layer_index % L, L):
            x = outputs[layer].detach()  # the official code pools each block's tokens, without the final norm
            q = pool.q(pool.latent).reshape(1, pool.latent_len, pool.num_heads, pool.head_dim).transpose(1, 2)
            kv = pool.kv(x).reshape(1, x.shape[1], 2, pool.num_heads, pool.head_dim)
            k, v = kv[:, :, 0].transpose(1, 2), kv[:, :, 1].transpose(1, 2)
            q, k = pool.q_norm(q), pool.k_norm(k)
            A = torch.softmax(q @ k.transpose(-1, -2) * pool.head_dim ** -0.5, dim=-1)
            y = pool.proj((A @ v).transpose(1, 2).reshape(1, pool.latent_len, -1))
            y = y + pool.mlp.fc2(pool.mlp.act(pool.mlp.fc1(pool.norm(y))))
            s = F.normalize(tower.head(y[:, 0]), dim=-1)[0] @ (tgt / tgt.norm())
            g = torch.autograd.grad(s, A)[0]
            total = total + g.clamp(min=0).mean(dim=1)[0, 0].reshape(gh, gw)
        return total

    total = grid_map(target)
    if correction is not None:
        empty = grid_map(correction)
        empty = (empty - empty.min()) / (empty.max() - empty.min())
        total = torch.where(empty > threshold, torch.zeros_like(total), total)
    up = F.interpolate(total[None, None], scale_factor=t.patch_embed.patch_size[0], mode="bilinear")[0, 0]
    return (up - up.min()) / (up.max() - up.min())


@pytest.mark.parametrize("layer_index", [-2, 0])
def test_attention_pooled_tower(layer_index):
    tower = siglip_tower()
    torch.manual_seed(6)
    images, targets = torch.randn(2, 3, 32, 48), torch.randn(2, 64)
    maps = LeGrad(tower, layer_index=layer_index)(images, targets)
    for b in range(2):
        ref = reference_pooled_legrad(tower, images[b:b + 1], targets[b], layer_index)
        assert (maps[b] - ref).abs().max().item() < 1e-5


def test_attention_pooled_correction():
    tower = siglip_tower(seed=7)
    torch.manual_seed(8)
    images, targets, empty = torch.randn(2, 3, 32, 32), torch.randn(2, 64), torch.randn(64)
    maps = LeGrad(tower, layer_index=0, correction_target=empty, correction_threshold=0.5)(images, targets)
    plain = LeGrad(tower, layer_index=0)(images, targets)
    assert not torch.allclose(maps, plain)
    for b in range(2):
        ref = reference_pooled_legrad(tower, images[b:b + 1], targets[b], 0, correction=empty, threshold=0.5)
        assert (maps[b] - ref).abs().max().item() < 1e-5


# ------------------------------------------------------------------ guarantees and errors
@pytest.mark.parametrize("make", [lambda: timm_vit(seed=9, **VARIANTS["registers"]), siglip_tower])
def test_model_left_exactly_as_found(make):
    model = make().train()
    before = model_snapshot(model)
    LeGrad(model, layer_index=0)(torch.randn(2, 3, 40, 32), torch.randn(2, 64))
    assert_model_unchanged(before, model_snapshot(model))


def test_errors():
    t = timm_vit()
    with pytest.raises(ValueError, match=r"class indices must be in \[0, 9\]"):
        LeGrad(t)(torch.randn(1, 3, 32, 32), torch.tensor([10]))
    with pytest.raises(ValueError, match="width 16 but the model's image embedding has width 64"):
        LeGrad(t)(torch.randn(1, 3, 32, 32), torch.randn(1, 16))
    with pytest.raises(ValueError, match="class indices, which LeGrad supports only for timm classifiers"):
        LeGrad(siglip_tower())(torch.randn(1, 3, 32, 32), torch.tensor([1]))
    with pytest.raises(ValueError, match="correction_target applies to attention-pooled models"):
        LeGrad(t, correction_target=torch.randn(64))
    # the baselines run on timm ViTs where they are defined: not the class-token ones without a class token
    with pytest.raises(UnsupportedModelError, match="not defined for this TimmViT model: .*no class token"):
        create_explainer("rollout", timm_vit(**VARIANTS["registers"]))
    from timm.models.vision_transformer import ResPostBlock

    post = timm_vit(block_fn=ResPostBlock)
    with pytest.raises(UnsupportedModelError, match="ResPostBlock.*Supported:"):
        LeGrad(post)
