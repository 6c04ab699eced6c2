"""LeGrad on open_clip CoCa towers (attentional pooler), against open_clip's own forward and a slow
reference written here from the definition (the official code's rule: the gradient w.r.t. the
pooler's attention, first query, patch keys), attention materialised, per-layer autograd."""
import pytest
import torch
import torch.nn.functional as F

from avlegrad import LeGrad
from avlegrad.explain import create_explainer
from avlegrad.explain.adapters.coca import OpenCLIPCoCa
from avlegrad.explain.vit import adapter_for
from conftest import assert_model_unchanged, model_snapshot
from reference import reference_forward


def tiny_coca(seed=0, pool_type="tok"):
    import open_clip

    torch.manual_seed(seed)
    model = open_clip.CoCa(
        embed_dim=32,
        vision_cfg=dict(image_size=32, patch_size=8, width=64, layers=3, head_width=16, attentional_pool=True,
                        attn_pooler_heads=4, attn_pooler_queries=5, output_tokens=True, pool_type=pool_type),
        text_cfg=dict(context_length=16, vocab_size=100, width=32, heads=2, layers=1, embed_cls=True,
                      output_tokens=True),
        multimodal_cfg=dict(context_length=16, vocab_size=100, width=32, heads=2, layers=1, attn_pooler_heads=2),
    )
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not torch.isfinite(p).all() or p.abs().max() > 1e3:  # left as torch.empty by open_clip
                p.normal_(0, 0.02)  # (text_decoder.text_projection): garbage, sometimes NaN
            if name.endswith(".weight") and p.ndim == 1:
                p.copy_(1 + 0.3 * torch.randn_like(p))
            elif p.ndim == 1 or name.endswith("bias"):
                p.copy_(0.2 * torch.randn_like(p))
    return model.eval()


def reference_coca_legrad(visual, image, target, layer_index):
    _, outputs, _, (gh, gw) = reference_forward(visual, image)
    p = visual.attn_pool
    mha = p.attn
    E, h = mha.embed_dim, mha.num_heads
    bq, bk, bv = mha.in_proj_bias.chunk(3)
    L = len(outputs)
    total = 0
    for layer in range(layer_index % L, L):
        x = p.ln_k(outputs[layer].detach())
        q = (p.ln_q(p.query) @ mha.q_proj_weight.T + bq).reshape(1, -1, h, E // h).transpose(1, 2)
        k = (x @ mha.k_proj_weight.T + bk).reshape(1, -1, h, E // h).transpose(1, 2)
        v = (x @ mha.v_proj_weight.T + bv).reshape(1, -1, h, E // h).transpose(1, 2)
        A = torch.softmax(q @ k.transpose(-1, -2) / (E // h) ** 0.5, dim=-1)  # [1, heads, queries, N]
        # the official rule (compute_legrad_coca): no ln_post, the raw dot product with the target
        pooled = mha.out_proj((A @ v).transpose(1, 2).reshape(1, -1, E))
        f = (pooled[:, 0] if visual.pool_type == "tok" else pooled[:, 1:].mean(dim=1)) @ visual.proj
        s = f[0] @ (target / target.norm())
        g = torch.autograd.grad(s, A)[0].clamp(min=0)
        e = g.mean(dim=1)[0, 0, 1:].reshape(1, 1, gh, gw)  # heads' mean, first query, patch keys
        total = total + F.interpolate(e, scale_factor=visual.patch_size[0], mode="bilinear")
    total = total[0, 0]
    return (total - total.min()) / (total.max() - total.min())


@pytest.mark.parametrize("pool_type", ["tok", "avg"])
def test_replayed_forward_is_open_clips(pool_type):
    model = tiny_coca(pool_type=pool_type)
    vit = adapter_for(model)
    assert type(vit) is OpenCLIPCoCa and vit.embed_dim == 32
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        mine = vit.model_embedding(vit.tokens_before(images, vit.num_layers))
        torch.testing.assert_close(mine, model.encode_image(images, normalize=False), atol=1e-5, rtol=1e-5)


def test_legrad_matches_the_slow_reference():
    model = tiny_coca(seed=1)
    before = model_snapshot(model)
    images = torch.randn(2, 3, 32, 32)
    targets = torch.randn(2, 2, 32)
    maps = LeGrad(model, layer_index=-2)(images, targets)
    for b in range(2):
        for k in range(2):
            ref = reference_coca_legrad(model.visual, images[b:b + 1], targets[b, k], -2)
            torch.testing.assert_close(maps[b, k], ref, atol=1e-4, rtol=1e-4)
    assert_model_unchanged(before, model_snapshot(model))


@pytest.mark.parametrize("name", ["gradcam", "input_gradient"])
def test_baselines_defined_for_coca_run(name):
    model = tiny_coca(seed=2)
    maps = create_explainer(name, model)(torch.randn(1, 3, 32, 32), torch.randn(1, 32))
    assert maps.shape == (1, 32, 32) and 0 <= maps.min() and maps.max() <= 1


@pytest.mark.parametrize("name", ["attention", "rollout", "chefercam", "similarity"])
def test_baselines_undefined_for_coca_are_refused_with_a_reason(name):
    from avlegrad.explain import UnsupportedModelError

    with pytest.raises(UnsupportedModelError, match="not defined for"):
        create_explainer(name, tiny_coca())
