"""LeGrad on Hugging Face ``transformers`` CLIP and SigLIP (tiny random configs, offline), against
transformers' own forward (replayed forward) and a slow reference written here from the
definition (attention materialised, per-layer autograd). Targets come from get_text_features."""
import pytest
import torch
import torch.nn.functional as F

transformers = pytest.importorskip("transformers")

from avlegrad import LeGrad  # noqa: E402
from avlegrad.explain.adapters.hf import HFCLIPViT, HFSiglipViT  # noqa: E402
from avlegrad.explain.vit import UnsupportedModelError, adapter_for  # noqa: E402
from conftest import assert_model_unchanged, model_snapshot  # noqa: E402

VISION = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4, image_size=32,
              patch_size=8)
TEXT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, vocab_size=99,
            max_position_embeddings=16)


def randomise(model, seed):
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1 and "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.3 * torch.randn_like(p))
            elif p.ndim == 1:
                p.copy_(0.2 * torch.randn_like(p))
            else:
                p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def hf_clip(seed=0, cls="CLIPModel"):
    from transformers import CLIPConfig

    torch.manual_seed(seed)
    cfg = CLIPConfig(vision_config=VISION, text_config=TEXT, projection_dim=16)
    model = getattr(transformers, cls)(cfg if cls == "CLIPModel" else cfg.vision_config)
    return randomise(model, seed)


def hf_siglip(seed=0, cls="SiglipModel"):
    from transformers import SiglipConfig

    torch.manual_seed(seed)
    cfg = SiglipConfig(vision_config=VISION, text_config={**TEXT, "hidden_size": 64, "projection_size": 64})
    model = getattr(transformers, cls)(cfg if cls == "SiglipModel" else cfg.vision_config)
    return randomise(model, seed)


def features(out):
    """transformers >= 5 returns an output object from get_*_features; older versions a tensor."""
    return out if torch.is_tensor(out) else out.pooler_output


# ------------------------------------------------------------------ reference
def reference_tokens(vision, image, prefix):
    emb = vision.embeddings
    p = emb.patch_size
    x = F.conv2d(image, emb.patch_embedding.weight, emb.patch_embedding.bias, stride=p).flatten(2).transpose(1, 2)
    if prefix:
        x = torch.cat([emb.class_embedding.view(1, 1, -1), x], dim=1)
    x = x + emb.position_embedding.weight
    if prefix:
        x = vision.pre_layrnorm(x)
    attentions, outputs = [], []
    for layer in vision.encoder.layers:
        a = layer.self_attn
        h = layer.layer_norm1(x)
        N = h.shape[1]
        q, k, v = (lin(h).reshape(1, N, a.num_heads, -1).transpose(1, 2) for lin in (a.q_proj, a.k_proj, a.v_proj))
        A = torch.softmax(q @ k.transpose(-1, -2) / a.head_dim ** 0.5, dim=-1)
        x = x + a.out_proj((A @ v).transpose(1, 2).reshape(1, N, -1))
        x = x + layer.mlp(layer.layer_norm2(x))
        attentions.append(A)
        outputs.append(x)
    return attentions, outputs


def reference_clip_legrad(model, image, target, layer_index):
    vision = model.vision_model
    attentions, outputs = reference_tokens(vision, image, prefix=True)
    g_side = image.shape[-1] // vision.embeddings.patch_size
    L = len(outputs)
    total = 0
    for layer in range(layer_index % L, L):
        f = model.visual_projection(vision.post_layernorm(outputs[layer].mean(dim=1)))
        s = F.normalize(f, dim=-1)[0] @ (target / target.norm())
        g = torch.autograd.grad(s, attentions[layer], retain_graph=True)[0].clamp(min=0)
        e = g.mean(dim=(1, 2))[:, 1:].reshape(1, 1, g_side, g_side)
        total = total + F.interpolate(e, scale_factor=vision.embeddings.patch_size, mode="bilinear")
    total = total[0, 0]
    return (total - total.min()) / (total.max() - total.min())


