"""The one interface every audio encoder obeys: mono waveforms -> unit embeddings in a CLIP space."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.media import load_audio, waveform_problem
from .clip_space import check_clip_pair


class AudioEncoder(nn.Module):
    """Base class: ``forward(waveforms [B, T]) -> [B, embed_dim]``, L2-normalised.

    Waveforms are mono float at ``self.sample_rate``, all of one length ``T`` (a tensor). The
    embedding lives in the image-embedding space of the open_clip tower named by ``clip_model``
    and ``clip_pretrained`` (a tag, a checkpoint path, or None for a random-init tower that
    ``clip_model_cfg`` / ``clip_init_seed`` rebuild); ``check_pair`` guards against explaining
    a different tower. Subclasses implement ``encode`` (unnormalised embeddings); ``forward``
    checks the input and normalises, so every encoder returns unit vectors.
    """

    def __init__(self, sample_rate: int, embed_dim: int, clip_model: str | None = None,
                 clip_pretrained: str | None = None, clip_model_cfg: dict | None = None,
                 clip_init_seed: int = 0):
        super().__init__()
        self.sample_rate = int(sample_rate)
        self.embed_dim = int(embed_dim)
        self.clip_model = clip_model
        self.clip_pretrained = clip_pretrained
        self.clip_model_cfg = clip_model_cfg
        self.clip_init_seed = int(clip_init_seed)

    # --- to implement -------------------------------------------------------------------------
    def encode(self, waveforms: torch.Tensor) -> torch.Tensor:
        """``[B, T]`` -> ``[B, embed_dim]``, not necessarily normalised."""
        raise NotImplementedError

    @property
    def min_samples(self) -> int:
        """Shortest waveform the encoder accepts (each encoder declares its own)."""
        return 1

    def check_waveform(self, waveform, allow_silent: bool = False) -> str | None:
        """Why one clip's waveform ``[T]`` cannot be embedded (too short for this encoder, not
        finite, silent), as a one-line reason; None when it can. Callers check every clip before
        batching, so one bad clip is skipped instead of failing its whole batch."""
        return waveform_problem(waveform, self.min_samples, self.sample_rate, type(self).__name__, allow_silent)

    @property
    def batch_independent(self) -> bool:
        """Whether an input's embedding is independent of its batch-mates (False: Wav2CLIP's
        ``normalize="batch"``); :meth:`embed_each` then embeds one input at a time."""
        return True

    # --- shared -------------------------------------------------------------------------------
    def embed_each(self, waveforms: torch.Tensor) -> torch.Tensor:
        """``forward`` with each input embedded as if alone: ``[B, T]`` -> ``[B, embed_dim]``.

        Equal to ``forward`` for batch-independent encoders (one call); otherwise one call per
        input, so a clip's embedding never depends on what it is batched with (eval, localize).
        """
        if self.batch_independent or len(waveforms) <= 1:
            return self(waveforms)
        return torch.cat([self(w[None]) for w in waveforms])

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        if not torch.is_tensor(waveforms) or waveforms.ndim != 2 or not waveforms.is_floating_point():
            shape = tuple(waveforms.shape) if torch.is_tensor(waveforms) else type(waveforms).__name__
            raise ValueError(f"{type(self).__name__} expects float mono waveforms [B, T] at "
                             f"{self.sample_rate} Hz, got {shape}")
        if waveforms.shape[1] < self.min_samples:
            seconds = self.min_samples / self.sample_rate
            raise ValueError(f"waveforms have {waveforms.shape[1]} samples; {type(self).__name__} needs at least "
                             f"{self.min_samples} ({seconds:.3f} s at {self.sample_rate} Hz)")
        return F.normalize(self.encode(waveforms).float(), dim=-1)

    @property
    def clip_tower_spec(self) -> dict:
        """Keyword arguments of ``avlegrad.models.create_clip_tower`` that rebuild the matching image tower."""
        return {"model": self.clip_model, "pretrained": self.clip_pretrained,
                "model_cfg": self.clip_model_cfg, "init_seed": self.clip_init_seed}

    def check_pair(self, model_name: str | None, pretrained: str | None) -> None:
        """Raise ValueError if the image tower ``(model_name, pretrained)`` is not this encoder's space."""
        if self.clip_model is None:
            raise ValueError(f"{type(self).__name__} does not name the CLIP space it embeds into "
                             "(clip_model is None); cannot pair it with an image tower")
        check_clip_pair((self.clip_model, self.clip_pretrained), model_name, pretrained,
                        what=f"audio encoder {type(self).__name__}")

    @property
    def device(self) -> torch.device:
        p = next(self.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    def load_waveform(self, path, duration: float | None = None) -> np.ndarray:
        """A file's audio as mono float32 at ``sample_rate`` (any format media.load_audio reads).

        ``duration`` (s) keeps the first ``duration`` seconds, zero-padding a shorter file.
        """
        audio, _ = load_audio(path, sample_rate=self.sample_rate, mono=True, duration=duration)
        if duration is not None:
            audio = crop_or_pad(audio, int(round(duration * self.sample_rate)))
        if len(audio) < self.min_samples:
            raise ValueError(f"{path}: {len(audio)} samples at {self.sample_rate} Hz; {type(self).__name__} needs "
                             f"at least {self.min_samples}")
        return audio

    @torch.no_grad()
    def embed_files(self, paths, device=None, batch_size: int = 16, duration: float | None = None) -> torch.Tensor:
        """Embed audio files (wav/flac/... or the audio track of an mp4): ``[N, embed_dim]`` on ``device``.

        Files are resampled to ``sample_rate`` and mixed to mono. Files of different lengths are
        never padded together: only files of equal length share a batch, and an encoder whose output
        depends on its batch-mates embeds them one at a time, so each embedding is the one the file
        gets on its own (pass ``duration`` to cut or zero-pad all files to one length and batch them all). Runs in eval mode and restores the previous mode; ``device`` (default:
        where the encoder is) moves the encoder there, like ``.to(device)``.
        """
        paths = [Path(p) for p in paths]
        if device is not None:
            self.to(device)
        device = self.device
        waves = [self.load_waveform(p, duration) for p in paths]
        by_length: dict[int, list[int]] = {}
        for i, w in enumerate(waves):
            by_length.setdefault(len(w), []).append(i)
        out = torch.empty(len(paths), self.embed_dim, device=device)
        was_training = self.training
        self.eval()
        try:
            for indices in by_length.values():
                for start in range(0, len(indices), batch_size):
                    chunk = indices[start:start + batch_size]
                    batch = torch.from_numpy(np.stack([waves[i] for i in chunk])).to(device)
                    out[chunk] = self.embed_each(batch)
        finally:
            self.train(was_training)
        return out


def crop_or_pad(waveform: np.ndarray, num_samples: int, start: int = 0) -> np.ndarray:
    """``num_samples`` samples of ``waveform`` from ``start``, zero-padded at the end when short."""
    piece = waveform[start:start + num_samples]
    if len(piece) < num_samples:
        piece = np.pad(piece, (0, num_samples - len(piece)))
    return np.ascontiguousarray(piece, dtype=np.float32)
