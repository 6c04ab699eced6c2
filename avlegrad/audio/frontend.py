"""Audio front-ends: mono waveforms ``[B, T]`` -> time-frequency images ``[B, 1, F, frames]``."""
from __future__ import annotations

import torch
import torchaudio
from torch import nn


class LogMel(nn.Module):
    """Log mel power spectrogram, as a one-channel image for a 2-D backbone.

    ``torchaudio.transforms.MelSpectrogram`` with its defaults (periodic Hann window of ``n_fft``
    samples, centred frames with reflect padding, power 2, HTK mel scale, no filter-bank norm),
    then ``log(max(mel, floor))``. The floor keeps silence finite. No dither and no random
    augmentation, so the output is a deterministic function of the input.
    Returns ``[B, 1, n_mels, 1 + T // hop_length]``.
    """

    def __init__(self, sample_rate: int = 16000, n_fft: int = 1024, hop_length: int = 160,
                 win_length: int | None = None, n_mels: int = 128, f_min: float = 0.0,
                 f_max: float | None = None, floor: float = 1e-6):
        super().__init__()
        self.sample_rate = int(sample_rate)
        self.n_fft = int(n_fft)
        self.hop_length = int(hop_length)
        self.n_mels = int(n_mels)
        self.floor = float(floor)
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=self.sample_rate, n_fft=self.n_fft, win_length=win_length,
            hop_length=self.hop_length, f_min=f_min, f_max=f_max, n_mels=self.n_mels,
            power=2.0, center=True, pad_mode="reflect", norm=None, mel_scale="htk")

    @property
    def min_samples(self) -> int:
        """Shortest input the centred STFT accepts (reflect padding needs more than n_fft // 2)."""
        return self.n_fft // 2 + 1

    def num_frames(self, num_samples: int) -> int:
        return 1 + num_samples // self.hop_length

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        if waveforms.ndim != 2:
            raise ValueError(f"LogMel expects mono waveforms [B, T], got shape {tuple(waveforms.shape)}")
        if waveforms.shape[1] < self.min_samples:
            raise ValueError(
                f"waveforms have {waveforms.shape[1]} samples; LogMel(n_fft={self.n_fft}) needs at "
                f"least {self.min_samples} ({self.min_samples / self.sample_rate:.3f} s at {self.sample_rate} Hz)")
        # the STFT runs in float32 even under autocast: bf16 FFTs are unsupported or inaccurate
        with torch.autocast(device_type=waveforms.device.type, enabled=False):
            mel = self.mel(waveforms.float())
            return torch.log(torch.clamp(mel, min=self.floor)).unsqueeze(1)

    def extra_repr(self) -> str:
        return (f"sample_rate={self.sample_rate}, n_fft={self.n_fft}, hop_length={self.hop_length}, "
                f"n_mels={self.n_mels}, floor={self.floor}")
