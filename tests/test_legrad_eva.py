"""LeGrad on timm Eva (RoPE) models: EVA02-style, Perception-Encoder-style (attention-pooled) and
open_clip towers built on them, against timm's own forward (replayed forward) and a slow
reference written here from the definition (attention materialised, rotary embedding written
out, per-layer autograd)."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import resample_abs_pos_embed
from timm.models.eva import Eva

from avlegrad import LeGrad
from avlegrad.explain.adapters.eva import EvaViT
from avlegrad.explain.vit import adapter_for
from conftest import assert_model_unchanged, model_snapshot
from test_legrad_timm import randomise

BASE = dict(img_size=32, patch_size=8, embed_dim=64, depth=3, num_heads=4, use_rot_pos_emb=True)
VARIANTS = {
    # EVA02 (eva02_*_clip): separate q/k/v, SwiGLU with inner norm, inner attention norm, class token
    "eva02": dict(qkv_fused=False, swiglu_mlp=True, scale_mlp=True, scale_attn_inner=True, mlp_ratio=8 / 3,
                  ref_feat_shape=(4, 4), num_classes=10, global_pool="token"),
    # fused qkv with (q, v) bias, LayerScale, mean pooling + fc_norm, register tokens, packed SwiGLU
    # (timm GluMlp, gate first: eva02_tiny's MLP)
    "fused+ls+avg": dict(init_values=0.3, num_classes=7, global_pool="avg", num_reg_tokens=2, swiglu_mlp=True),
    # timm's AttentionRope with separate projections and grouped-query attention (2 key/value heads)
    "rope+gqa": dict(attn_type="rope", qkv_fused=False, num_kv_heads=2, num_classes=5, global_pool="avg",
                     class_token=False),
    # Perception Encoder (vit_pe_core_*): timm's AttentionRope, pre-norm, xy-indexed rope with offset,
    # attention pooling
    "pe": dict(global_pool="map", attn_type="rope", use_pre_transformer_norm=True, rope_grid_offset=1.0,
               rope_grid_indexing="xy", ref_feat_shape=(2, 2), attn_pool_num_heads=4, attn_pool_mlp_ratio=2.0,
               num_classes=0),
}


def eva(name, seed=0, **kw):
    torch.manual_seed(seed)
    return randomise(Eva(**{**BASE, **VARIANTS[name], **kw}), seed)


def twin_dynamic(model, name):
    """The same weights in a ``dynamic_img_size=True`` model: timm's own forward at any size."""
    torch.manual_seed(0)
    twin = Eva(**{**BASE, **VARIANTS[name], "dynamic_img_size": True})
    twin.load_state_dict(model.state_dict())
    return twin.eval()


# ------------------------------------------------------------------ reference
def rotate(x, sin, cos, half):
    """Rotary embedding written out: pairs (x_2i, x_2i+1), or halves with rotate_half."""
    if half:
        x1, x2 = x.chunk(2, dim=-1)
        turned = torch.cat([-x2, x1], dim=-1)
    else:
        turned = torch.stack([-x[..., 1::2], x[..., ::2]], dim=-1).reshape(x.shape)
    return x * cos + turned * sin


