"""Pretrained audio encoders: ImageBind's audio tower and Wav2CLIP (CPU, random weights).

The official weights cannot be downloaded here, so the tests build checkpoints with the official
parameter names and shapes, written down below from the official code (independently of
``avlegrad/audio/imagebind.py`` / ``wav2clip.py``), and compare against slow references also
written from the official code: the pytorchvideo clip sampler, per-clip in-place mean subtraction
and Kaldi fbank for ImageBind; an explicit STFT and a functional ResNet for Wav2CLIP; a functional
ViT with explicit attention for the ImageBind tower.
"""
from __future__ import annotations

import argparse
import hashlib
import math
from pathlib import Path
import sys
import types
from fractions import Fraction

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from avlegrad.audio import create_audio_encoder
from avlegrad.audio import imagebind as ib
from avlegrad.audio import wav2clip as w2c
from avlegrad.audio.factory import CheckpointError
from avlegrad.download import DownloadError
from conftest import serve_directory

SR = 16000


# ------------------------------------------------------------------------------------------------
# Official parameter tables (from imagebind_model.py / multimodal_preprocessors.py / transformer.py
# / helpers.py and wav2clip model/resnet.py, model/encoder.py)
# ------------------------------------------------------------------------------------------------
def official_imagebind_audio_shapes(width=768, depth=12, out_dim=1024, patch=16, tokens=1 + 12 * 19):
    pre, trunk = "modality_preprocessors.audio.", "modality_trunks.audio."
    shapes = {
        pre + "cls_token": (1, 1, width),
        pre + "rgbt_stem.proj.weight": (width, 1, patch, patch),       # Conv2d(1, 768, 16, stride 10, bias=False)
        pre + "rgbt_stem.norm_layer.weight": (width,),                  # LayerNorm(768), eps 1e-5
        pre + "rgbt_stem.norm_layer.bias": (width,),
        pre + "pos_embedding_helper.pos_embed": (1, tokens, width),     # learnable, 1 + 12*19
    }
    for i in range(depth):
        b = f"{trunk}blocks.{i}."
        shapes.update({
            b + "attn.in_proj_weight": (3 * width, width),              # nn.MultiheadAttention(bias=True,
            b + "attn.in_proj_bias": (3 * width,),                      #   add_bias_kv=True)
            b + "attn.bias_k": (1, 1, width),
            b + "attn.bias_v": (1, 1, width),
            b + "attn.out_proj.weight": (width, width),
            b + "attn.out_proj.bias": (width,),
            b + "norm_1.weight": (width,), b + "norm_1.bias": (width,),
            b + "mlp.fc1.weight": (4 * width, width), b + "mlp.fc1.bias": (4 * width,),
            b + "mlp.fc2.weight": (width, 4 * width), b + "mlp.fc2.bias": (width,),
            b + "norm_2.weight": (width,), b + "norm_2.bias": (width,),
        })
    shapes.update({
        "modality_heads.audio.0.weight": (width,),                      # LayerNorm eps 1e-6
        "modality_heads.audio.0.bias": (width,),
        "modality_heads.audio.2.weight": (out_dim, width),              # Linear(768, 1024, bias=False)
        "modality_postprocessors.audio.1.log_logit_scale": (),          # buffer log(20), learnable=False
    })
    return shapes


def official_wav2clip_shapes(fc_classes=1000):
    shapes = {"audio_encoder.spectrogram.window": (512,), "audio_encoder.conv1.weight": (64, 1, 7, 7)}

    def bn(prefix, c):
        shapes.update({prefix + ".weight": (c,), prefix + ".bias": (c,), prefix + ".running_mean": (c,),
                       prefix + ".running_var": (c,), prefix + ".num_batches_tracked": ()})

    bn("audio_encoder.bn1", 64)
    cin = 64
    for layer, c in zip(range(1, 5), (64, 128, 256, 512)):
        for block in range(2):
            p = f"audio_encoder.layer{layer}.{block}"
            shapes[p + ".conv1.weight"] = (c, cin if block == 0 else c, 3, 3)
            bn(p + ".bn1", c)
            shapes[p + ".conv2.weight"] = (c, c, 3, 3)
            bn(p + ".bn2", c)
            if block == 0 and layer > 1:
                shapes[p + ".downsample.0.weight"] = (c, cin, 1, 1)
                bn(p + ".downsample.1", c)
        cin = c
    shapes.update({"audio_encoder.fc.weight": (fc_classes, 512), "audio_encoder.fc.bias": (fc_classes,),
                   "audio_transform.sequential.0.weight": (512, 512), "audio_transform.sequential.0.bias": (512,),
                   "audio_transform.sequential.3.weight": (512, 512), "audio_transform.sequential.3.bias": (512,)})
    return shapes


