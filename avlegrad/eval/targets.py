"""Where a benchmark run's targets come from: each clip's sound through an audio encoder
(:class:`AudioTargets`) or a text prompt with its class name (:class:`TextTargets`). Both give
``(B, D)`` embeddings in the image tower's space, one per clip, independent of the batch."""
from __future__ import annotations

import numpy as np
import torch

from ..models import encode_text


class AudioTargets:
    """Targets from each clip's sound through an audio encoder."""

    def __init__(self, encoder):
        self.encoder = encoder

    def problem(self, record) -> str | None:
        """Why this clip's sound cannot be embedded (too short for the encoder, ...), or None."""
        return self.encoder.check_waveform(record.waveform, allow_silent=record.meta.get("negative", False))

    @torch.no_grad()
    def __call__(self, records, device) -> torch.Tensor:
        out = torch.empty(len(records), self.encoder.embed_dim, device=device)
        by_length: dict[int, list[int]] = {}
        for i, r in enumerate(records):
            by_length.setdefault(len(r.waveform), []).append(i)
        for idx in by_length.values():  # only equal lengths share a batch: no padding effects
            waves = torch.from_numpy(np.stack([records[i].waveform for i in idx])).to(device)
            out[idx] = self.encoder.embed_each(waves).to(out.dtype)  # a clip's target never depends on the batch
        return out


class TextTargets:
    """Targets from a text prompt with each clip's class name (CLIP's text tower)."""

    def __init__(self, model, model_name: str, prompt: str):
        self.model, self.model_name, self.prompt = model, model_name, prompt
        self.cache: dict[str, torch.Tensor] = {}

    def problem(self, record) -> str | None:
        return None  # a clip without a class name stops the run (below): it is the setting that is wrong

    @torch.no_grad()
    def __call__(self, records, device) -> torch.Tensor:
        missing = sorted({r.label for r in records if r.label not in self.cache})
        if None in missing:
            clip = next(r.clip_id for r in records if r.label is None)
            raise ValueError(f"clip {clip} has no class label, so `target=text` has no prompt for it; "
                             f"use `target=audio` with an `audio_encoder`")
        if missing:
            embeddings = encode_text(self.model, self.model_name, [self.prompt.format(label) for label in missing])
            self.cache.update(zip(missing, embeddings))
        return torch.stack([self.cache[r.label] for r in records]).to(device)

