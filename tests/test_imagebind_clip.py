"""ImageBind's own image/text towers in open_clip's structure, against a reference forward written
here from ImageBind's definition (facebookresearch/ImageBind imagebind_model.py: PadIm2Video +
Conv3d stem, cls + learnt pos, pre-LN, SimpleTransformer blocks, LN -> token 0 -> Linear; text:
causal blocks, EOS token -> LN -> Linear), on random weights in its official layout."""
import pytest
import torch
import torch.nn.functional as F

from avlegrad import LeGrad
from avlegrad.audio.factory import CheckpointError
from avlegrad.audio.imagebind_clip import imagebind_clip

W, LAYERS, HEADS, PATCH, GRID, OUT = 32, 2, 4, 8, 4, 16
TW, TLAYERS, CTX, VOCAB = 32, 2, 7, 50


def official_state(seed=0):
    """A random state dict with imagebind_huge's vision/text key names, tiny shapes."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s, scale=0.2: scale * torch.randn(*s, generator=g)  # noqa: E731
    ln = lambda n: 1 + r(n)  # noqa: E731
    sd = {"modality_preprocessors.vision.rgbt_stem.proj.1.weight": r(W, 3, 2, PATCH, PATCH, scale=0.1),
          "modality_preprocessors.vision.cls_token": r(1, 1, W),
          "modality_preprocessors.vision.pos_embedding_helper.pos_embed": r(1, 1 + GRID * GRID, W),
          "modality_trunks.vision.pre_transformer_layer.0.weight": ln(W),
          "modality_trunks.vision.pre_transformer_layer.0.bias": r(W),
          "modality_heads.vision.0.weight": ln(W), "modality_heads.vision.0.bias": r(W),
          "modality_heads.vision.2.weight": r(OUT, W),
          "modality_preprocessors.text.token_embedding.weight": r(VOCAB, TW),
          "modality_preprocessors.text.pos_embed": r(1, CTX, TW),
          "modality_preprocessors.text.mask": torch.full((CTX, CTX), float("-inf")).triu(1),
          "modality_heads.text.proj.0.weight": ln(TW), "modality_heads.text.proj.0.bias": r(TW),
          "modality_heads.text.proj.1.weight": r(OUT, TW),
          "modality_postprocessors.text.1.log_logit_scale": torch.tensor(2.5),
          # another modality, ignored
          "modality_trunks.audio.blocks.0.norm_1.weight": ln(8)}
    for tower, width, layers in (("vision", W, LAYERS), ("text", TW, TLAYERS)):
        for i in range(layers):
            p = f"modality_trunks.{tower}.blocks.{i}."
            sd.update({p + "attn.in_proj_weight": r(3 * width, width), p + "attn.in_proj_bias": r(3 * width),
                       p + "attn.out_proj.weight": r(width, width), p + "attn.out_proj.bias": r(width),
                       p + "norm_1.weight": ln(width), p + "norm_1.bias": r(width),
                       p + "norm_2.weight": ln(width), p + "norm_2.bias": r(width),
                       p + "mlp.fc1.weight": r(4 * width, width), p + "mlp.fc1.bias": r(4 * width),
                       p + "mlp.fc2.weight": r(width, 4 * width), p + "mlp.fc2.bias": r(width)})
    return sd


def ref_blocks(sd, prefix, x, layers, heads, mask=None):
    """ImageBind's BlockWithMasking stack written out (batch-first here; attention per head)."""
    B, N, C = x.shape
    d = C // heads
    for i in range(layers):
        p = f"{prefix}blocks.{i}."
        h = F.layer_norm(x, (C,), sd[p + "norm_1.weight"], sd[p + "norm_1.bias"], eps=1e-6)
        q, k, v = (h @ sd[p + "attn.in_proj_weight"].T + sd[p + "attn.in_proj_bias"]).chunk(3, dim=-1)
        q, k, v = (t.reshape(B, N, heads, d).transpose(1, 2) for t in (q, k, v))
        logits = q @ k.transpose(-1, -2) / d ** 0.5
        if mask is not None:
            logits = logits + mask
        o = (logits.softmax(-1) @ v).transpose(1, 2).reshape(B, N, C)
        x = x + o @ sd[p + "attn.out_proj.weight"].T + sd[p + "attn.out_proj.bias"]
        h = F.layer_norm(x, (C,), sd[p + "norm_2.weight"], sd[p + "norm_2.bias"], eps=1e-6)
        x = x + F.gelu(h @ sd[p + "mlp.fc1.weight"].T + sd[p + "mlp.fc1.bias"]) @ sd[p + "mlp.fc2.weight"].T \
            + sd[p + "mlp.fc2.bias"]
    return x


def ref_vision(sd, images):
    video = images.unsqueeze(2).repeat(1, 1, 2, 1, 1)  # PadIm2Video(repeat, ntimes=2)
    x = F.conv3d(video, sd["modality_preprocessors.vision.rgbt_stem.proj.1.weight"], stride=(2, PATCH, PATCH))
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat([sd["modality_preprocessors.vision.cls_token"].expand(len(x), -1, -1), x], dim=1)
    x = x + sd["modality_preprocessors.vision.pos_embedding_helper.pos_embed"]
    x = F.layer_norm(x, (W,), sd["modality_trunks.vision.pre_transformer_layer.0.weight"],
                     sd["modality_trunks.vision.pre_transformer_layer.0.bias"], eps=1e-6)
    x = ref_blocks(sd, "modality_trunks.vision.", x, LAYERS, HEADS)
    x = F.layer_norm(x, (W,), sd["modality_heads.vision.0.weight"], sd["modality_heads.vision.0.bias"], eps=1e-6)
    return F.normalize(x[:, 0] @ sd["modality_heads.vision.2.weight"].T, dim=-1)