def random_state(shapes, seed=0):
    """Plausible random weights: norm scales near 1, variances positive, small matrices."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for name, shape in shapes.items():
        if name.endswith("num_batches_tracked"):
            state[name] = torch.tensor(7)
        elif name.endswith("log_logit_scale"):
            state[name] = torch.tensor(math.log(20.0))
        elif name.endswith("spectrogram.window"):
            state[name] = torch.hann_window(512)
        elif name.endswith("running_var"):
            state[name] = 0.5 + torch.rand(shape, generator=g)
        elif len(shape) == 1 and (name.endswith(".weight")):
            state[name] = 1 + 0.1 * torch.randn(shape, generator=g)
        elif len(shape) == 1:
            state[name] = 0.05 * torch.randn(shape, generator=g)
        else:
            fan_in = max(1, int(np.prod(shape[1:])))
            std = 0.02 if "pos_embed" in name or "cls_token" in name or "bias_" in name else fan_in ** -0.5
            state[name] = std * torch.randn(shape, generator=g)
    return state


# ------------------------------------------------------------------------------------------------
# Slow references
# ------------------------------------------------------------------------------------------------
class PinnedConstantClipsPerVideoSampler:
    """pytorchvideo@28fe037 ConstantClipsPerVideoSampler, as ImageBind calls it."""

    def __init__(self, clip_duration, clips_per_video):
        self.clip_duration = Fraction(clip_duration)
        self.clips_per_video = clips_per_video
        self.index = 0

    def __call__(self, last_clip_time, video_duration, annotation=None):
        max_start = Fraction(max(video_duration - self.clip_duration, 0))
        uniform_clip = Fraction(max_start, max(self.clips_per_video - 1, 1))
        start = uniform_clip * self.index
        self.index += 1
        is_last = self.index >= self.clips_per_video or uniform_clip * self.index > max_start
        if is_last:
            self.index = 0
        return start, start + self.clip_duration, None, None, is_last


def reference_imagebind_clips(waveform_1d: torch.Tensor, sample_rate=SR, shared_buffer=True) -> torch.Tensor:
    """imagebind.data.load_and_transform_audio_data for one mono waveform, loops and all
    (``shared_buffer=False``: each clip's mean subtracted on a copy, i.e. not as official)."""
    import torchaudio

    waveform = waveform_1d.clone().float().unsqueeze(0)  # torchaudio.load layout [C, T]
    if sample_rate != SR:
        waveform = torchaudio.functional.resample(waveform, orig_freq=sample_rate, new_freq=SR)
    sampler = PinnedConstantClipsPerVideoSampler(2, 3)
    timepoints, end, last = [], 0.0, False
    while not last:
        start, end, _, _, last = sampler(end, waveform.size(1) / SR, annotation=None)
        timepoints.append((start, end))
    clips = []
    for start, end in timepoints:
        clip = waveform[:, int(start * SR):int(end * SR)]
        if not shared_buffer:
            clip = clip.clone()
        clip -= clip.mean()  # in place on the shared buffer
        fbank = torchaudio.compliance.kaldi.fbank(clip, htk_compat=True, sample_frequency=SR, use_energy=False,
                                                  window_type="hanning", num_mel_bins=128, dither=0.0,
                                                  frame_length=25, frame_shift=10).transpose(0, 1)
        p = 204 - fbank.size(1)
        fbank = F.pad(fbank, (0, p)) if p > 0 else fbank[:, :204]
        clips.append(fbank.unsqueeze(0))
    return torch.stack([(c - (-4.268)) / 9.138 for c in clips])


def reference_imagebind_tower(sd: dict, clips: torch.Tensor, heads=12) -> torch.Tensor:
    """Functional ImageBind audio tower on official keys, attention written out."""
    pre, trunk, head = "modality_preprocessors.audio.", "modality_trunks.audio.", "modality_heads.audio."
    x = F.conv2d(clips, sd[pre + "rgbt_stem.proj.weight"], stride=10).flatten(2).transpose(1, 2)
    d = x.shape[-1]
    x = F.layer_norm(x, (d,), sd[pre + "rgbt_stem.norm_layer.weight"], sd[pre + "rgbt_stem.norm_layer.bias"], 1e-5)
    x = torch.cat([sd[pre + "cls_token"].expand(x.shape[0], -1, -1), x], 1) + sd[pre + "pos_embedding_helper.pos_embed"]
    n, hd = x.shape[0], d // heads
    i = 0
    while f"{trunk}blocks.{i}.norm_1.weight" in sd:
        b = f"{trunk}blocks.{i}."
        h = F.layer_norm(x, (d,), sd[b + "norm_1.weight"], sd[b + "norm_1.bias"], 1e-6)
        q, k, v = (h @ sd[b + "attn.in_proj_weight"].T + sd[b + "attn.in_proj_bias"]).chunk(3, dim=-1)
        k = torch.cat([k, sd[b + "attn.bias_k"].reshape(1, 1, d).expand(n, 1, d)], 1)
        v = torch.cat([v, sd[b + "attn.bias_v"].reshape(1, 1, d).expand(n, 1, d)], 1)
        q, k, v = (t.reshape(n, t.shape[1], heads, hd).transpose(1, 2) for t in (q, k, v))
        attn = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd), dim=-1)
        o = (attn @ v).transpose(1, 2).reshape(n, -1, d)
        x = x + o @ sd[b + "attn.out_proj.weight"].T + sd[b + "attn.out_proj.bias"]
        h = F.layer_norm(x, (d,), sd[b + "norm_2.weight"], sd[b + "norm_2.bias"], 1e-6)
        h = F.gelu(h @ sd[b + "mlp.fc1.weight"].T + sd[b + "mlp.fc1.bias"])
        x = x + h @ sd[b + "mlp.fc2.weight"].T + sd[b + "mlp.fc2.bias"]
        i += 1
    x = F.layer_norm(x, (d,), sd[head + "0.weight"], sd[head + "0.bias"], 1e-6)[:, 0] @ sd[head + "2.weight"].T
    scale = sd["modality_postprocessors.audio.1.log_logit_scale"].exp().clamp(max=100)
    return x / x.norm(dim=-1, keepdim=True) * scale