def reference_siglip_legrad(model, image, target, layer_index):
    vision = model.vision_model
    head = vision.head
    _, outputs = reference_tokens(vision, image, prefix=False)
    g_side = image.shape[-1] // vision.embeddings.patch_size
    L = len(outputs)
    total = 0
    for layer in range(layer_index % L, L):
        x = outputs[layer].detach()  # the pooler over this block's tokens (no final norm), as official
        mha = head.attention
        C = x.shape[-1]
        h, d = mha.num_heads, C // mha.num_heads
        W, b = mha.in_proj_weight, mha.in_proj_bias
        q = (head.probe @ W[:C].T + b[:C]).reshape(1, 1, h, d).transpose(1, 2)
        k = (x @ W[C:2 * C].T + b[C:2 * C]).reshape(1, -1, h, d).transpose(1, 2)
        v = (x @ W[2 * C:].T + b[2 * C:]).reshape(1, -1, h, d).transpose(1, 2)
        A = torch.softmax(q @ k.transpose(-1, -2) / d ** 0.5, dim=-1)
        y = mha.out_proj((A @ v).transpose(1, 2).reshape(1, 1, C))
        y = (y + head.mlp(head.layernorm(y)))[:, 0]
        s = F.normalize(y, dim=-1)[0] @ (target / target.norm())
        g = torch.autograd.grad(s, A)[0].clamp(min=0)
        e = g.mean(dim=1)[:, 0].reshape(1, 1, g_side, g_side)
        total = total + F.interpolate(e, scale_factor=vision.embeddings.patch_size, mode="bilinear")
    total = total[0, 0]
    return (total - total.min()) / (total.max() - total.min())


# ------------------------------------------------------------------ tests
@pytest.mark.parametrize("build, cls, family", [
    (hf_clip, "CLIPModel", HFCLIPViT), (hf_clip, "CLIPVisionModel", HFCLIPViT),
    (hf_clip, "CLIPVisionModelWithProjection", HFCLIPViT),
    (hf_siglip, "SiglipModel", HFSiglipViT), (hf_siglip, "SiglipVisionModel", HFSiglipViT)])
def test_replayed_forward_is_transformers_forward(build, cls, family):
    model = build(cls=cls)
    vit = adapter_for(model)
    assert type(vit) is family
    for size in ((32, 32), (48, 24)):  # another size: the model's own interpolate_pos_encoding
        images = torch.randn(2, 3, *size)
        with torch.no_grad():
            x = vit.tokens_before(images, vit.num_layers)
            mine = vit.model_embedding(x)
            kw = dict(interpolate_pos_encoding=size != (32, 32))
            if hasattr(model, "get_image_features"):
                want = features(model.get_image_features(pixel_values=images, **kw))
            else:
                out = model(pixel_values=images, **kw)
                want = out.image_embeds if hasattr(out, "image_embeds") else out.pooler_output
        assert mine.shape[-1] == vit.embed_dim
        torch.testing.assert_close(mine, want, atol=1e-5, rtol=1e-5)


def test_clip_legrad_matches_the_slow_reference_with_text_targets():
    model = hf_clip(seed=1)
    before = model_snapshot(model)
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        targets = features(model.get_text_features(input_ids=torch.randint(0, 99, (4, 6)))).reshape(2, 2, -1)
    maps = LeGrad(model)(images, targets)  # the same call as for every family
    for b in range(2):
        for k in range(2):
            torch.testing.assert_close(maps[b, k], reference_clip_legrad(model, images[b:b + 1], targets[b, k], -2),
                                       atol=1e-4, rtol=1e-4)
    assert_model_unchanged(before, model_snapshot(model))


def test_siglip_legrad_matches_the_slow_reference_with_text_targets():
    model = hf_siglip(seed=2)
    before = model_snapshot(model)
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        targets = features(model.get_text_features(input_ids=torch.randint(0, 99, (2, 6))))
    maps = LeGrad(model, layer_index=0)(images, targets)
    for b in range(2):
        torch.testing.assert_close(maps[b], reference_siglip_legrad(model, images[b:b + 1], targets[b], 0),
                                   atol=1e-4, rtol=1e-4)
    assert_model_unchanged(before, model_snapshot(model))


def test_other_transformers_models_are_refused():
    from transformers import BertConfig, BertModel

    bert = BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64))
    with pytest.raises(UnsupportedModelError,
                       match=r"cannot explain a transformers\..*BertModel\. Supported: .*SiglipModel"):
        LeGrad(bert)
