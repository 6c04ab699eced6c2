"""The baselines on timm ViTs (classifiers, register tokens), against slow references written
here from their definitions (as tests/reference.py does for OpenCLIP): the family details come
from the adapter, so every baseline runs on every family where it is defined."""
import pytest
import torch
import torch.nn.functional as F

from avlegrad.explain import UnsupportedModelError, create_explainer
from test_legrad_timm import VARIANTS, reference_pre_logits, siglip_tower, timm_vit


def forward(t, image):
    """The timm ViT forward written out (native size): every block's attention, its normalised
    input (``norm1``) and its output tokens."""
    p = t.patch_embed.patch_size[0]
    gh, gw = image.shape[-2] // p, image.shape[-1] // p
    x = F.conv2d(image, t.patch_embed.proj.weight, t.patch_embed.proj.bias, stride=p).flatten(2).transpose(1, 2)
    prefix = [tok for tok in (t.cls_token, t.reg_token) if tok is not None]
    if t.no_embed_class:
        x = torch.cat(prefix + [x + t.pos_embed], dim=1)
    else:
        x = torch.cat(prefix + [x], dim=1) + t.pos_embed
    attentions, normed, outputs = [], [], [x]
    for blk in t.blocks:
        a = blk.attn
        N = x.shape[1]
        normed.append(blk.norm1(x))
        qkv = a.qkv(normed[-1]).reshape(1, N, 3, a.num_heads, a.head_dim)
        q, k, v = (qkv[:, :, i].transpose(1, 2) for i in range(3))
        q, k = a.q_norm(q), a.k_norm(k)
        A = torch.softmax(q @ k.transpose(-1, -2) * a.head_dim ** -0.5, dim=-1)
        x = x + blk.ls1(a.proj(a.norm((A @ v).transpose(1, 2).reshape(1, N, -1))))
        x = x + blk.ls2(blk.mlp.fc2(blk.mlp.norm(blk.mlp.act(blk.mlp.fc1(blk.norm2(x))))))
        attentions.append(A)
        outputs.append(x)
    return attentions, normed, outputs, (gh, gw), t.num_prefix_tokens


def score(t, tokens, target):
    pre = reference_pre_logits(t, tokens)[0]
    return t.head(pre)[target] if isinstance(target, int) else F.normalize(pre, dim=0) @ (target / target.norm())


def finish(grid_map, p):
    up = F.interpolate(grid_map[None, None], scale_factor=p, mode="bilinear")[0, 0]
    span = up.max() - up.min()
    return (up - up.min()) / span if span > 0 else torch.zeros_like(up)


def ref_similarity(t, image, target):
    _, _, outputs, grid, n = forward(t, image)
    x, blk = outputs[-2], t.blocks[-1]
    a = blk.attn
    C = x.shape[-1]
    v = F.linear(blk.norm1(x), a.qkv.weight[2 * C:], a.qkv.bias[2 * C:])  # each token attends to itself
    y = x + blk.ls1(a.proj(a.norm(v)))
    y = y + blk.ls2(blk.mlp(blk.norm2(y)))
    sims = torch.stack([F.normalize(t.fc_norm(t.norm(y[0, j])), dim=0) @ (target / target.norm())
                        for j in range(n, y.shape[1])])
    return finish(sims.reshape(grid), t.patch_embed.patch_size[0])


def ref_attention(t, image, target):
    attentions, _, _, grid, n = forward(t, image)
    return finish(attentions[-1][0, :, 0, n:].mean(dim=0).reshape(grid), t.patch_embed.patch_size[0])


def ref_rollout(t, image, target):
    attentions, _, _, grid, n = forward(t, image)
    N = attentions[0].shape[-1]
    R = torch.eye(N)
    for A in attentions:
        R = (0.5 * A[0].mean(dim=0) + 0.5 * torch.eye(N)) @ R
    return finish(R[0, n:].reshape(grid), t.patch_embed.patch_size[0])


def ref_gradcam(t, image, target):
    _, normed, outputs, grid, n = forward(t, image)
    acts = normed[-1]
    w = torch.autograd.grad(score(t, outputs[-1], target), acts)[0][0, n:].mean(dim=0)
    cam = torch.stack([torch.relu((acts[0, j] * w).sum()) for j in range(n, acts.shape[1])])
    return finish(cam.reshape(grid), t.patch_embed.patch_size[0])


def ref_chefercam(t, image, target):
    attentions, _, outputs, grid, n = forward(t, image)
    grads = torch.autograd.grad(score(t, outputs[-1], target), attentions)
    R = torch.eye(attentions[0].shape[-1])
    for A, G in zip(attentions, grads):
        R = R + (G[0] * A[0]).clamp(min=0).mean(dim=0) @ R
    return finish(R[0, n:].reshape(grid), t.patch_embed.patch_size[0])


REFS = {"similarity": ref_similarity, "attention": ref_attention, "rollout": ref_rollout,
        "gradcam": ref_gradcam, "chefercam": ref_chefercam}
CLASS_TOKEN = {"attention", "rollout", "chefercam"}  # read the class token's row


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("name", sorted(REFS))
def test_baselines_on_timm_equal_reference(variant, name):
    t = timm_vit(seed=3, **VARIANTS[variant])
    if name in CLASS_TOKEN and t.cls_token is None:
        with pytest.raises(UnsupportedModelError, match="no class token"):
            create_explainer(name, t)
        return
    torch.manual_seed(4)
    images, targets = torch.randn(2, 3, 32, 32), torch.randn(2, 2, 64)
    maps = create_explainer(name, t)(images, targets)
    ref = torch.stack([torch.stack([REFS[name](t, images[b:b + 1], targets[b, k]) for k in range(2)])
                       for b in range(2)])
    assert maps.shape == (2, 2, 32, 32) and (maps - ref).abs().max().item() < 1e-5
    if name in ("gradcam", "chefercam"):  # class targets: the model's own class logit
        classes = torch.tensor([[3, 9], [0, 5]])
        maps = create_explainer(name, t)(images, classes)
        ref = torch.stack([torch.stack([REFS[name](t, images[b:b + 1], int(classes[b, k])) for k in range(2)])
                           for b in range(2)])
        assert (maps - ref).abs().max().item() < 1e-5


def test_dense_similarity_refuses_class_targets_and_attention_pooled_models():
    with pytest.raises(ValueError, match="dense similarity compares embeddings"):
        create_explainer("similarity", timm_vit())(torch.randn(1, 3, 32, 32), torch.tensor([1]))
    with pytest.raises(UnsupportedModelError, match="attention-pooled model has no per-token embedding"):
        create_explainer("similarity", siglip_tower())
    maps = create_explainer("gradcam", siglip_tower())(torch.randn(1, 3, 32, 32), torch.randn(1, 64))
    assert maps.shape == (1, 32, 32) and torch.isfinite(maps).all()