def reference_wav2clip_spectrogram(x: torch.Tensor) -> torch.Tensor:
    """|STFT|^2 with a periodic Hann of 512, hop 353, centred with reflect padding: [B, 257, frames]."""
    n_fft, hop = 512, 353
    padded = F.pad(x.unsqueeze(1), (n_fft // 2, n_fft // 2), mode="reflect").squeeze(1)
    frames = padded.unfold(-1, n_fft, hop)  # [B, n, 512]
    window = torch.tensor(0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft), dtype=torch.float32)
    spec = torch.fft.rfft(frames.double() * window.double(), dim=-1)
    return (spec.real ** 2 + spec.imag ** 2).transpose(1, 2).float()


def reference_wav2clip(sd: dict, x: torch.Tensor, per_input=False) -> torch.Tensor:
    """Functional Wav2CLIP on official names: spectrogram -> log -> standardise -> ResNet-18 -> MLP."""
    s = torch.log(reference_wav2clip_spectrogram(x).unsqueeze(1) + 1e-7)
    if per_input:
        s = torch.stack([(e - e.mean()) / (e.std() + 1e-9) for e in s])
    else:
        s = (s - s.mean()) / (s.std() + 1e-9)

    def bn(t, p):
        return F.batch_norm(t, sd[p + ".running_mean"], sd[p + ".running_var"], sd[p + ".weight"],
                            sd[p + ".bias"], training=False, eps=1e-5)

    e = "audio_encoder."
    t = F.relu(bn(F.conv2d(s, sd[e + "conv1.weight"], stride=2, padding=3), e + "bn1"))
    t = F.max_pool2d(t, 3, 2, 1)
    for layer in range(1, 5):
        for block in range(2):
            p = f"{e}layer{layer}.{block}."
            stride = 2 if layer > 1 and block == 0 else 1
            out = F.relu(bn(F.conv2d(t, sd[p + "conv1.weight"], stride=stride, padding=1), p + "bn1"))
            out = bn(F.conv2d(out, sd[p + "conv2.weight"], padding=1), p + "bn2")
            if p + "downsample.0.weight" in sd:
                t = bn(F.conv2d(t, sd[p + "downsample.0.weight"], stride=stride), p + "downsample.1")
            t = F.relu(out + t)
    feat = t.mean(dim=(2, 3))
    a = "audio_transform.sequential."
    return F.relu(feat @ sd[a + "0.weight"].T + sd[a + "0.bias"]) @ sd[a + "3.weight"].T + sd[a + "3.bias"]


def tone(seconds, freq=440.0, rate=SR, offset=0.0, seed=0):
    t = torch.arange(int(round(seconds * rate))) / rate
    g = torch.Generator().manual_seed(seed)
    return (0.3 * torch.sin(2 * math.pi * freq * t) + 0.05 * torch.randn(t.shape, generator=g) + offset).float()


# ------------------------------------------------------------------------------------------------
# Fixtures (one full-size ImageBind checkpoint and tower per module)
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def imagebind_official_state():
    shapes = official_imagebind_audio_shapes()
    assert len(shapes) == 5 + 14 * 12 + 3 + 1 == 177
    return random_state(shapes, seed=1)


@pytest.fixture(scope="module")
def imagebind_huge_like_file(imagebind_official_state, tmp_path_factory):
    """An imagebind_huge.pth-like file: the audio keys plus (small) other modalities' keys."""
    others = {
        "modality_preprocessors.vision.cls_token": torch.zeros(1, 1, 8),
        "modality_preprocessors.vision.rgbt_stem.proj.1.weight": torch.zeros(8, 3, 2, 2, 2),
        "modality_preprocessors.text.token_embedding.weight": torch.zeros(10, 8),
        "modality_preprocessors.text.mask": torch.zeros(4, 4),
        "modality_trunks.vision.pre_transformer_layer.0.weight": torch.ones(8),
        "modality_trunks.vision.blocks.0.attn.in_proj_weight": torch.zeros(24, 8),
        "modality_trunks.depth.blocks.0.attn.bias_k": torch.zeros(1, 1, 8),
        "modality_heads.vision.2.weight": torch.zeros(4, 8),
        "modality_heads.imu.3.weight": torch.zeros(4, 8),
        "modality_postprocessors.text.1.log_logit_scale": torch.tensor(2.0),
        "modality_postprocessors.thermal.1.log_logit_scale": torch.tensor(2.3),
    }
    path = tmp_path_factory.mktemp("imagebind") / "imagebind_huge.pth"
    torch.save({**others, **imagebind_official_state}, path)
    return path


@pytest.fixture(scope="module")
def imagebind_encoder(imagebind_huge_like_file):
    return create_audio_encoder("imagebind", checkpoint=imagebind_huge_like_file)


# ------------------------------------------------------------------------------------------------
# ImageBind
# ------------------------------------------------------------------------------------------------
def test_imagebind_full_file_loads_audio_part_only(imagebind_encoder, imagebind_official_state,
                                                   imagebind_huge_like_file):
    enc = imagebind_encoder
    # the image tower is ImageBind's own, in the same file (it holds vision keys; imagebind_clip.py)
    assert (enc.sample_rate, enc.embed_dim, enc.clip_model, enc.clip_pretrained) == \
        (16000, 1024, "ViT-H-14", str(Path(imagebind_huge_like_file).resolve()))
    assert create_audio_encoder("imagebind", pretrained=False).clip_pretrained == "imagebind"
    ours = enc.state_dict()
    assert len(ours) == len(imagebind_official_state) == 177
    official_to_ours = {"modality_preprocessors.audio.": "preprocessor.", "modality_trunks.audio.": "trunk.",
                        "modality_heads.audio.": "head.", "modality_postprocessors.audio.": "postprocessor."}
    for key, value in imagebind_official_state.items():
        prefix = next(p for p in official_to_ours if key.startswith(p))
        mine = ours[official_to_ours[prefix] + key[len(prefix):]]
        assert mine.shape == value.shape and torch.equal(mine, value), key
    enc.check_pair("ViT-H-14", "imagebind")
    enc.check_pair("ViT-H-14", "laion2b_s32b_b79k")  # the tower ImageBind was initialised from: an option
    with pytest.raises(ValueError, match="ViT-H-14"):
        enc.check_pair("ViT-B-16", "openai")
    with pytest.raises(ValueError, match="ViT-H-14"):
        enc.check_pair("ViT-H-14", "laion2b_s39b_b160k")


def test_imagebind_strict_loading(imagebind_official_state):
    enc = ib.ImageBindAudioEncoder()
    enc.load_official_state_dict(dict(imagebind_official_state))  # exactly the official audio keys: strict
    missing = dict(imagebind_official_state)
    del missing["modality_trunks.audio.blocks.3.attn.bias_k"]
    with pytest.raises(CheckpointError, match="bias_k"):
        enc.load_official_state_dict(missing)
    extra = {**imagebind_official_state, "modality_trunks.audio.blocks.0.layer_scale_gamma1": torch.ones(1, 1, 768)}
    with pytest.raises(CheckpointError, match="layer_scale_gamma1"):
        enc.load_official_state_dict(extra)
    wrong = {**imagebind_official_state, "modality_heads.audio.2.weight": torch.zeros(768, 768)}
    with pytest.raises(CheckpointError, match="size mismatch"):
        enc.load_official_state_dict(wrong)
    with pytest.raises(CheckpointError, match="no ImageBind audio weights"):
        enc.load_official_state_dict({"modality_trunks.vision.blocks.0.norm_1.weight": torch.ones(4)})
    # our own names round-trip (e.g. an avlegrad checkpoint's state_dict)
    enc.load_official_state_dict({"state_dict": {k: v.clone() for k, v in enc.state_dict().items()}})


def test_imagebind_bad_file_is_refused(tmp_path):
    bad = tmp_path / "imagebind_huge.pth"
    bad.write_bytes(b"not a checkpoint" * 100)
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        create_audio_encoder("imagebind", checkpoint=bad)
    with pytest.raises(CheckpointError, match="not found"):
        create_audio_encoder("imagebind", checkpoint=tmp_path / "missing.pth")


@pytest.mark.parametrize("num_samples", [400, 1000, 20000, 32000, 32007, 48000, 50001, 96000, 100003])
def test_imagebind_preprocessing_matches_reference(num_samples):
    x = tone(num_samples / SR, offset=0.2, seed=num_samples)  # a DC offset makes the in-place effect visible
    ours = ib.imagebind_audio_clips(x)
    ref = reference_imagebind_clips(x)
    assert ours.shape == ref.shape == (3, 1, 128, 204)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-5)
    assert torch.equal(x, tone(num_samples / SR, offset=0.2, seed=num_samples))  # input untouched


