"""ImageBind's audio tower (``imagebind_huge``), loading the official ``imagebind_huge.pth``.

ImageBind's image tower is said to be OpenCLIP ViT-H-14 (``laion2b_s32b_b79k``), frozen; its audio
tower was trained into that image space. Its pairing names the tower in ImageBind's own file:
``("ViT-H-14", "imagebind")``, read from ``imagebind_huge.pth`` into open_clip's ViT-H-14 by
:mod:`avlegrad.audio.imagebind_clip` (the tower the LeGrad paper explained); the laion2b tower is
accepted as an option (``--pretrained laion2b_s32b_b79k``), and
``benchmarks/imagebind_vs_laion2b.py`` reports how far the two differ.

What is reproduced (read from facebookresearch/ImageBind ``imagebind/models/imagebind_model.py``,
``multimodal_preprocessors.py``, ``transformer.py``, ``helpers.py`` and ``imagebind/data.py``):

* Preprocessing (``data.load_and_transform_audio_data``), see :func:`imagebind_audio_clips`:
  resample to 16 kHz (torchaudio defaults); 3 clips of 2 s starting at 0, m/2 and m with
  m = max(duration - 2 s, 0), the boundaries computed as the pinned pytorchvideo commit
  (28fe037d) does (:func:`imagebind_clip_bounds`); per clip, in place on one buffer shared by the
  clips, subtract the clip mean (overlapping clips see the earlier subtractions, as official);
  Kaldi fbank (htk_compat, hanning, 128 mel bins, dither 0, 25 ms / 10 ms), transposed to
  [128, frames], zero-padded (in log-mel units) or cropped to 204 frames; then
  ``(x - (-4.268)) / 9.138``.
* The tower: Conv2d(1, 768, 16, stride 10, no bias) -> [B, 228, 768] (a 12 x 19 grid) ->
  LayerNorm (eps 1e-5) -> CLS token + learnt position embedding (229 tokens) -> 12 pre-norm
  blocks (LayerNorm eps 1e-6; ``nn.MultiheadAttention`` with ``add_bias_kv=True``, sequence
  first; GELU MLP 3072; no LayerScale; stochastic depth 0 -> 0.1, training only) -> LayerNorm
  (eps 1e-6) -> CLS -> Linear(768 -> 1024, no bias) -> L2 normalise -> x 20 (the fixed
  ``log_logit_scale`` buffer, clipped at 100). The 3 clip embeddings are averaged.

``encode`` returns that average (norm <= 20, the official output); ``forward`` L2-normalises it
like every :class:`AudioEncoder`.

Input differences from the official loader: waveforms here are mono. The official code reads a
file with ``torchaudio.load`` ([C, T]), subtracts the mean over all channels, but Kaldi fbank then
uses channel 0 only; ``embed_files`` averages channels instead. For mono files they agree.

The module's state-dict names are ``preprocessor.*``, ``trunk.*``, ``head.*`` and
``postprocessor.*``; the official file's ``modality_preprocessors.audio.*``,
``modality_trunks.audio.*``, ``modality_heads.audio.*`` and ``modality_postprocessors.audio.*``
map onto them by replacing that prefix (:data:`OFFICIAL_PREFIXES`), and then load strictly.

Weights: ``https://dl.fbaipublicfiles.com/imagebind/imagebind_huge.pth`` (4.5 GB, all six
modalities), licence CC-BY-NC 4.0. See ``docs/pretrained_audio.md``.

This module also holds the weight-file helpers that ``wav2clip.py`` shares
(:func:`avlegrad.download.pretrained_weights_file`).
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .imagebind_clip import IMAGEBIND_FILENAME, IMAGEBIND_SHA256, IMAGEBIND_URL, is_imagebind_tower  # noqa: F401
from .base import AudioEncoder
from .factory import CheckpointError, TrainingContract, build_pretrained_encoder, load_weights_mmap, register_audio_encoder

CLIP_MODEL = "ViT-H-14"
CLIP_PRETRAINED = "imagebind"  # the image tower in imagebind_huge.pth (imagebind_clip.py)
ALTERNATIVE_PRETRAINED = ("laion2b_s32b_b79k",)  # the open_clip tower it was initialised from

SAMPLE_RATE = 16000
NUM_MEL_BINS = 128
TARGET_LENGTH = 204
CLIP_DURATION = 2
CLIPS_PER_VIDEO = 3
FBANK_MEAN = -4.268
FBANK_STD = 9.138
MIN_SAMPLES = 400  # one 25 ms Kaldi frame; fewer gives no frame and the official code crashes
FBANK_CHUNK_CPU, FBANK_CHUNK_CUDA = 8, 256  # clips per fbank call (imagebind_audio_clips)

OFFICIAL_PREFIXES = {
    "modality_preprocessors.audio.": "preprocessor.",
    "modality_trunks.audio.": "trunk.",
    "modality_heads.audio.": "head.",
    "modality_postprocessors.audio.": "postprocessor.",
}


# ------------------------------------------------------------------------------------------------
# Preprocessing
# ------------------------------------------------------------------------------------------------
def imagebind_clip_bounds(num_samples: int, sample_rate: int = SAMPLE_RATE, clip_duration=CLIP_DURATION,
                          clips_per_video: int = CLIPS_PER_VIDEO) -> list[tuple[int, int]]:
    """Sample ranges ``[(start, end), ...]`` of the official clips of a ``num_samples`` waveform.

    As ImageBind's ``get_clip_timepoints`` with pytorchvideo's ``ConstantClipsPerVideoSampler``
    at the pinned commit: the duration ``num_samples / sample_rate`` is a Python float;
    ``m = max(duration - clip_duration, 0)`` is taken exactly as a ``Fraction`` of that float;
    clip ``i`` starts at ``m * i / max(n - 1, 1)`` and ends ``clip_duration`` later (exact
    fractions); ImageBind slices ``[int(start * sr) : int(end * sr)]``. Shorter than one clip,
    all clips are the whole waveform (the slice end runs past it).
    """
    duration = num_samples / sample_rate
    clip = Fraction(clip_duration)
    max_start = Fraction(max(duration - float(clip), 0))
    step = max_start / max(clips_per_video - 1, 1)
    bounds = []
    for i in range(clips_per_video):
        start = step * i
        end = start + clip
        bounds.append((int(start * sample_rate), min(int(end * sample_rate), num_samples)))
    return bounds


_MEL_BANKS: dict = {}  # (bins, padded window, rate, device, dtype) -> [bins, padded // 2 + 1]


def _mel_banks(num_mel_bins: int, padded: int, sample_rate: int, device, dtype) -> torch.Tensor:
    key = (num_mel_bins, padded, sample_rate, str(device), dtype)
    if key not in _MEL_BANKS:
        from torchaudio.compliance import kaldi

        # Kaldi's defaults as fbank uses them: low 20 Hz, high = Nyquist, no VTLN warping
        banks, _ = kaldi.get_mel_banks(num_mel_bins, padded, float(sample_rate), 20.0, 0.0, 100.0, -500.0, 1.0)
        _MEL_BANKS[key] = F.pad(banks, (0, 1)).to(device=device, dtype=dtype)  # the Nyquist bin gets no weight
    return _MEL_BANKS[key]


def _fbank_clips(segments: torch.Tensor, num_mel_bins: int, target_length: int, sample_rate: int) -> torch.Tensor:
    """Mean-subtracted clips ``[N, n]`` (one length) -> ``[N, 1, num_mel_bins, target_length]`` log-mel.

    ImageBind's call, ``torchaudio.compliance.kaldi.fbank(clip, htk_compat=True, use_energy=False,
    window_type="hanning", num_mel_bins=..., dither=0.0, frame_length=25, frame_shift=10)`` on each
    clip, computed for all clips at once with the same steps (torchaudio's ``fbank`` and
    ``_get_window``): 25 ms frames every 10 ms (edges snipped), each frame's mean removed,
    pre-emphasis 0.97 (the first sample against itself), a symmetric Hann window, zero-padded to
    512, power spectrum, Kaldi's mel banks (20 Hz to Nyquist), ``log(max(x, float32 eps))``. Then
    transposed to ``[mel, frames]``, zero-padded or cut to ``target_length`` frames, as official.
    One call instead of one per clip: the per-clip loop cost ~20 kernel launches per clip on a GPU.
    Equal to the per-clip call to float rounding (``tests/test_pretrained_audio.py``).
    """
    size, shift = int(sample_rate * 0.025), int(sample_rate * 0.010)
    padded = 1 << (size - 1).bit_length()  # round_to_power_of_two
    frames = segments.unfold(1, size, shift)  # [N, m, size]
    frames = frames - frames.mean(dim=2, keepdim=True)  # remove_dc_offset
    frames = frames - 0.97 * torch.cat([frames[..., :1], frames[..., :-1]], dim=2)  # pre-emphasis
    frames = frames * torch.hann_window(size, periodic=False, device=frames.device, dtype=frames.dtype)
    spectrum = torch.fft.rfft(F.pad(frames, (0, padded - size))).abs().pow(2.0)  # [N, m, padded // 2 + 1]
    banks = _mel_banks(num_mel_bins, padded, sample_rate, frames.device, frames.dtype)
    eps = torch.tensor(torch.finfo(torch.float).eps, device=frames.device, dtype=frames.dtype)
    fbank = torch.max(spectrum @ banks.T, eps).log().transpose(1, 2)  # [N, mel, m]
    pad = target_length - fbank.shape[2]
    fbank = F.pad(fbank, (0, pad)) if pad > 0 else fbank[:, :, :target_length]
    return fbank.unsqueeze(1)


def imagebind_audio_clips(waveform: torch.Tensor, sample_rate: int = SAMPLE_RATE, *,
                          num_mel_bins: int = NUM_MEL_BINS, target_length: int = TARGET_LENGTH,
                          clip_duration=CLIP_DURATION, clips_per_video: int = CLIPS_PER_VIDEO,
                          mean: float = FBANK_MEAN, std: float = FBANK_STD) -> torch.Tensor:
    """ImageBind's official audio preprocessing: mono waveform(s) at any rate -> normalised log-mel clips.

    ``waveform``: ``[T]`` -> ``[clips, 1, mel, frames]`` (``[3, 1, 128, 204]``), or ``[B, T]``
    (equal lengths) -> ``[B, 3, 1, 128, 204]``; float32, on the waveform's device. The input is
    not modified. Resampling to 16 kHz uses ``torchaudio.functional.resample`` with its defaults,
    as official. Fewer than 400 samples (after resampling) raise ``ValueError``: the official code
    crashes there (no Kaldi frame). Between 400 samples and one clip (2 s) the whole waveform is
    every clip and its fbank is zero-padded to 204 frames, as official.
    """
    if not torch.is_tensor(waveform) or waveform.ndim not in (1, 2) or not waveform.is_floating_point():
        shape = tuple(waveform.shape) if torch.is_tensor(waveform) else type(waveform).__name__
        raise ValueError(f"imagebind_audio_clips expects a float mono waveform [T] or [B, T], got {shape}")
    single = waveform.ndim == 1
    buf = waveform.reshape(1, -1) if single else waveform
    buf = buf.detach().to(torch.float32)
    if int(sample_rate) != SAMPLE_RATE:
        import torchaudio.functional as AF

        buf = AF.resample(buf, orig_freq=int(sample_rate), new_freq=SAMPLE_RATE)
    else:
        buf = buf.clone()  # the mean subtraction below works in place, as official
    num_samples = buf.shape[1]
    if num_samples < MIN_SAMPLES:
        raise ValueError(f"ImageBind needs at least {MIN_SAMPLES} samples at {SAMPLE_RATE} Hz (one 25 ms fbank "
                         f"frame); got {num_samples}. The official code crashes on such input.")
    bounds = imagebind_clip_bounds(num_samples, SAMPLE_RATE, clip_duration, clips_per_video)
    mean_t = torch.tensor(mean, dtype=torch.float32, device=buf.device)
    std_t = torch.tensor(std, dtype=torch.float32, device=buf.device)
    segments = []
    for start, end in bounds:  # in order, in place: a clip sees the subtractions of the clips before it
        segment = buf[:, start:end]  # [B, n], a view of the shared buffer
        segment -= segment.mean(dim=1, keepdim=True)
        segments.append(segment.clone())  # as it is now: a later clip's subtraction must not reach it
    b, s = buf.shape[0], len(segments)
    segments = torch.stack(segments, 1).flatten(0, 1)  # [B * clips, n]
    # on a GPU, many clips per call (kernel launches dominate); on the CPU a few, whose frames stay
    # in cache (one call on 96 clips ran at half the speed of calls on 3 to 8)
    chunk = FBANK_CHUNK_CUDA if segments.is_cuda else FBANK_CHUNK_CPU
    clips = torch.cat([_fbank_clips(segments[i:i + chunk], num_mel_bins, target_length, SAMPLE_RATE)
                       for i in range(0, len(segments), chunk)])
    out = ((clips - mean_t) / std_t).unflatten(0, (b, s))  # [B, clips, 1, mel, frames]
    return out[0] if single else out


# ------------------------------------------------------------------------------------------------
# The tower
# ------------------------------------------------------------------------------------------------
class _PatchStem(nn.Module):
    """``PatchEmbedGeneric``: conv (no bias) -> tokens -> LayerNorm (eps 1e-5). Names ``proj``, ``norm_layer``."""

    def __init__(self, width: int, kernel_size: int, stride: int):
        super().__init__()
        self.proj = nn.Conv2d(1, width, kernel_size=kernel_size, stride=stride, bias=False)
        self.norm_layer = nn.LayerNorm(width)

    def forward(self, x):
        return self.norm_layer(self.proj(x).flatten(2).transpose(1, 2))


class _PosEmbedding(nn.Module):
    def __init__(self, num_tokens: int, width: int):
        super().__init__()
        self.pos_embed = nn.Parameter(torch.randn(1, num_tokens, width) * width ** -0.5)


class _AudioPreprocessor(nn.Module):
    """log-mel clips ``[N, 1, mel, frames]`` -> tokens ``[N, 1 + grid, width]`` (CLS first)."""

    def __init__(self, width: int, num_mel_bins: int, target_length: int, kernel_size: int, stride: int):
        super().__init__()
        self.rgbt_stem = _PatchStem(width, kernel_size, stride)
        self.grid = ((num_mel_bins - kernel_size) // stride + 1, (target_length - kernel_size) // stride + 1)
        self.input_size = (num_mel_bins, target_length)
        self.cls_token = nn.Parameter(torch.randn(1, 1, width) * width ** -0.5)
        self.pos_embedding_helper = _PosEmbedding(1 + self.grid[0] * self.grid[1], width)

    def forward(self, clips):
        if tuple(clips.shape[-2:]) != self.input_size or clips.ndim != 4 or clips.shape[1] != 1:
            raise ValueError(f"expected log-mel clips [N, 1, {self.input_size[0]}, {self.input_size[1]}], "
                             f"got {tuple(clips.shape)}")
        tokens = self.rgbt_stem(clips)
        tokens = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        return tokens + self.pos_embedding_helper.pos_embed


class _Mlp(nn.Module):
    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


def _drop_path(x, rate: float, training: bool):
    if rate == 0.0 or not training:
        return x
    keep = 1.0 - rate
    mask = x.new_empty((1, x.shape[1], 1)).bernoulli_(keep)  # sequence-first: one draw per sample
    return x * mask / keep


class _Block(nn.Module):
    """Pre-norm block (``BlockWithMasking``), sequence-first ``[L, N, D]``."""

    def __init__(self, width: int, heads: int, mlp_ratio: int, drop_path: float):
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads, bias=True, add_bias_kv=True)
        self.norm_1 = nn.LayerNorm(width, eps=1e-6)
        self.mlp = _Mlp(width, int(mlp_ratio * width))
        self.norm_2 = nn.LayerNorm(width, eps=1e-6)
        self.drop_path = float(drop_path)

    def forward(self, x):
        h = self.norm_1(x)
        x = x + _drop_path(self.attn(h, h, h, need_weights=False)[0], self.drop_path, self.training)
        return x + _drop_path(self.mlp(self.norm_2(x)), self.drop_path, self.training)


class _Trunk(nn.Module):
    def __init__(self, width: int, depth: int, heads: int, mlp_ratio: int, drop_path: float):
        super().__init__()
        rates = [r.item() for r in torch.linspace(0, drop_path, depth)]
        self.blocks = nn.Sequential(*[_Block(width, heads, mlp_ratio, r) for r in rates])

    def forward(self, tokens):  # [N, L, D] -> [N, L, D]
        return self.blocks(tokens.transpose(0, 1)).transpose(0, 1)


class _SelectToken(nn.Module):
    def forward(self, x):
        return x[:, 0]


class _L2Normalize(nn.Module):
    def forward(self, x):
        return F.normalize(x, dim=-1, p=2)


class _FixedLogitScale(nn.Module):
    """``LearnableLogitScaling(learnable=False)``: a ``log_logit_scale`` buffer; ``x * min(exp(s), 100)``."""

    def __init__(self, scale: float, max_scale: float = 100.0):
        super().__init__()
        self.max_scale = max_scale
        self.register_buffer("log_logit_scale", torch.ones([]) * np.log(scale))

    def forward(self, x):
        return torch.clip(self.log_logit_scale.exp(), max=self.max_scale) * x


class ImageBindAudioEncoder(AudioEncoder):
    """ImageBind's audio tower; 16 kHz mono waveforms -> embeddings in OpenCLIP ViT-H-14's image space.

    Defaults are ``imagebind_huge``'s audio tower. ``encode`` returns the official output (mean of
    the 3 clips' embeddings, each L2-normalised and scaled by 20); ``forward`` normalises it.
    ``forward(waveforms, sample_rate=R)`` resamples from ``R`` first (the official loader does).
    """

    def __init__(self, embed_dim: int = 1024, width: int = 768, depth: int = 12, heads: int = 12,
                 mlp_ratio: int = 4, num_mel_bins: int = NUM_MEL_BINS, target_length: int = TARGET_LENGTH,
                 kernel_size: int = 16, stride: int = 10, drop_path: float = 0.1, logit_scale: float = 20.0,
                 clip_model: str | None = CLIP_MODEL, clip_pretrained: str | None = CLIP_PRETRAINED,
                 clip_model_cfg: dict | None = None, clip_init_seed: int = 0):
        super().__init__(SAMPLE_RATE, embed_dim, clip_model, clip_pretrained, clip_model_cfg, clip_init_seed)
        self.num_mel_bins, self.target_length = int(num_mel_bins), int(target_length)
        self.preprocessor = _AudioPreprocessor(width, num_mel_bins, target_length, kernel_size, stride)
        self.trunk = _Trunk(width, depth, heads, mlp_ratio, drop_path)
        self.head = nn.Sequential(nn.LayerNorm(width, eps=1e-6), _SelectToken(), nn.Linear(width, embed_dim, bias=False))
        self.postprocessor = nn.Sequential(_L2Normalize(), _FixedLogitScale(logit_scale))
        self.config = dict(embed_dim=int(embed_dim), width=int(width), depth=int(depth), heads=int(heads),
                           mlp_ratio=int(mlp_ratio), num_mel_bins=int(num_mel_bins),
                           target_length=int(target_length), kernel_size=int(kernel_size), stride=int(stride),
                           drop_path=float(drop_path), logit_scale=float(logit_scale), clip_model=clip_model,
                           clip_pretrained=clip_pretrained)
        if clip_model_cfg is not None:  # a tower built from its config (train.py): rebuilt from the checkpoint
            self.config.update(clip_model_cfg=clip_model_cfg, clip_init_seed=int(clip_init_seed))

    @property
    def min_samples(self) -> int:
        return MIN_SAMPLES

    def preprocess(self, waveforms: torch.Tensor, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
        """``[B, T]`` -> ``[B, 3, 1, mel, frames]``: :func:`imagebind_audio_clips`."""
        return imagebind_audio_clips(waveforms, sample_rate, num_mel_bins=self.num_mel_bins,
                                     target_length=self.target_length)

    def embed_clips(self, clips: torch.Tensor) -> torch.Tensor:
        """Log-mel clips ``[N, 1, mel, frames]`` -> per-clip embeddings ``[N, embed_dim]`` (norm 20)."""
        weight = self.preprocessor.rgbt_stem.proj.weight
        tokens = self.preprocessor(clips.to(device=weight.device, dtype=weight.dtype))
        return self.postprocessor(self.head(self.trunk(tokens)))

    def encode(self, waveforms: torch.Tensor, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
        clips = self.preprocess(waveforms, sample_rate)  # [B, S, 1, mel, frames]
        b, s = clips.shape[:2]
        return self.embed_clips(clips.flatten(0, 1)).reshape(b, s, -1).mean(dim=1)

    def forward(self, waveforms: torch.Tensor, sample_rate: int | None = None) -> torch.Tensor:
        if sample_rate is not None and int(sample_rate) != self.sample_rate:
            if not torch.is_tensor(waveforms) or waveforms.ndim != 2 or not waveforms.is_floating_point():
                return super().forward(waveforms)  # its error message
            import torchaudio.functional as AF

            waveforms = AF.resample(waveforms.float(), orig_freq=int(sample_rate), new_freq=self.sample_rate)
        return super().forward(waveforms)

    def check_pair(self, model_name: str | None, pretrained: str | None) -> None:
        """As :meth:`AudioEncoder.check_pair`; ImageBind's own tower (the tag ``imagebind`` or an
        ImageBind file) and open_clip's ``laion2b_s32b_b79k`` ViT-H-14 are both accepted."""

        if self.clip_model == CLIP_MODEL and str(model_name).replace("/", "-") == CLIP_MODEL and (
                str(pretrained).lower() in ALTERNATIVE_PRETRAINED + (CLIP_PRETRAINED,)
                or is_imagebind_tower(model_name, pretrained)):
            return
        super().check_pair(model_name, pretrained)

    # --- weights ----------------------------------------------------------------------------
    def load_official_state_dict(self, state: dict, source="state dict") -> None:
        """Load ImageBind weights: the whole ``imagebind_huge.pth`` dict (other modalities are ignored),
        its audio keys alone, or this module's own state dict (e.g. ``{"state_dict": ...}`` written by
        avlegrad). Strict: a missing or unexpected audio key, or a wrong shape, raises
        :class:`CheckpointError`."""
        state = audio_state_dict(state, source)
        try:
            self.load_state_dict(state, strict=True)
        except RuntimeError as e:
            raise CheckpointError(source, f"ImageBind audio weights do not fit the audio tower built with "
                                  f"{self.config}: {e}") from None


