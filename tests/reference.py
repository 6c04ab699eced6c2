"""Slow, obvious references written from the definitions, shared by the tests and the speed
benchmarks: one image at a time, attention materialised, plain autograd."""
import torch
import torch.nn.functional as F
from timm.layers import resample_abs_pos_embed


def reference_forward(visual, image):
    """The ViT forward, written out, keeping every block's attention probabilities and output."""
    p = visual.patch_size[0]
    gh, gw = image.shape[-2] // p, image.shape[-1] // p
    x = visual.conv1(image).reshape(1, visual.conv1.out_channels, -1).permute(0, 2, 1)
    x = torch.cat([visual.class_embedding.view(1, 1, -1), x], dim=1)
    pos = visual.positional_embedding.unsqueeze(0)
    if (gh, gw) != tuple(visual.grid_size):
        pos = resample_abs_pos_embed(pos, new_size=[gh, gw], old_size=list(visual.grid_size),
                                     num_prefix_tokens=1, interpolation="bicubic", antialias=True)
    x = visual.ln_pre(x + pos)
    attentions, outputs, normed = [], [], []
    for blk in visual.transformer.resblocks:
        attn = blk.attn
        heads = attn.num_heads
        N, C = x.shape[1], x.shape[2]
        normed.append(blk.ln_1(x))
        q, k, v = F.linear(normed[-1], attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
        q, k, v = (t.reshape(1, N, heads, C // heads).permute(0, 2, 1, 3) for t in (q, k, v))
        if hasattr(attn, "ln_q"):
            q, k = attn.ln_q(q), attn.ln_k(k)
        A = torch.softmax(q @ k.transpose(-1, -2) / (C // heads) ** 0.5, dim=-1)  # [1, h, N, N]
        o = A @ v
        if getattr(attn, "head_scale", None) is not None:
            o = o * attn.head_scale
        o = o.permute(0, 2, 1, 3).reshape(1, N, C)
        if hasattr(attn, "ln_inner"):
            o = attn.ln_inner(o)
        o = attn.out_proj(o)
        if hasattr(blk, "ln_attn"):
            o = blk.ln_attn(o)
        x = x + blk.ls_1(o)
        x = x + blk.ls_2(blk.mlp(blk.ln_2(x)))
        attentions.append(A)
        outputs.append(x)
    return attentions, outputs, normed, (gh, gw)


def reference_legrad(visual, image, target, layer_index):
    """One image [1, 3, H, W], one target [D] -> map [H, W]."""
    L = len(visual.transformer.resblocks)
    first = layer_index if layer_index >= 0 else L + layer_index
    attentions, outputs, _, (gh, gw) = reference_forward(visual, image)
    t = target / target.norm()
    total = 0
    for layer in range(first, L):
        f = visual.ln_post(outputs[layer].mean(dim=1)) @ visual.proj
        s = (F.normalize(f, dim=-1) @ t).sum()
        g = torch.autograd.grad(s, attentions[layer], retain_graph=True)[0]
        e = g.clamp(min=0).mean(dim=1).mean(dim=1)[:, 1:].reshape(1, 1, gh, gw)
        total = total + F.interpolate(e, scale_factor=visual.patch_size[0], mode="bilinear")
    total = total[0, 0]
    return (total - total.min()) / (total.max() - total.min())


def reference_maps(model, images, targets, layer_index):
    """[B, K, H, W] by looping over images and targets."""
    return torch.stack([
        torch.stack([reference_legrad(model.visual, images[b:b + 1], targets[b, k], layer_index)
                     for k in range(targets.shape[1])])
        for b in range(images.shape[0])])


def _finish(total, patch):
    """[gh, gw] grid map -> upsampled by the patch size, min-max normalised (constant -> 0)."""
    up = F.interpolate(total[None, None], scale_factor=patch, mode="bilinear")[0, 0]
    span = up.max() - up.min()
    return (up - up.min()) / span if span > 0 else torch.zeros_like(up)


def reference_model_score(visual, outputs, target):
    """Cosine of the model's own (class-token) image embedding with the target."""
    f = visual.ln_post(outputs[-1])[:, 0] @ visual.proj
    return (F.normalize(f, dim=-1) @ (target / target.norm())).sum()


def reference_similarity(visual, image, target):
    """MaskCLIP: last block with each token attending only to itself; cosine per patch token."""
    _, outputs, _, (gh, gw) = reference_forward(visual, image)
    x = outputs[-2]  # tokens entering the last block
    blk = visual.transformer.resblocks[-1]
    C = x.shape[-1]
    v = F.linear(blk.ln_1(x), blk.attn.in_proj_weight[2 * C:], blk.attn.in_proj_bias[2 * C:])
    y = x + blk.ls_1(blk.attn.out_proj(v))
    y = y + blk.ls_2(blk.mlp(blk.ln_2(y)))
    t = target / target.norm()
    sims = torch.stack([F.normalize(visual.ln_post(y[0, j]) @ visual.proj, dim=-1) @ t
                        for j in range(1, y.shape[1])])
    return _finish(sims.reshape(gh, gw), visual.patch_size[0])


def reference_attention(visual, image, target):
    attentions, _, _, (gh, gw) = reference_forward(visual, image)
    return _finish(attentions[-1][0, :, 0, 1:].mean(dim=0).reshape(gh, gw), visual.patch_size[0])


def reference_rollout(visual, image, target):
    attentions, _, _, (gh, gw) = reference_forward(visual, image)
    N = attentions[0].shape[-1]
    rollout = torch.eye(N)
    for A in attentions:
        rollout = (0.5 * A[0].mean(dim=0) + 0.5 * torch.eye(N)) @ rollout
    return _finish(rollout[0, 1:].reshape(gh, gw), visual.patch_size[0])


def reference_gradcam(visual, image, target):
    attentions, outputs, normed, (gh, gw) = reference_forward(visual, image)
    acts = normed[-1]
    grad = torch.autograd.grad(reference_model_score(visual, outputs, target), acts)[0]
    weights = grad[0, 1:].mean(dim=0)
    cam = torch.stack([torch.relu((acts[0, j] * weights).sum()) for j in range(1, acts.shape[1])])
    return _finish(cam.reshape(gh, gw), visual.patch_size[0])


def reference_chefercam(visual, image, target):
    attentions, outputs, _, (gh, gw) = reference_forward(visual, image)
    grads = torch.autograd.grad(reference_model_score(visual, outputs, target), attentions)
    N = attentions[0].shape[-1]
    R = torch.eye(N)
    for A, G in zip(attentions, grads):
        Abar = (G[0] * A[0]).clamp(min=0).mean(dim=0)
        R = R + Abar @ R
    return _finish(R[0, 1:].reshape(gh, gw), visual.patch_size[0])


REFERENCES = {"similarity": reference_similarity, "attention": reference_attention,
              "rollout": reference_rollout, "gradcam": reference_gradcam, "chefercam": reference_chefercam}
