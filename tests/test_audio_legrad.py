"""LeGrad on the sound (avlegrad.explain.audio) against slow references written from the definition.

The references run the encoder's own modules up to the explained block, write that block's
attention out from its definition (timm's Attention; nn.MultiheadAttention with add_bias_kv as
PyTorch documents it) with the attention matrix as a leaf, score one layer and one waveform at a
time with autograd.grad, and map every patch back onto the spectrogram by explicit loops over
its receptive field (and every clip's frames onto the waveform's frames by a loop).
"""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from avlegrad.audio.imagebind import ImageBindAudioEncoder
from avlegrad.audio.timm_encoder import TimmAudioEncoder
from avlegrad.explain.audio import AudioLeGrad, PatchLayout, grid_to_input, place_clips
from avlegrad.explain.vit import UnsupportedModelError
from tests.conftest import assert_model_unchanged, model_snapshot

VIT = dict(backbone="vit_tiny_patch16_224", embed_dim=24, head="mlp", dropout=0.5, sample_rate=16000,
           frontend={"n_fft": 512, "hop_length": 160, "n_mels": 32},
           backbone_kwargs={"img_size": [32, 48], "patch_size": [8, 8], "embed_dim": 32, "depth": 3,
                            "num_heads": 4, "dynamic_img_size": True, "dynamic_img_pad": True},
           clip_model=None, clip_pretrained=None)


def _perturb(model, seed):
    """Random weights of a usable scale (timm's init is nearly an identity at this size)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=g))
    return model


def timm_vit(seed=0, patch_size=(8, 8)):
    torch.manual_seed(seed)
    kwargs = dict(VIT, backbone_kwargs=dict(VIT["backbone_kwargs"], patch_size=list(patch_size)))
    return _perturb(TimmAudioEncoder(**kwargs), seed).eval()


def imagebind_small(seed=0):
    """ImageBind's audio tower in the official layout (128 mel x 204 frames, 16 x 16 patches at
    stride 10, bias_kv, head, L2 x 20, 3 clips of 2 s), narrowed so the slow reference is quick."""
    torch.manual_seed(seed)
    return _perturb(ImageBindAudioEncoder(embed_dim=16, width=32, depth=2, heads=4, drop_path=0.1), seed).eval()


def slow_input_map(grid, kernel, stride, size):
    """Each patch's relevance over its receptive field, each bin the mean over covering patches."""
    gh, gw = grid.shape
    (kh, kw), (sh, sw) = kernel, stride
    acc = np.zeros(((gh - 1) * sh + kh, (gw - 1) * sw + kw))
    cnt = np.zeros_like(acc)
    for i in range(gh):
        for j in range(gw):
            acc[i * sh:i * sh + kh, j * sw:j * sw + kw] += float(grid[i, j])
            cnt[i * sh:i * sh + kh, j * sw:j * sw + kw] += 1
    out = np.zeros(size)
    h, w = min(size[0], acc.shape[0]), min(size[1], acc.shape[1])
    with np.errstate(invalid="ignore"):
        out[:h, :w] = np.where(cnt[:h, :w] > 0, acc[:h, :w] / np.maximum(cnt[:h, :w], 1), 0)
    return out


def min_max(m):
    lo, hi = m.min(), m.max()
    return (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)