def audio_state_dict(state: dict, source="state dict") -> dict:
    """The audio tower's entries of an ImageBind state dict, renamed to :class:`ImageBindAudioEncoder`'s
    names (tensors are copied out, so a memory-mapped file can be closed)."""
    if "state_dict" in state and isinstance(state["state_dict"], dict) and not any(
            k.startswith(tuple(OFFICIAL_PREFIXES)) for k in state):
        state = state["state_dict"]
    for wrapper in ("module.",):  # DistributedDataParallel-saved copies
        if state and all(k.startswith(wrapper) for k in state):
            state = {k[len(wrapper):]: v for k, v in state.items()}
    official = {k: v for k, v in state.items() if k.startswith(tuple(OFFICIAL_PREFIXES))}
    if official:
        out = {}
        for key, value in official.items():
            for prefix, ours in OFFICIAL_PREFIXES.items():
                if key.startswith(prefix):
                    out[ours + key[len(prefix):]] = value
                    break
    else:
        ours = tuple(OFFICIAL_PREFIXES.values())
        out = {k: v for k, v in state.items() if k.startswith(ours)}
        if not out:
            sample = ", ".join(list(state)[:5])
            raise CheckpointError(source, "holds no ImageBind audio weights (no keys starting with "
                                  f"'modality_trunks.audio.' etc.); its keys begin: {sample}")
    bad = [k for k, v in out.items() if not torch.is_tensor(v)]
    if bad:
        raise CheckpointError(source, f"non-tensor entries where ImageBind audio weights belong: {bad[:5]}")
    return {k: v.detach().clone() for k, v in out.items()}