@pytest.mark.parametrize("num_samples", [1000, 48000, 160000])
def test_imagebind_batched_preprocessing_is_each_rows_reference(num_samples):
    # the fbank of all clips of a batch is computed together (in chunks of FBANK_CHUNK_CPU clips):
    # each row must still be its own official preprocessing, whatever its batch-mates
    x = torch.stack([tone(num_samples / SR, freq=300.0 + 90 * k, offset=0.1 * k, seed=k) for k in range(5)])
    before = x.clone()
    ours = ib.imagebind_audio_clips(x)
    assert ours.shape == (5, 3, 1, 128, 204) and 5 * 3 > ib.FBANK_CHUNK_CPU
    for k in range(5):
        torch.testing.assert_close(ours[k], reference_imagebind_clips(x[k]), rtol=0, atol=1e-5)
        torch.testing.assert_close(ours[k], ib.imagebind_audio_clips(x[k]), rtol=0, atol=1e-6)
    assert torch.equal(x, before)  # input untouched


def test_imagebind_clip_bounds_follow_pinned_sampler():
    for n in [400, 31999, 32000, 32001, 32007, 32028, 47999, 48000, 50001, 160000, 160017, 441000]:
        sampler = PinnedConstantClipsPerVideoSampler(2, 3)
        expected = []
        for _ in range(3):
            start, end, _, _, _ = sampler(0.0, n / SR)
            expected.append((int(start * SR), min(int(end * SR), n)))
        assert ib.imagebind_clip_bounds(n) == expected, n
    assert ib.imagebind_clip_bounds(48000) == [(0, 32000), (8000, 40000), (16000, 48000)]  # 0, m/2, m