def ref_text(sd, tokens):
    x = sd["modality_preprocessors.text.token_embedding.weight"][tokens] + sd["modality_preprocessors.text.pos_embed"]
    x = ref_blocks(sd, "modality_trunks.text.", x, TLAYERS, HEADS, mask=sd["modality_preprocessors.text.mask"])
    x = x[torch.arange(len(x)), tokens.argmax(dim=-1)]  # SelectEOSAndProject
    x = F.layer_norm(x, (TW,), sd["modality_heads.text.proj.0.weight"], sd["modality_heads.text.proj.0.bias"],
                     eps=1e-6)
    return F.normalize(x @ sd["modality_heads.text.proj.1.weight"].T, dim=-1)


def test_towers_equal_imagebinds_forward():
    sd = official_state()
    model = imagebind_clip(sd, vision_heads=HEADS, text_heads=HEADS)
    images = torch.randn(3, 3, GRID * PATCH, GRID * PATCH)
    tokens = torch.randint(1, VOCAB - 1, (2, CTX))
    tokens[0, 4], tokens[1, 6] = VOCAB - 1, VOCAB - 1  # the EOS token: the largest id
    with torch.no_grad():
        ours_img = F.normalize(model.encode_image(images), dim=-1)
        ours_txt = F.normalize(model.encode_text(tokens), dim=-1)
    torch.testing.assert_close(ours_img, ref_vision(sd, images), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours_txt, ref_text(sd, tokens), atol=1e-5, rtol=1e-5)
    assert model.logit_scale.item() == pytest.approx(2.5)
    for m in model.modules():  # every LayerNorm has ImageBind's eps
        if isinstance(m, torch.nn.LayerNorm):
            assert m.eps == 1e-6
    # the folded stem is not the 3-D kernel's first frame (the fold is really a sum)
    first_frame = sd["modality_preprocessors.vision.rgbt_stem.proj.1.weight"][:, :, 0]
    assert not torch.allclose(model.visual.conv1.weight, first_frame)


def test_legrad_explains_imagebinds_tower():
    model = imagebind_clip(official_state(1), vision_heads=HEADS, text_heads=HEADS)
    maps = LeGrad(model)(torch.randn(2, 3, 32, 32), torch.randn(2, OUT))
    assert maps.shape == (2, 32, 32) and maps.min() >= 0 and maps.max() <= 1


def test_bad_files_are_named(tmp_path):
    sd = official_state()
    with pytest.raises(CheckpointError, match="no ImageBind vision weights"):
        imagebind_clip({"visual.conv1.weight": torch.zeros(1)}, source="x.pth")
    broken = {k: v for k, v in sd.items() if "heads.vision.2" not in k}
    with pytest.raises(CheckpointError, match="modality_heads.vision.2.weight"):
        imagebind_clip(broken, source="x.pth")


def test_load_clip_reads_an_imagebind_file_and_tag(tmp_path, monkeypatch):
    """``load_clip("ViT-H-14", <imagebind_huge.pth>)`` builds ImageBind's towers (16 heads, as huge)."""
    from avlegrad.audio import imagebind_clip as module
    from avlegrad.models import load_clip

    sd = official_state(2)
    path = tmp_path / "imagebind_huge.pth"
    torch.save(sd, path)
    model, cfg = load_clip("ViT-H-14", str(path))
    assert cfg["size"] == (32, 32) and cfg["mean"][0] == pytest.approx(0.48145466)
    assert not any(p.requires_grad for p in model.parameters())
    images = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        want = F.normalize(imagebind_clip(sd).encode_image(images), dim=-1)
        torch.testing.assert_close(F.normalize(model.encode_image(images), dim=-1), want)
    # the tag: the cached official file (here, our tiny one)
    monkeypatch.setattr("avlegrad.download.pretrained_weights_file", lambda *a, **k: path)
    tagged, _ = load_clip("ViT-H-14", "imagebind")
    with torch.no_grad():
        torch.testing.assert_close(F.normalize(tagged.encode_image(images), dim=-1), want)
    assert module.IMAGEBIND_TAG == "imagebind"


def test_tower_comparison_script(tmp_path):
    """benchmarks/imagebind_vs_laion2b.py on two tiny towers: identical files agree exactly, others not."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "ib_vs_laion", Path(__file__).resolve().parents[1] / "benchmarks" / "imagebind_vs_laion2b.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    a, b = tmp_path / "a.pth", tmp_path / "b.pth"
    torch.save(official_state(3), a)
    torch.save(official_state(4), b)
    same = script.main(["--imagebind", str(a), "--laion2b", str(a), "--out", str(tmp_path / "r.json")])
    assert same["weights"]["max"] == 0 and same["embeddings"]["cosine_min"] == pytest.approx(1, abs=1e-6)
    assert same["maps"]["legrad_map_max_abs_diff"] == 0 and (tmp_path / "r.json").is_file()
    other = script.main(["--imagebind", str(a), "--laion2b", str(b)])
    assert other["weights"]["max"] > 0 and other["embeddings"]["cosine_mean"] < 0.999
    # a weight file that is not there: one line naming it, no traceback (exit status 1)
    with pytest.raises(SystemExit) as exit_:
        script.main(["--imagebind", str(tmp_path / "missing.pth"), "--laion2b", str(a)])
    assert str(exit_.value).startswith("imagebind_vs_laion2b: ") and "missing.pth" in str(exit_.value)
    assert torch.is_grad_enabled()  # the caller's autograd state is left as it was
