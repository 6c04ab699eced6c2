"""Wav2CLIP (descriptinc/lyrebird-wav2clip): a ResNet-18 audio encoder distilled into OpenAI CLIP ViT-B/32.

Reproduces the official clip-level path ``wav2clip.get_model()`` + ``embed_audio`` (read from
``wav2clip/__init__.py``, ``wav2clip/model/encoder.py`` (``ResNetExtractor``, ``MLPLayers``),
``wav2clip/model/resnet.py`` (``ResNet``, ``BasicBlock``) and ``wav2clip/pre_training/model.py``):

* ``torchaudio.transforms.Spectrogram(n_fft=512, hop_length=353)`` (periodic Hann window of 512,
  centred, reflect padding, power 2) of the waveform ``[B, 1, T]`` -> ``[B, 1, 257, 1 + T // 353]``;
* ``log(x + 1e-7)``, then ``(x - mean) / (std + 1e-9)`` with the mean and unbiased std of the
  tensor ``embed_audio`` is given: for one file, that file's own statistics. ``normalize="per_input"``
  (the default) standardises each input with its own statistics, so a batch gives every input the
  official embedding of that input alone; ``normalize="batch"`` reproduces the official call on a
  whole batch (statistics over the batch tensor: an input's embedding then depends on its
  batch-mates, which is why :meth:`AudioEncoder.embed_each`, used by eval and localize, embeds
  one input at a time in that mode);
* ResNet-18 (BasicBlock [2, 2, 2, 2], conv1 7x7/2 with 1 input channel, no bias, BN, ReLU,
  maxpool 3/2; global average pool) -> 512;
* ``audio_transform``: Linear(512, 512), ReLU, Dropout(0.1), Linear(512, 512). No normalisation in
  the official code; ``forward`` L2-normalises (``encode`` gives the official vector).

The official code never resamples: the model expects 16 kHz. Here ``sample_rate`` is 16000,
``embed_files`` resamples files to it, and ``forward(x, sample_rate=R)`` with ``R != 16000`` is
refused. Inputs must be float32 (the official model crashes on float64) and longer than 256
samples (the reflect padding of 256 needs more; the official code crashes).

State-dict names equal the official ones: ``audio_encoder.*`` (the ResNet, including
``audio_encoder.spectrogram.window``) and ``audio_transform.sequential.0.*`` / ``.3.*``. Two official
layouts exist and both load: wav2clip 0.1.0 (PyPI, the release whose ``get_model`` downloads
``Wav2CLIP.pt``) reads the file as a flat state dict and its ResNet has no classifier; the
repository's later ``encoder.py`` reads ``checkpoint["state_dict"]`` and its ResNet holds a
classifier ``fc`` (1000 x 512; 309 x 512 in the pre-training module) that its forward never calls.
That ``audio_encoder.fc.*`` is not built here and is skipped when loading, as are entries of other
modules (``image_transform.*``, loss temperatures, Lightning metadata).

Weights: ``Wav2CLIP.pt`` from the GitHub release v0.1.0-alpha (:data:`WAV2CLIP_URL`); the
repository is MIT-licensed and states no other licence for the weights.
"""
from __future__ import annotations

import re
import warnings
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

from .base import AudioEncoder
from .factory import (CheckpointError, TrainingContract, build_pretrained_encoder, load_checkpoint_file,
                      register_audio_encoder)

WAV2CLIP_URL = "https://github.com/descriptinc/lyrebird-wav2clip/releases/download/v0.1.0-alpha/Wav2CLIP.pt"
WAV2CLIP_FILENAME = "Wav2CLIP.pt"
# Not published and not computable here; None: the download is not checked and its digest is
# written next to it (``Wav2CLIP.pt.sha256``).
WAV2CLIP_SHA256: str | None = None

CLIP_MODEL = "ViT-B-32"
CLIP_PRETRAINED = "openai"
SAMPLE_RATE = 16000
N_FFT = 512
HOP_LENGTH = 353
MIN_SAMPLES = N_FFT // 2 + 1  # reflect padding by 256 needs more than 256 samples
LOG_EPS = 1e-7
STD_EPS = 1e-9
NORMALIZE_MODES = ("batch", "per_input")