@register_audio_encoder("imagebind", training=TrainingContract(),
                        test_config={"pretrained": False, "width": 64, "depth": 1, "heads": 4, "embed_dim": 32})
def imagebind(checkpoint=None, pretrained: bool = True, progress: bool = True, **kwargs) -> ImageBindAudioEncoder:
    """ImageBind (huge) audio tower, paired with ImageBind's own ViT-H-14 image tower.

    Its image tower is ``("ViT-H-14", "imagebind")``: the cached ``imagebind_huge.pth``, or the
    ``checkpoint`` file itself when that holds ImageBind's vision weights (the official file).

    ``checkpoint``: a file holding ImageBind weights (the official ``imagebind_huge.pth``, or any
    state dict with its audio keys or ours). None: ``cache_root()/weights/imagebind_huge.pth``,
    downloaded from :data:`IMAGEBIND_URL` when absent (4.5 GB). ``pretrained=False`` (and no
    checkpoint) builds a random-init tower. ``kwargs`` go to :class:`ImageBindAudioEncoder`.
    """
    encoder = build_pretrained_encoder(ImageBindAudioEncoder, "imagebind", what="ImageBind", url=IMAGEBIND_URL,
                                       filename=IMAGEBIND_FILENAME, sha256=IMAGEBIND_SHA256,
                                       load_file=load_weights_mmap, checkpoint=checkpoint, pretrained=pretrained,
                                       progress=progress, **kwargs)
    if checkpoint is not None and encoder.clip_pretrained == CLIP_PRETRAINED:

        if is_imagebind_tower(CLIP_MODEL, str(checkpoint)):  # the image tower is in the file given
            encoder.clip_pretrained = str(Path(checkpoint).expanduser().resolve())
            encoder.config["clip_pretrained"] = encoder.clip_pretrained
    return encoder