def test_imagebind_overlap_and_short_inputs():
    # 3 s: clips overlap, so later clips see the earlier in-place subtraction (as official)
    x = tone(3.0, offset=0.5)
    clips = ib.imagebind_audio_clips(x)
    torch.testing.assert_close(clips, reference_imagebind_clips(x), rtol=0, atol=1e-5)
    separate = reference_imagebind_clips(x, shared_buffer=False)
    assert (clips[1:] - separate[1:]).abs().max() > 1e-3  # the effect is real and reproduced
    torch.testing.assert_close(clips[0], separate[0], rtol=0, atol=1e-5)

    # between 400 samples and 2 s: every clip is the whole waveform, fbank zero-padded to 204 frames
    short = tone(1000 / SR)
    c = ib.imagebind_audio_clips(short)
    frames = 1 + (1000 - 400) // 160
    pad_value = (0 - (-4.268)) / 9.138
    assert torch.allclose(c[..., frames:], torch.full_like(c[..., frames:], pad_value))
    assert not torch.allclose(c[..., :frames], torch.full_like(c[..., :frames], pad_value))
    torch.testing.assert_close(c[0], c[2], rtol=0, atol=1e-4)
    with pytest.raises(ValueError, match="at least 400 samples"):
        ib.imagebind_audio_clips(torch.zeros(399))


def test_imagebind_resamples_like_official():
    import torchaudio

    x44 = tone(1.5, rate=44100)
    torch.testing.assert_close(ib.imagebind_audio_clips(x44, 44100), reference_imagebind_clips(x44, 44100),
                               rtol=0, atol=1e-5)
    x16 = torchaudio.functional.resample(x44, 44100, 16000)
    torch.testing.assert_close(ib.imagebind_audio_clips(x44, 44100), ib.imagebind_audio_clips(x16))