def wav2clip_log_spectrogram(waveforms: torch.Tensor, normalize: str = "per_input",
                             spectrogram: nn.Module | None = None) -> torch.Tensor:
    """The official front end: 16 kHz float32 ``[B, T]`` -> standardised log power spectrogram
    ``[B, 1, 257, 1 + T // 353]`` (see the module docstring)."""
    if normalize not in NORMALIZE_MODES:
        raise ValueError(f"normalize must be one of {NORMALIZE_MODES}, got {normalize!r}")
    if spectrogram is None:
        import torchaudio

        spectrogram = torchaudio.transforms.Spectrogram(n_fft=N_FFT, hop_length=HOP_LENGTH).to(waveforms.device)
    x = torch.log(spectrogram(waveforms.unsqueeze(1)) + LOG_EPS)
    if normalize == "batch":
        return (x - torch.mean(x)) / (torch.std(x) + STD_EPS)
    dims = tuple(range(1, x.ndim))
    return (x - x.mean(dim=dims, keepdim=True)) / (x.std(dim=dims, keepdim=True) + STD_EPS)


class _BasicBlock(nn.Module):
    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False),
                                            nn.BatchNorm2d(planes))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Wav2CLIPResNet(nn.Module):
    """The official ``ResNet`` (BasicBlock [2, 2, 2, 2], avgpool) minus its unused ``fc``:
    standardised log-spectrogram -> 512 features."""

    def __init__(self, layers=(2, 2, 2, 2), normalize: str = "per_input"):
        super().__init__()
        import torchaudio

        if normalize not in NORMALIZE_MODES:
            raise ValueError(f"normalize must be one of {NORMALIZE_MODES}, got {normalize!r}")
        self.normalize = normalize
        self.spectrogram = torchaudio.transforms.Spectrogram(n_fft=N_FFT, hop_length=HOP_LENGTH)
        self.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        inplanes = 64
        for i, (planes, blocks) in enumerate(zip((64, 128, 256, 512), layers)):
            stride = 1 if i == 0 else 2
            stage = [_BasicBlock(inplanes, planes, stride)] + [_BasicBlock(planes, planes) for _ in range(blocks - 1)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*stage))
            inplanes = planes
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, waveforms):
        x = wav2clip_log_spectrogram(waveforms, self.normalize, self.spectrogram)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.avgpool(x).flatten(1)


class _AudioTransform(nn.Module):
    """``MLPLayers([512, 512, 512], dropout=0.1)``: ``sequential`` = Linear, ReLU, Dropout, Linear."""

    def __init__(self, width: int = 512, dropout: float = 0.1):
        super().__init__()
        self.sequential = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Dropout(dropout),
                                        nn.Linear(width, width))

    def forward(self, x):
        return self.sequential(x)


class Wav2CLIPEncoder(AudioEncoder):
    """Wav2CLIP: 16 kHz float32 waveforms -> 512-d embeddings in OpenAI CLIP ViT-B/32's image space.

    ``normalize``: ``"per_input"`` (default: each input standardised with its own spectrogram
    statistics, = the official ``embed_audio`` of that input alone) or ``"batch"`` (the official
    call on a whole batch: statistics over the batch, so inputs depend on their batch-mates;
    ``batch_independent`` is then False and ``embed_each``/``embed_files`` embed one at a time).
    """

    def __init__(self, normalize: str = "per_input", dropout: float = 0.1,
                 clip_model: str | None = CLIP_MODEL, clip_pretrained: str | None = CLIP_PRETRAINED,
                 clip_model_cfg: dict | None = None, clip_init_seed: int = 0):
        super().__init__(SAMPLE_RATE, 512, clip_model, clip_pretrained, clip_model_cfg, clip_init_seed)
        self.audio_encoder = Wav2CLIPResNet(normalize=normalize)
        self.audio_transform = _AudioTransform(512, dropout)
        self.config = dict(normalize=normalize, dropout=float(dropout), clip_model=clip_model,
                           clip_pretrained=clip_pretrained)
        if clip_model_cfg is not None:  # a tower built from its config (train.py): rebuilt from the checkpoint
            self.config.update(clip_model_cfg=clip_model_cfg, clip_init_seed=int(clip_init_seed))

    @property
    def normalize(self) -> str:
        return self.audio_encoder.normalize

    @normalize.setter
    def normalize(self, mode: str) -> None:
        if mode not in NORMALIZE_MODES:
            raise ValueError(f"normalize must be one of {NORMALIZE_MODES}, got {mode!r}")
        self.audio_encoder.normalize = mode
        self.config["normalize"] = mode

    @property
    def min_samples(self) -> int:
        return MIN_SAMPLES

    @property
    def batch_independent(self) -> bool:
        return self.normalize != "batch"

    def encode(self, waveforms: torch.Tensor) -> torch.Tensor:
        if waveforms.dtype != torch.float32:
            raise ValueError(f"Wav2CLIP expects float32 waveforms (the official model fails on other dtypes), "
                             f"got {waveforms.dtype}; convert with .float()")
        return self.audio_transform(self.audio_encoder(waveforms))

    def forward(self, waveforms: torch.Tensor, sample_rate: int | None = None) -> torch.Tensor:
        if sample_rate is not None and int(sample_rate) != self.sample_rate:
            raise ValueError(f"Wav2CLIP expects {self.sample_rate} Hz audio (the official code never resamples and "
                             f"silently mis-embeds other rates); got {sample_rate} Hz: resample first, e.g. with "
                             "torchaudio.functional.resample, or use embed_files, which resamples files")
        return super().forward(waveforms)

    def load_official_state_dict(self, checkpoint: dict, source="state dict") -> None:
        """Load the official ``Wav2CLIP.pt`` (a Lightning checkpoint: ``{"state_dict": {...}}``) or a
        bare state dict with the same names. ``audio_encoder.fc.*`` and non-audio entries are skipped;
        every other ``audio_encoder.*`` / ``audio_transform.*`` entry must fit exactly."""
        state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else checkpoint
        if not isinstance(state, dict):
            raise CheckpointError(source, f"expected a state dict under 'state_dict', found {type(state).__name__}")
        audio = {k: v for k, v in state.items()
                 if k.startswith(("audio_encoder.", "audio_transform.")) and not k.startswith("audio_encoder.fc.")}
        if not audio:
            sample = ", ".join(list(state)[:5])
            raise CheckpointError(source, "holds no Wav2CLIP audio weights (no 'audio_encoder.*' / "
                                  f"'audio_transform.*' keys); its keys begin: {sample}")
        try:
            self.load_state_dict(audio, strict=True)
        except RuntimeError as e:
            raise CheckpointError(source, f"Wav2CLIP weights do not fit: {e}") from None


