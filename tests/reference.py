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


def reference_legrad(visual, image, target, layer_index, **switches):
    """One image [1, 3, H, W], one target [D] -> map [H, W] (the ablation switches: see
    :func:`reference_legrad_parts`)."""
    return reference_legrad_parts(visual, image, target, layer_index, **switches)[0]


def reference_legrad_parts(visual, image, target, layer_index, layers=None, score_tokens="all", relu=True,
                           head_aggregation="mean", layer_aggregation="sum"):
    """LeGrad and its ablations, written out: (final map [H, W], per-layer maps upsampled and not
    normalised [L, H, W], per-head grid maps [L, heads, gh, gw]).

    score_tokens: the layer embedding reads the mean of all tokens / the class token / the
    patches' mean; relu: ReLU on dS/dA; head_aggregation: mean / max over heads of the mean over
    queries; layer_aggregation: sum of the upsampled layer maps, or rollout-style product
    R = (I + E_last) ... (I + E_first), E the head-aggregated [N, N] gradient, map = mean over
    query rows of R at the patch keys."""
    L = len(visual.transformer.resblocks)
    first = layer_index if layer_index >= 0 else L + layer_index
    chosen = sorted({i % L for i in layers}) if layers is not None else list(range(first, L))
    attentions, outputs, _, (gh, gw) = reference_forward(visual, image)
    t = target / target.norm()
    N = attentions[0].shape[-1]
    total, layer_maps, head_maps = 0, [], []
    rollout = torch.eye(N)
    for layer in chosen:
        Z = outputs[layer]
        pooled = {"all": Z.mean(dim=1), "cls": Z[:, 0], "patches": Z[:, 1:].mean(dim=1)}[score_tokens]
        f = visual.ln_post(pooled) @ visual.proj
        s = (F.normalize(f, dim=-1) @ t).sum()
        g = torch.autograd.grad(s, attentions[layer], retain_graph=True)[0][0]  # [heads, N, N]
        if relu:
            g = g.clamp(min=0)
        per_head = g.mean(dim=1)[:, 1:]  # mean over queries, patch keys: [heads, patches]
        head_maps.append(per_head.reshape(-1, gh, gw))
        e = per_head.mean(dim=0) if head_aggregation == "mean" else per_head.max(dim=0).values
        up = F.interpolate(e.reshape(1, 1, gh, gw), scale_factor=visual.patch_size[0], mode="bilinear")[0, 0]
        layer_maps.append(up)
        total = total + up
        E = g.mean(dim=0) if head_aggregation == "mean" else g.max(dim=0).values  # [N, N]
        rollout = (torch.eye(N) + E) @ rollout
    if layer_aggregation == "product":
        final = _finish(rollout.mean(dim=0)[1:].reshape(gh, gw), visual.patch_size[0])
    else:
        span = total.max() - total.min()
        final = (total - total.min()) / span if span > 0 else torch.zeros_like(total)
    return final, torch.stack(layer_maps), torch.stack(head_maps)


def reference_maps(model, images, targets, layer_index, **switches):
    """[B, K, H, W] by looping over images and targets."""
    return torch.stack([
        torch.stack([reference_legrad(model.visual, images[b:b + 1], targets[b, k], layer_index, **switches)
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