def test_imagebind_tower_matches_reference(imagebind_encoder, imagebind_official_state):
    x = tone(2.5, freq=660.0)
    with torch.no_grad():
        clips = ib.imagebind_audio_clips(x)
        per_clip_ref = reference_imagebind_tower(imagebind_official_state, clips)
        per_clip = imagebind_encoder.embed_clips(clips)
        torch.testing.assert_close(per_clip, per_clip_ref, rtol=1e-4, atol=1e-4)
        assert torch.allclose(per_clip.norm(dim=-1), torch.full((3,), 20.0), atol=1e-3)
        encoded = imagebind_encoder.encode(x[None])
        torch.testing.assert_close(encoded[0], per_clip_ref.mean(0), rtol=1e-4, atol=1e-4)
        out = imagebind_encoder(x[None])
    assert out.shape == (1, 1024)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(1))
    torch.testing.assert_close(out[0], F.normalize(per_clip_ref.mean(0), dim=-1), rtol=1e-4, atol=1e-5)


def test_imagebind_batch_silence_rate_and_errors(imagebind_encoder):
    import torchaudio

    enc = imagebind_encoder
    with torch.no_grad():
        silence = torch.zeros(2, 8000)
        out = enc(silence)
        assert out.shape == (2, 1024) and torch.isfinite(out).all()
        torch.testing.assert_close(out.norm(dim=-1), torch.ones(2))
        x44 = tone(0.5, rate=44100)[None]
        torch.testing.assert_close(enc(x44, sample_rate=44100),
                                   enc(torchaudio.functional.resample(x44, 44100, 16000)), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="at least 400"):
        enc(torch.zeros(1, 399))
    with pytest.raises(ValueError, match=r"\[B, T\]"):
        enc(torch.zeros(400))


# ------------------------------------------------------------------------------------------------
# Wav2CLIP
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def wav2clip_official_state():
    shapes = official_wav2clip_shapes()
    assert len(shapes) == 1 + 1 + 5 + (12 + 12) + 3 * (18 + 12) + 2 + 4 == 127
    return random_state(shapes, seed=2)


@pytest.fixture(scope="module")
def wav2clip_file(wav2clip_official_state, tmp_path_factory):
    path = tmp_path_factory.mktemp("wav2clip") / "Wav2CLIP.pt"
    # a Lightning checkpoint: weights under "state_dict", beside other modules' weights and metadata
    state = {**wav2clip_official_state, "image_transform.sequential.0.weight": torch.zeros(512, 512),
             "loss_fn_a.logit_scale": torch.tensor(2.6)}
    torch.save({"epoch": 12, "global_step": 3456, "state_dict": state}, path)
    return path


def test_wav2clip_loads_official_names(wav2clip_file, wav2clip_official_state):
    enc = create_audio_encoder("wav2clip", checkpoint=wav2clip_file)
    assert (enc.sample_rate, enc.embed_dim, enc.clip_model, enc.clip_pretrained) == (16000, 512, "ViT-B-32", "openai")
    ours = enc.state_dict()
    expected = {k: v for k, v in wav2clip_official_state.items() if not k.startswith("audio_encoder.fc.")}
    assert set(ours) == set(expected) and len(ours) == 125
    for k, v in expected.items():
        assert ours[k].shape == v.shape and torch.equal(ours[k], v), k
    # wav2clip 0.1.0 (PyPI) layout: a flat state dict, no classifier
    enc.load_official_state_dict(dict(expected))
    # the unused classifier may have the pre-training shape (309 classes): skipped either way
    enc.load_official_state_dict({"state_dict": random_state(official_wav2clip_shapes(fc_classes=309))})
    missing = dict(expected)
    del missing["audio_encoder.layer3.0.downsample.1.running_var"]
    with pytest.raises(CheckpointError, match="downsample.1.running_var"):
        enc.load_official_state_dict({"state_dict": missing})
    with pytest.raises(CheckpointError, match="Unexpected key"):
        enc.load_official_state_dict({"state_dict": {**expected, "audio_transform.sequential.6.weight": torch.ones(2)}})
    with pytest.raises(CheckpointError, match="no Wav2CLIP audio weights"):
        enc.load_official_state_dict({"state_dict": {"image_transform.sequential.0.weight": torch.ones(2)}})


