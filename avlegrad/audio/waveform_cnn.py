"""``waveform-cnn``: a small 1-D CNN on the raw waveform, in the style of SoundNet
(Aytar et al., NeurIPS 2016): strided convolutions over samples, each followed by batch norm and
ReLU, then a mean over time and one linear layer into the CLIP space. No spectrogram, so
it is the encoder to try where the front-end itself is under study; it is trained with
``train.py`` (``encoder: {name: waveform-cnn, ...}``) like the timm encoders.

Shapes: ``[B, T]`` float mono waveforms at ``sample_rate`` Hz (any ``T >= 1``: every layer pads
by half its kernel, and pools round up) -> ``[B, embed_dim]`` unit vectors
(``AudioEncoder.forward`` normalises ``encode``'s output).
"""
from __future__ import annotations

import torch
from torch import nn

from .base import AudioEncoder
from .factory import TrainingContract, register_audio_encoder


class WaveformCNN(AudioEncoder):
    """``channels[i]`` filters of ``kernels[i]`` samples, stride ``strides[i]`` per layer (the
    defaults: SoundNet-8's first five layers, narrower). ``embed_dim`` and the ``clip_*``
    arguments name the CLIP space the encoder embeds into (see :class:`AudioEncoder`)."""

    def __init__(self, embed_dim: int = 512, channels=(16, 32, 64, 128, 256), kernels=(64, 32, 16, 8, 4),
                 strides=(2, 2, 2, 2, 2), pools=(8, 8, 1, 1, 1), sample_rate: int = 16000,
                 clip_model: str | None = "ViT-B-16", clip_pretrained: str | None = "openai",
                 clip_model_cfg: dict | None = None, clip_init_seed: int = 0):
        super().__init__(sample_rate, embed_dim, clip_model, clip_pretrained, clip_model_cfg, clip_init_seed)
        if not len(channels) == len(kernels) == len(strides) == len(pools) or not channels:
            raise ValueError(f"channels, kernels, strides and pools must be lists of one length, got "
                             f"{len(channels)}, {len(kernels)}, {len(strides)}, {len(pools)}")
        layers, width = [], 1
        for c, k, s, p in zip(channels, kernels, strides, pools):
            layers += [nn.Conv1d(width, c, k, stride=s, padding=k // 2), nn.BatchNorm1d(c), nn.ReLU(inplace=True)]
            if p > 1:
                layers.append(nn.MaxPool1d(p, ceil_mode=True))
            width = c
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(width, embed_dim)
        self.config = dict(embed_dim=int(embed_dim), channels=list(channels), kernels=list(kernels),
                           strides=list(strides), pools=list(pools), sample_rate=int(sample_rate),
                           clip_model=clip_model, clip_pretrained=clip_pretrained, clip_model_cfg=clip_model_cfg,
                           clip_init_seed=int(clip_init_seed))

    def encode(self, waveforms: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(waveforms.unsqueeze(1)).mean(dim=-1))


@register_audio_encoder("waveform-cnn", training=TrainingContract(),
                        test_config={"embed_dim": 32, "channels": (8, 16), "kernels": (32, 8), "strides": (4, 4),
                                     "pools": (4, 1)})
def waveform_cnn(**kwargs) -> WaveformCNN:
    """A raw-waveform CNN; see :class:`WaveformCNN` for the arguments."""
    return WaveformCNN(**kwargs)