class _InertObject:
    """Stands in for a class that a Lightning checkpoint pickles besides its tensors (hyper-parameter
    containers, ``argparse.Namespace``, ...). Creating one gives an empty ``OrderedDict`` (a type the
    weights-only unpickler fills: items via SETITEMS, attributes via BUILD into its ``__dict__``), so
    no foreign code is imported or run and the contents stay readable."""

    def __new__(cls, *args, **kwargs):
        return OrderedDict()


_UNSUPPORTED = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")


def load_wav2clip_file(path) -> dict:
    """Read ``Wav2CLIP.pt`` with ``torch.load(weights_only=True)``.

    A Lightning checkpoint may pickle non-tensor objects (hyper-parameters) besides the weights;
    those classes are replaced by inert placeholders (never imported nor run), so the weights
    load without ``weights_only=False``.
    """
    try:
        return load_checkpoint_file(path)
    except CheckpointError as e:
        if "holds objects other than tensors" not in e.reason:
            raise
    stubs: list = []
    for _ in range(50):
        try:
            with warnings.catch_warnings(), torch.serialization.safe_globals(stubs):
                warnings.simplefilter("ignore", UserWarning)
                obj = torch.load(Path(path), map_location="cpu", weights_only=True)
            break
        except Exception as e:  # noqa: BLE001  (pickle errors come in many types)
            match = _UNSUPPORTED.search(str(e))
            if not match:
                raise CheckpointError(path, f"cannot read the checkpoint with torch.load(weights_only=True): "
                                      f"{type(e).__name__}: {str(e).strip().splitlines()[0][:200]}") from None
            name = match.group(1)
            stubs.append((type(name.rsplit(".", 1)[-1], (_InertObject,), {}), name))
    else:
        raise CheckpointError(path, "too many non-tensor classes pickled in the checkpoint")
    if not isinstance(obj, dict):
        raise CheckpointError(path, f"expected a dict (a checkpoint), found {type(obj).__name__}")
    return obj


@register_audio_encoder("wav2clip", training=TrainingContract(embed_dim=512), test_config={"pretrained": False})
def wav2clip(checkpoint=None, pretrained: bool = True, progress: bool = True, **kwargs) -> Wav2CLIPEncoder:
    """Wav2CLIP for OpenAI CLIP ViT-B/32.

    ``checkpoint``: the official ``Wav2CLIP.pt`` or a state dict with its names. None:
    ``cache_root()/weights/Wav2CLIP.pt``, downloaded from :data:`WAV2CLIP_URL` when absent.
    ``pretrained=False`` (and no checkpoint): random init. ``kwargs`` go to :class:`Wav2CLIPEncoder`
    (``normalize="per_input"|"batch"``).
    """
    return build_pretrained_encoder(Wav2CLIPEncoder, "wav2clip", what="Wav2CLIP", url=WAV2CLIP_URL, filename=WAV2CLIP_FILENAME,
                                    sha256=WAV2CLIP_SHA256, load_file=load_wav2clip_file, checkpoint=checkpoint,
                                    pretrained=pretrained, progress=progress, **kwargs)