def test_wav2clip_lightning_objects_load_weights_only(wav2clip_official_state, tmp_path, monkeypatch):
    """Non-tensor objects a Lightning checkpoint may pickle (hyper-parameters) are read inertly."""
    fake = types.ModuleType("fake_lightning_parsing")

    class AttributeDict(dict):
        pass

    AttributeDict.__module__ = fake.__name__
    AttributeDict.__qualname__ = "AttributeDict"
    fake.AttributeDict = AttributeDict
    monkeypatch.setitem(sys.modules, fake.__name__, fake)
    hparams = AttributeDict(lr=1e-3, units=[512, 512, 512])
    path = tmp_path / "Wav2CLIP.pt"
    torch.save({"state_dict": wav2clip_official_state, "hyper_parameters": hparams,
                "args": argparse.Namespace(loss="clip_loss_x", batch_size=128)}, path)
    monkeypatch.delitem(sys.modules, fake.__name__)  # the class cannot be imported when loading
    obj = w2c.load_wav2clip_file(path)
    assert obj["hyper_parameters"]["lr"] == 1e-3
    assert obj["args"].__dict__["loss"] == "clip_loss_x"
    enc = create_audio_encoder("wav2clip", checkpoint=path)
    assert torch.equal(enc.state_dict()["audio_transform.sequential.3.bias"],
                       wav2clip_official_state["audio_transform.sequential.3.bias"])