def reference_timm(enc, wave, target, layers):
    bb = enc.backbone
    spec = enc.frontend(wave[None])  # [1, 1, F, T]
    size = tuple(spec.shape[-2:])
    x0 = bb.patch_embed(spec)  # timm's own patch embedding (pads the frames), NHWC
    gh, gw = x0.shape[1:3]
    x0 = bb.norm_pre(bb._pos_embed(x0))
    total = torch.zeros(gh, gw, dtype=torch.float64)
    for layer in layers:
        x = x0
        for blk in bb.blocks[:layer]:
            x = blk(x)
        blk, a = bb.blocks[layer], bb.blocks[layer].attn
        h = blk.norm1(x)
        B, N, C = h.shape
        q, k, v = a.qkv(h).reshape(B, N, 3, a.num_heads, C // a.num_heads).permute(2, 0, 3, 1, 4)
        A = torch.softmax(q @ k.transpose(-1, -2) * a.scale, dim=-1).detach().requires_grad_(True)
        y = x + a.proj((A @ v).transpose(1, 2).reshape(B, N, C))
        y = y + blk.mlp(blk.norm2(y))
        emb = enc.head(bb.forward_head(bb.norm(y)))
        s = F.cosine_similarity(emb, target[None]).sum()
        (g,) = torch.autograd.grad(s, A)
        total += g.double().clamp(min=0).mean(dim=(1, 2))[0, 1:].reshape(gh, gw)
    kernel = tuple(bb.patch_embed.proj.kernel_size)
    return min_max(slow_input_map(total.numpy(), kernel, kernel, size))


def test_grid_to_input_matches_loops():
    g = torch.rand(2, 3, 5, 7)
    for kernel, stride, size in (((4, 4), (4, 4), (20, 30)), ((16, 16), (10, 10), (60, 75)), ((3, 5), (2, 3), (9, 20))):
        layout = PatchLayout(kernel, stride, (5, 7), size, size)
        fast = grid_to_input(g, layout)
        for b in range(2):
            for k in range(3):
                ref = slow_input_map(g[b, k].numpy(), kernel, stride, size)
                np.testing.assert_allclose(fast[b, k].numpy(), ref, atol=1e-6)


@pytest.mark.parametrize("layer_index,patch_size", [(-2, (8, 8)), (0, (8, 8)), (-2, (8, 4)), (0, (16, 2))])
def test_timm_audio_vit_matches_reference(layer_index, patch_size):
    """Square and narrow time patches (8 mel x 4 frames = 40 ms, 16 mel x 2 frames = 20 ms)."""
    enc = timm_vit(patch_size=patch_size)
    torch.manual_seed(1)
    waves = torch.randn(2, 5000) * 0.3  # 32 frames: the 8-frame patches tile it after padding to 32? 1 + 5000 // 160 = 32
    waves = torch.cat([waves, torch.randn(2, 300)], dim=1)  # 34 frames: padded to 40 as timm pads
    targets = torch.randn(2, 2, 24)
    before = model_snapshot(enc)
    explainer = AudioLeGrad(enc, layer_index=layer_index)
    out = explainer.explain_waveforms(waves, targets)
    assert_model_unchanged(before, model_snapshot(enc))
    assert out.maps.shape == (2, 2, 32, 34) and out.curve.shape == (2, 2, 34)
    layers = explainer.layer_ids
    for b in range(2):
        for k in range(2):
            ref = reference_timm(enc, waves[b], targets[b, k], layers)
            np.testing.assert_allclose(out.maps[b, k].numpy(), ref, atol=2e-5)
            np.testing.assert_allclose(out.curve[b, k].numpy(), ref.mean(axis=0), atol=2e-5)
    # the spectrogram interface gives the same maps; one target per input drops the K axis
    specs = enc.frontend(waves)
    np.testing.assert_allclose(explainer(specs, targets[:, 0]).numpy(), out.maps[:, 0].numpy(), atol=1e-6)
    # dropout in the head is never applied, whatever the mode; the mode is left as it was
    enc.train()
    before = model_snapshot(enc)
    np.testing.assert_allclose(explainer(specs, targets[:, 0]).numpy(), out.maps[:, 0].numpy(), atol=1e-6)
    assert_model_unchanged(before, model_snapshot(enc))
    # under no_grad / inference_mode too
    with torch.inference_mode():
        np.testing.assert_allclose(explainer(specs, targets[:, 0]).numpy(), out.maps[:, 0].numpy(), atol=1e-6)


def reference_imagebind(enc, wave, target, layers):
    clips = enc.preprocess(wave[None])[0]  # [3, 1, 128, 204], ImageBind's own preprocessing
    tokens = enc.preprocessor(clips)  # [3, L, D]
    gh, gw = enc.preprocessor.grid
    S = clips.shape[0]
    total = torch.zeros(S, gh * gw, dtype=torch.float64)
    for layer in layers:
        x = tokens.transpose(0, 1)  # the blocks are sequence-first
        for blk in enc.trunk.blocks[:layer]:
            x = blk(x)
        x = x.transpose(0, 1)
        blk, at = enc.trunk.blocks[layer], enc.trunk.blocks[layer].attn
        h = blk.norm_1(x)
        D, H = h.shape[-1], at.num_heads
        W, bias = at.in_proj_weight, at.in_proj_bias
        q, k, v = (h @ W[i * D:(i + 1) * D].T + bias[i * D:(i + 1) * D] for i in range(3))
        k = torch.cat([k, at.bias_k.reshape(1, 1, D).expand(S, 1, D)], dim=1)  # add_bias_kv: one more key
        v = torch.cat([v, at.bias_v.reshape(1, 1, D).expand(S, 1, D)], dim=1)
        d = D // H
        probs = []
        for head in range(H):
            qh, kh = q[..., head * d:(head + 1) * d], k[..., head * d:(head + 1) * d]
            probs.append(torch.softmax(qh @ kh.transpose(-1, -2) / math.sqrt(d), dim=-1))
        A = torch.stack(probs, dim=1).detach().requires_grad_(True)  # [S, H, L, L + 1]
        o = torch.cat([A[:, head] @ v[..., head * d:(head + 1) * d] for head in range(H)], dim=-1)
        y = x + at.out_proj(o)
        y = y + blk.mlp(blk.norm_2(y))
        emb = enc.postprocessor(enc.head(y)).mean(dim=0)  # the waveform's embedding: mean of its clips
        s = F.cosine_similarity(emb, target, dim=0)
        (g,) = torch.autograd.grad(s, A)
        total += g.double().clamp(min=0).mean(dim=(1, 2))[:, 1:1 + gh * gw]
    clip_maps = [slow_input_map(total[c].reshape(gh, gw).numpy(), (16, 16), (10, 10), (128, 204)) for c in range(S)]
    # each clip's frames at their seconds: Kaldi frame f of a clip starting at sample s is centred
    # on s + 200 + 160 f; nearest waveform frame (frame j at sample 160 j); overlaps averaged
    from avlegrad.audio.imagebind import imagebind_clip_bounds

    n = 1 + wave.shape[0] // 160
    acc, cnt = np.zeros((128, n)), np.zeros(n)
    for c, (start, end) in enumerate(imagebind_clip_bounds(wave.shape[0])):
        for f in range(min(1 + (end - start - 400) // 160, 204)):
            j = int(math.floor((start + 200 + 160 * f) / 160 + 0.5))
            if j < n:
                acc[:, j] += clip_maps[c][:, f]
                cnt[j] += 1
    placed = np.where(cnt > 0, acc / np.maximum(cnt, 1), 0)
    return min_max(placed), clip_maps


def test_imagebind_audio_tower_matches_reference():
    enc = imagebind_small()
    torch.manual_seed(2)
    waves = torch.randn(1, 5 * 16000) * 0.1
    target = torch.randn(1, 16)
    before = model_snapshot(enc)
    explainer = AudioLeGrad(enc, layer_index=0)
    out = explainer.explain_waveforms(waves, target)
    assert_model_unchanged(before, model_snapshot(enc))
    assert out.maps.shape == (1, 128, 501) and out.clips.shape == (1, 3, 128, 204)
    assert out.clip_bounds == [(0, 32000), (24000, 56000), (48000, 80000)]
    ref, ref_clips = reference_imagebind(enc, waves[0], target[0], explainer.layer_ids)
    np.testing.assert_allclose(out.maps[0].numpy(), ref, atol=2e-5)
    scale = max(float(np.abs(c).max()) for c in ref_clips)
    for c in range(3):
        np.testing.assert_allclose(out.clips[0, c].numpy() / scale, ref_clips[c] / scale, atol=2e-5)


def test_imagebind_clips_land_at_their_seconds():
    """A 5 s waveform loud only in its fourth second: ImageBind's 3 clips (0-2 s, 1.5-3.5 s, 3-5 s)
    see it at different frames of their own; placed on the waveform's axis, every clip's loud
    frames (its own fbank) and the LeGrad maps of the clips that hold it land in 3-4 s."""
    enc = imagebind_small()
    sr = 16000
    t = torch.arange(5 * sr) / sr
    wave = 0.001 * torch.randn(5 * sr, generator=torch.Generator().manual_seed(0))
    wave = wave + torch.where((t >= 3) & (t < 4), 0.5 * torch.sin(2 * math.pi * 440 * t), torch.zeros_like(t))
    explainer = AudioLeGrad(enc, layer_index=0)
    ad = explainer.adapter
    specs, bounds, frames = ad.clips(wave[None])
    n = 1 + wave.shape[0] // 160
    times = torch.arange(n) * 160 / sr
    loud = specs[0, :, 0].mean(dim=1)[:, :frames[0]]  # [3, 198]: each clip's loudness per real frame
    threshold = loud[0].median() + 0.1  # clip 1 (0-2 s) holds only the faint noise: its level, plus a margin
    for c in range(3):  # one clip at a time, alone on the waveform's axis
        only = torch.zeros(1, 3, 1, 1, 204)
        only[0, c, 0, 0, :frames[c]] = (loud[c] > threshold).float()
        placed = place_clips(only, bounds, frames, ad.hop, ad.frame_offset, n)[0, 0, 0]
        on = times[placed > 0]  # (averaged with the other clips where they overlap)
        if c == 0:
            assert len(on) == 0  # the first clip (0-2 s) never hears it
        else:
            assert len(on) > 40 and on.min() >= 2.97 and on.max() <= 4.03, (c, on.min(), on.max())
    # the LeGrad maps of the 3 clips, placed: frames outside every clip's reach are 0, and the
    # waveform's map at 3-4 s comes from clips 2 and 3 (averaged), at 0-1.5 s from clip 1 alone
    out = explainer.explain_waveforms(wave[None], enc(wave[None]))
    raw = out.clips[0]  # [3, 128, 204]
    j = int(3.5 * 100)  # 3.5 s: clip 2's frame 198 is past its end; clip 3's frame (3.5 - 3) * 100 - 1.25
    f3 = int(round((j * 160 - 48000 - 200) / 160))
    placed = place_clips(raw[None, :, None], bounds, frames, ad.hop, ad.frame_offset, n)[0, 0]
    np.testing.assert_allclose(placed[:, j].numpy(), raw[2, :, f3].numpy(), rtol=1e-6)
    f1 = int(round((100 * 160 - 200) / 160))  # 1 s: clip 1 only
    np.testing.assert_allclose(placed[:, 100].numpy(), raw[0, :, f1].numpy(), rtol=1e-6)


def test_refusals_and_bad_input():
    from avlegrad.audio.timm_encoder import TimmAudioEncoder

    resnet = TimmAudioEncoder(backbone="test_resnet", embed_dim=8, clip_model=None, clip_pretrained=None,
                              frontend={"n_mels": 32, "n_fft": 512})
    with pytest.raises(UnsupportedModelError, match="VisionTransformer"):
        AudioLeGrad(resnet)
    enc = timm_vit()
    with pytest.raises(ValueError, match="layer_index"):
        AudioLeGrad(enc, layer_index=3)
    ex = AudioLeGrad(enc)
    with pytest.raises(ValueError, match=r"targets must be float embeddings \[B, D\]"):
        ex.explain_waveforms(torch.randn(2, 4000), torch.randn(3, 24))
    with pytest.raises(ValueError, match="spectrograms must be"):
        ex(torch.randn(2, 4000), torch.randn(2, 24))
    with pytest.raises(ValueError, match="samples"):
        ex.explain_waveforms(torch.randn(2, 10), torch.randn(2, 24))
    with pytest.raises(ValueError, match="width 16; TimmAudioEncoder embeds into 24"):
        ex.explain_waveforms(torch.randn(2, 4000), torch.randn(2, 16))
    nan = torch.randn(3, 4000)
    nan[1, 7] = float("nan")
    with pytest.raises(ValueError, match=r"waveforms \[1\] hold NaN"):
        ex.explain_waveforms(nan, torch.randn(3, 24))
    assert ex(torch.randn(0, 1, 32, 40), torch.randn(0, 24)).shape == (0, 32, 40)
    empty = ex.explain_waveforms(torch.randn(0, 4000), torch.randn(0, 2, 24))
    assert empty.maps.shape == (0, 2, 32, 26) and empty.curve.shape == (0, 2, 26)


def test_explain_both_directions_in_one_call():
    from avlegrad import LeGrad
    from avlegrad.explain.audio import explain_both
    from tests.conftest import make_tiny_clip

    clip = make_tiny_clip(embed_dim=24)
    enc = timm_vit()
    torch.manual_seed(3)
    images, waves = torch.randn(2, 3, 32, 32), torch.randn(2, 4000) * 0.2
    image_maps, audio_maps = explain_both(clip, enc, images, waves)
    with torch.no_grad():
        sound, picture = enc(waves), clip.encode_image(images)
    np.testing.assert_allclose(image_maps.numpy(), LeGrad(clip)(images, sound).numpy(), atol=1e-6)
    np.testing.assert_allclose(audio_maps.maps.numpy(),
                               AudioLeGrad(enc).explain_waveforms(waves, picture).maps.numpy(), atol=1e-6)
    with pytest.raises(ValueError, match="one waveform per image"):
        explain_both(clip, enc, images, waves[:1])


def test_the_same_legrad_class_explains_the_audio_vit_through_the_registry():
    """The timm audio ViT is a registered model adapter: LeGrad(encoder) on its log-mel gives the
    audio explainer's maps (coverage mapping, padding), and the other explainers run on it too."""
    from avlegrad import LeGrad
    from avlegrad.explain.adapters import adapter_for
    from avlegrad.explain.adapters.audio import TimmAudioViT as Registered

    enc = timm_vit()
    assert type(adapter_for(enc)) is Registered
    torch.manual_seed(4)
    specs = enc.frontend(torch.randn(2, 5300) * 0.3)  # 34 frames: padded to 40
    targets = torch.randn(2, 2, 24)
    for layer_index in (-2, 0):
        ours = AudioLeGrad(enc, layer_index=layer_index)(specs, targets)
        same = LeGrad(enc, layer_index=layer_index)(specs, targets)
        assert same.shape == (2, 2, 32, 34)
        np.testing.assert_allclose(same.numpy(), ours.numpy(), atol=2e-5)


def test_the_same_legrad_class_explains_imagebinds_clips():
    """ImageBind's tower is a registered model adapter too: LeGrad(encoder) on its log-mel clips
    (each scored by its own embedding) equals the audio explainer on one clip per row."""
    from avlegrad import LeGrad

    enc = imagebind_small()
    torch.manual_seed(5)
    clips = enc.preprocess(torch.randn(1, 3 * 16000) * 0.1)[0]  # [3, 1, 128, 204]
    targets = torch.randn(3, 16)
    same = LeGrad(enc, layer_index=0)(clips, targets)
    assert same.shape == (3, 128, 204)
    np.testing.assert_allclose(same.numpy(), AudioLeGrad(enc, layer_index=0)(clips, targets).numpy(), atol=2e-5)