def reference_tokens(t, image, table, pos=None):
    """Every block's attention matrix and output tokens; ``table``: rope [N patches, 2*dim];
    ``pos``: the absolute position embedding for this grid (default: the model's)."""
    p = t.patch_embed.patch_size[0]
    x = F.conv2d(image, t.patch_embed.proj.weight, t.patch_embed.proj.bias, stride=p).flatten(2).transpose(1, 2)
    prefix = [tok for tok in (t.cls_token, t.reg_token) if tok is not None]
    pos = t.pos_embed if pos is None else pos
    if pos is not None:
        assert pos.shape[1] - (0 if t.no_embed_class else t.num_prefix_tokens) == x.shape[1]
        x = torch.cat(prefix + [x + pos], 1) if t.no_embed_class else torch.cat(prefix + [x], 1) + pos
    else:
        x = torch.cat(prefix + [x], 1)
    x = t.norm_pre(x)
    sin, cos = table.chunk(2, dim=-1)
    attentions, outputs = [], []
    for blk in t.blocks:
        a = blk.attn
        h = blk.norm1(x)
        N = h.shape[1]
        if a.qkv is not None:
            if getattr(a, "q_bias", None) is not None:  # EvaAttention: no key bias
                qkv = h @ a.qkv.weight.T + torch.cat([a.q_bias, torch.zeros_like(a.q_bias), a.v_bias])
            else:  # AttentionRope: an ordinary biased linear
                qkv = h @ a.qkv.weight.T + a.qkv.bias
            q, k, v = qkv.reshape(1, N, 3, a.num_heads, -1).permute(2, 0, 3, 1, 4)
        else:
            kv_heads = getattr(a, "num_kv_heads", a.num_heads)
            q = a.q_proj(h).reshape(1, N, a.num_heads, -1).transpose(1, 2)
            k, v = (lin(h).reshape(1, N, kv_heads, -1).transpose(1, 2) for lin in (a.k_proj, a.v_proj))
            # grouped-query attention: query head i reads key/value head i // (heads / kv_heads)
            k, v = (torch.stack([t[:, i * kv_heads // a.num_heads] for i in range(a.num_heads)], dim=1) for t in (k, v))
        q, k = a.q_norm(q), a.k_norm(k)
        n = a.num_prefix_tokens
        q = torch.cat([q[:, :, :n], rotate(q[:, :, n:], sin, cos, a.rotate_half)], dim=2)
        k = torch.cat([k[:, :, :n], rotate(k[:, :, n:], sin, cos, a.rotate_half)], dim=2)
        A = torch.softmax(q @ k.transpose(-1, -2) * a.head_dim ** -0.5, dim=-1)
        o = a.proj(a.norm((A @ v).transpose(1, 2).reshape(1, N, -1)))
        x = x + (blk.gamma_1 * o if blk.gamma_1 is not None else o)
        m = blk.mlp(blk.norm2(x))
        x = x + (blk.gamma_2 * m if blk.gamma_2 is not None else m)
        attentions.append(A)
        outputs.append(x)
    return attentions, outputs


def reference_legrad(t, image, target, layer_index, table, head=None, pos=None):
    """One image, one target (class index or embedding): the map [H, W]."""
    attentions, outputs = reference_tokens(t, image, table, pos)
    gh, gw = image.shape[-2] // t.patch_embed.patch_size[0], image.shape[-1] // t.patch_embed.patch_size[1]
    L, n = len(t.blocks), t.num_prefix_tokens
    total = 0
    for layer in range(layer_index % L, L):
        if t.attn_pool is not None:  # the gradient site is the pooler's attention over this block's tokens
            pool = t.attn_pool
            x = outputs[layer].detach()
            q = pool.q(pool.latent).reshape(1, 1, pool.num_heads, -1).transpose(1, 2)
            kv = pool.kv(x).reshape(1, x.shape[1], 2, pool.num_heads, -1)
            k, v = kv[:, :, 0].transpose(1, 2), kv[:, :, 1].transpose(1, 2)
            A = torch.softmax(q @ k.transpose(-1, -2) * pool.head_dim ** -0.5, dim=-1)
            y = pool.proj((A @ v).transpose(1, 2).reshape(1, 1, -1))
            y = (y + pool.mlp(pool.norm(y)))[:, 0]
            feats = t.fc_norm(y)
            site = A
        else:
            z = t.norm(outputs[layer])
            pooled = z[:, 0] if t.global_pool == "token" else z[:, n:].mean(dim=1)
            feats = t.fc_norm(pooled)
            site = attentions[layer]
        if head is not None:
            feats = head(feats)
        if isinstance(target, int):
            s = t.head(feats)[0, target]
        else:
            s = F.normalize(feats, dim=-1)[0] @ (target / target.norm())
        g = torch.autograd.grad(s, site, retain_graph=True)[0].clamp(min=0)
        e = g.mean(dim=1)[:, 0] if t.attn_pool is not None else g.mean(dim=1).mean(dim=1)
        e = e[:, n:].reshape(1, 1, gh, gw)
        total = total + F.interpolate(e, scale_factor=t.patch_embed.patch_size[0], mode="bilinear")
    total = total[0, 0]
    return (total - total.min()) / (total.max() - total.min())


# ------------------------------------------------------------------ tests
@pytest.mark.parametrize("name", list(VARIANTS))
def test_replayed_forward_is_timms_forward_at_any_size(name):
    model = eva(name)
    vit = adapter_for(model)
    assert isinstance(vit, EvaViT)
    for size, ref in (((32, 32), model), ((48, 24), twin_dynamic(model, name))):
        images = torch.randn(2, 3, *size)
        with torch.no_grad():
            x = vit.tokens_before(images, vit.num_layers)  # the blocks rotate with this grid's table
            want = ref.forward_head(ref.forward_features(images), pre_logits=True)
            torch.testing.assert_close(vit.model_embedding(x), want, atol=1e-5, rtol=1e-5)
            if vit.num_classes:
                torch.testing.assert_close(vit.layer_logits(x), ref(images), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_legrad_matches_the_slow_reference(name):
    model = eva(name, seed=1)
    before = model_snapshot(model)
    images = torch.randn(2, 3, 32, 32)
    targets = torch.randn(2, 2, model.num_features)
    maps = LeGrad(model, layer_index=-2)(images, targets)
    table = model.rope.get_embed()
    for b in range(2):
        for k in range(2):
            ref = reference_legrad(model, images[b:b + 1], targets[b, k], -2, table)
            torch.testing.assert_close(maps[b, k], ref, atol=1e-4, rtol=1e-4)
    if model.num_classes:
        classes = torch.tensor([3, model.num_classes - 1])
        maps = LeGrad(model, layer_index=0)(images, classes)
        for b in range(2):
            torch.testing.assert_close(maps[b], reference_legrad(model, images[b:b + 1], int(classes[b]), 0, table),
                                       atol=1e-4, rtol=1e-4)
    assert_model_unchanged(before, model_snapshot(model))


def test_legrad_at_another_size_uses_the_rebuilt_rotary_table():
    model = eva("eva02", seed=2)
    twin = twin_dynamic(model, "eva02")
    images = torch.randn(1, 3, 24, 48)
    target = torch.randn(1, model.num_features)
    table = twin.rope.get_embed(shape=(3, 6))  # timm's own table for this grid
    pos = resample_abs_pos_embed(model.pos_embed, new_size=(3, 6), old_size=(4, 4), num_prefix_tokens=1)
    ref = reference_legrad(model, images, target[0], -1, table, pos=pos)
    torch.testing.assert_close(LeGrad(model, layer_index=-1)(images, target)[0], ref, atol=1e-4, rtol=1e-4)


def test_open_clip_eva_tower():
    """An open_clip TimmModel on an Eva trunk (EVA02-B-16's structure, tiny): the trunk's classifier
    is the projection into the CLIP space."""
    from open_clip.timm_model import TimmModel

    tower = TimmModel.__new__(TimmModel)
    nn.Module.__init__(tower)
    tower.trunk = eva("eva02", seed=3, num_classes=16)
    tower.head = nn.Sequential()
    tower.image_size = (32, 32)
    tower.eval()
    _check_embedding_model(tower, tower.trunk, 16)


def test_timm_perception_encoder_keeps_its_clip_projection():
    """timm's vit_pe_core_* carry the CLIP projection as the attention-pooled model's ``head``
    (``num_classes`` = the CLIP width, 512 for vit_pe_core_tiny_patch16_384): the embedding is timm's
    whole forward, and targets of that width (a PE text embedding) are explained through it."""
    model = eva("pe", seed=4, num_classes=12)
    _check_embedding_model(model, model, 12)


def test_unsupported_eva_variants_are_refused():
    from avlegrad.explain.vit import UnsupportedModelError

    gated = eva("fused+ls+avg")
    gated.blocks[0].attn.gate = nn.Linear(64, 64)
    with pytest.raises(UnsupportedModelError, match="block 0 uses gated attention"):
        LeGrad(gated)
    mixed = eva("eva02", rope_type="mixed")
    with pytest.raises(UnsupportedModelError, match="rotary embedding"):
        LeGrad(mixed)


def _check_embedding_model(model, trunk, width: int):
    """``model``'s whole forward is its embedding (``width`` wide, no classifier): the adapter's
    embedding equals it, and LeGrad on it equals the slow reference through ``trunk``'s head;
    the model is left unchanged."""
    before = model_snapshot(model)
    vit = adapter_for(model)
    assert vit.embed_dim == width and vit.num_classes is None
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        x = vit.tokens_before(images, vit.num_layers)
        torch.testing.assert_close(vit.model_embedding(x), model(images), atol=1e-5, rtol=1e-5)
    targets = torch.randn(2, width)
    maps = LeGrad(model, layer_index=-2)(images, targets)
    for b in range(2):
        ref = reference_legrad(trunk, images[b:b + 1], targets[b], -2, trunk.rope.get_embed(), head=trunk.head)
        torch.testing.assert_close(maps[b], ref, atol=1e-4, rtol=1e-4)
    assert_model_unchanged(before, model_snapshot(model))