def test_wav2clip_spectrogram_matches_stft():
    x = torch.stack([tone(1.0, seed=1), tone(1.0, freq=1000.0, seed=2)])
    import torchaudio

    spec = torchaudio.transforms.Spectrogram(n_fft=512, hop_length=353)(x.unsqueeze(1))[:, 0]
    ref = reference_wav2clip_spectrogram(x)
    assert spec.shape == ref.shape == (2, 257, 1 + 16000 // 353)
    torch.testing.assert_close(spec, ref, rtol=1e-4, atol=1e-4 * float(ref.max()))
    front = w2c.wav2clip_log_spectrogram(x, "batch")
    log_ref = torch.log(ref.unsqueeze(1) + 1e-7)
    torch.testing.assert_close(front, (log_ref - log_ref.mean()) / (log_ref.std() + 1e-9), rtol=1e-3, atol=1e-3)


def test_wav2clip_matches_reference_and_normalisation_modes(wav2clip_file, wav2clip_official_state):
    enc = create_audio_encoder("wav2clip", checkpoint=wav2clip_file, normalize="batch")
    a, b = tone(1.2, seed=3), 0.1 * tone(1.2, freq=3000.0, seed=4)
    batch = torch.stack([a, b])
    with torch.no_grad():
        raw = enc.encode(batch)
        torch.testing.assert_close(raw, reference_wav2clip(wav2clip_official_state, batch), rtol=1e-3, atol=1e-3)
        out = enc(batch)
        assert out.shape == (2, 512)
        torch.testing.assert_close(out.norm(dim=-1), torch.ones(2))
        alone = enc(a[None])
        assert not torch.allclose(out[0], alone[0], atol=1e-3)  # official batched call: batch-mates matter
        assert not enc.batch_independent
        torch.testing.assert_close(enc.embed_each(batch), torch.cat([alone, enc(b[None])]))  # one at a time
        per_input = create_audio_encoder("wav2clip", checkpoint=wav2clip_file)  # the default
        assert per_input.normalize == "per_input" and per_input.batch_independent
        torch.testing.assert_close(per_input(batch)[0], alone[0], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(per_input.encode(batch),
                                   reference_wav2clip(wav2clip_official_state, batch, per_input=True),
                                   rtol=1e-3, atol=1e-3)


def test_wav2clip_edge_cases(wav2clip_file):
    enc = create_audio_encoder("wav2clip", checkpoint=wav2clip_file)
    with torch.no_grad():
        silence = enc(torch.zeros(1, 16000))
        assert torch.isfinite(silence).all()
        assert enc(torch.randn(1, 257)).shape == (1, 512)
    with pytest.raises(ValueError, match="at least 257"):
        enc(torch.randn(1, 256))
    with pytest.raises(ValueError, match="float32"):
        enc(torch.randn(1, 16000, dtype=torch.float64))
    with pytest.raises(ValueError, match="16000 Hz"):
        enc(torch.randn(1, 44100), sample_rate=44100)
    with pytest.raises(ValueError, match="normalize"):
        create_audio_encoder("wav2clip", pretrained=False, normalize="global")


# ------------------------------------------------------------------------------------------------
# Downloads (local http server) and the cache
# ------------------------------------------------------------------------------------------------
@pytest.fixture()
def http_root(tmp_path):
    root = tmp_path / "served"
    root.mkdir()
    with serve_directory(root) as url:
        yield root, url


SMALL_IB = dict(width=64, depth=1, heads=4, embed_dim=32)


def test_imagebind_download_checked_and_cached(http_root, tmp_path, monkeypatch):
    root, base = http_root
    cache = tmp_path / "cache"
    monkeypatch.setenv("AVLEGRAD_CACHE", str(cache))
    state = random_state(official_imagebind_audio_shapes(width=64, depth=1, out_dim=32), seed=3)
    served = root / "imagebind_huge.pth"
    torch.save(state, served)
    digest = hashlib.sha256(served.read_bytes()).hexdigest()
    monkeypatch.setattr(ib, "IMAGEBIND_URL", f"{base}/imagebind_huge.pth")
    dest = cache / "weights" / "imagebind_huge.pth"

    monkeypatch.setattr(ib, "IMAGEBIND_SHA256", "0" * 64)  # a bad file: refused, nothing cached
    with pytest.raises(DownloadError, match="sha256 mismatch"):
        create_audio_encoder("imagebind", progress=False, **SMALL_IB)
    assert not dest.exists() and not list((cache / "weights").glob("*"))

    monkeypatch.setattr(ib, "IMAGEBIND_SHA256", digest)
    enc = create_audio_encoder("imagebind", progress=False, **SMALL_IB)
    assert dest.is_file() and (dest.parent / "imagebind_huge.pth.sha256").read_text().split()[0] == digest
    assert torch.equal(enc.state_dict()["head.2.weight"], state["modality_heads.audio.2.weight"])
    served.unlink()  # cached: no second download
    create_audio_encoder("imagebind", progress=False, **SMALL_IB)


def test_download_without_checksum_records_digest(http_root, tmp_path, monkeypatch, wav2clip_file):
    root, base = http_root
    monkeypatch.setenv("AVLEGRAD_CACHE", str(tmp_path / "cache"))
    (root / "Wav2CLIP.pt").write_bytes(wav2clip_file.read_bytes())
    monkeypatch.setattr(w2c, "WAV2CLIP_URL", f"{base}/Wav2CLIP.pt")
    assert w2c.WAV2CLIP_SHA256 is None
    enc = create_audio_encoder("wav2clip", progress=False)
    dest = tmp_path / "cache" / "weights" / "Wav2CLIP.pt"
    assert dest.is_file() and enc.embed_dim == 512
    recorded = (tmp_path / "cache" / "weights" / "Wav2CLIP.pt.sha256").read_text().split()
    assert recorded == [hashlib.sha256(wav2clip_file.read_bytes()).hexdigest(), "Wav2CLIP.pt"]


def test_offline_error_says_what_to_download(tmp_path, monkeypatch):
    import socket

    monkeypatch.setenv("AVLEGRAD_CACHE", str(tmp_path / "cache"))
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/imagebind_huge.pth"
    monkeypatch.setattr(ib, "IMAGEBIND_URL", url)
    with pytest.raises(DownloadError) as err:
        create_audio_encoder("imagebind", progress=False, **SMALL_IB)
    message = str(err.value)
    assert url in message and str(tmp_path / "cache" / "weights" / "imagebind_huge.pth") in message
    assert "checkpoint=PATH" in message
    assert not (tmp_path / "cache" / "weights" / "imagebind_huge.pth").exists()
    # random init needs no file
    assert create_audio_encoder("imagebind", pretrained=False, **SMALL_IB).embed_dim == 32


def test_corrupt_cached_download_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("AVLEGRAD_CACHE", str(tmp_path / "cache"))
    dest = tmp_path / "cache" / "weights" / "Wav2CLIP.pt"
    dest.parent.mkdir(parents=True)
    dest.write_bytes(b"\x00" * 1000)
    with pytest.raises(CheckpointError, match="delete it"):
        create_audio_encoder("wav2clip", progress=False)


def test_avlegrad_checkpoints_round_trip(tmp_path, wav2clip_file):
    """encoder_checkpoint(...) of either encoder rebuilds with its stored arguments and weights."""
    from avlegrad.audio.factory import encoder_checkpoint, save_checkpoint_file

    small = create_audio_encoder("imagebind", pretrained=False, **SMALL_IB)
    save_checkpoint_file(encoder_checkpoint(small), tmp_path / "ib.pt")
    again = create_audio_encoder(str(tmp_path / "ib.pt"))
    assert again.config == small.config
    x = tone(0.5)[None]
    with torch.no_grad():
        torch.testing.assert_close(again(x), small(x))

    w = create_audio_encoder("wav2clip", checkpoint=wav2clip_file, normalize="batch")
    save_checkpoint_file(encoder_checkpoint(w), tmp_path / "w.pt")
    w2 = create_audio_encoder(str(tmp_path / "w.pt"))
    assert w2.normalize == "batch"
    assert all(torch.equal(a, b) for a, b in zip(w.state_dict().values(), w2.state_dict().values()))
