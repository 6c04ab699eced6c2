"""The dataset base classes every benchmark builds on: :class:`ClipEntry` (what a dataset knows
about a clip before reading its media), :class:`ClipDataset` (``dataset[i]`` is a
:class:`ClipRecord` or a :class:`SkippedClip`) and ``collate_clips``.

They live apart from the benchmarks (``datasets.py``, ``segmentation.py``, ``sslalignment.py``) so
that each benchmark module imports them at its top: no import cycle, and every dataset class is a
module-level class, so datasets pickle (DataLoader workers under the spawn start method).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from .annotations import AnnotationReport
from .media import MediaError, waveform_problem
from .record import ClipFiles, ClipRecord, SkippedClip, first_file, load_clip_media, locate_clip


@dataclass
class ClipEntry:
    """What a dataset knows about a clip before reading its media."""

    clip_id: str
    boxes: list | None = None
    box_format: str | None = None
    label: str | None = None
    meta: dict = field(default_factory=dict)
    video: Path | None = None  # a known video file (folder dataset); else located under root
    # where the frame / the sound may lie, relative to root, first existing wins (entries whose frame
    # and sound are separate files of their own names: the SSLalignment sets, non-sounding pairs)
    frame_candidates: tuple = ()
    audio_candidates: tuple = ()


def collate_clips(batch) -> tuple[list[ClipRecord], list[SkippedClip]]:
    """DataLoader ``collate_fn``: ``(records, skipped)``; frames stay as they are (batching
    tensors is the caller's job, after its own preprocessing)."""
    records = [item for item in batch if isinstance(item, ClipRecord)]
    skipped = [item for item in batch if isinstance(item, SkippedClip)]
    return records, skipped


class ClipDataset(Dataset):
    """A list of clips under ``root``; ``dataset[i]`` is a ClipRecord or a SkippedClip."""

    collate = staticmethod(collate_clips)

    def __init__(self, name: str, root, entries: list[ClipEntry], *, split: str = "test",
                 sample_rate: int = 16000, annotation_report: AnnotationReport | None = None,
                 requires_boxes: bool = False, media: bool = True):
        self.name = name
        self.root = Path(root)
        self.split = split
        self.sample_rate = sample_rate
        self.entries = list(entries)
        self.annotation_report = annotation_report or AnnotationReport(clips=len(self.entries))
        self.requires_boxes = requires_boxes  # a box benchmark skips clips without boxes
        # False: records carry the annotations only (frame None, no samples), for methods that need
        # no media (the centre prior): every annotation is scored with nothing on disk
        self.media = media

    @property
    def ids(self) -> list[str]:
        return [e.clip_id for e in self.entries]

    def __len__(self) -> int:
        return len(self.entries)

    def __repr__(self) -> str:
        return f"ClipDataset({self.name!r}, split={self.split!r}, root={str(self.root)!r}, clips={len(self)})"

    def __getitem__(self, index: int) -> ClipRecord | SkippedClip:
        entry = self.entries[index]
        try:
            return self._load(entry)
        except MediaError as e:
            where = "" if e.path in e.reason else f" ({e.path})"
            return SkippedClip(entry.clip_id, f"{e.reason}{where}")
        except (OSError, ValueError, RuntimeError, EOFError) as e:  # any other decoding failure
            return SkippedClip(entry.clip_id, f"cannot read clip ({type(e).__name__}: {e})")

    def _load(self, entry: ClipEntry) -> ClipRecord | SkippedClip:
        if self.requires_boxes and entry.boxes is None:
            return SkippedClip(entry.clip_id, entry.meta.get("annotation_problem", "no box annotation"))
        meta = {"dataset": self.name, "split": self.split, **entry.meta}
        if not self.media:
            return ClipRecord(entry.clip_id, None, np.zeros(0, np.float32), self.sample_rate, boxes=entry.boxes,
                              box_format=entry.box_format, label=entry.label, meta=meta)
        if entry.frame_candidates or entry.audio_candidates:
            files = ClipFiles(entry.clip_id, frame=first_file(self.root, entry.frame_candidates),
                              audio=first_file(self.root, entry.audio_candidates))
            lacking = [f"{kind} file (e.g. {entry.meta.get(f'{kind}_hint', candidates[0])})"
                       for kind, found, candidates in (("frame", files.frame, entry.frame_candidates),
                                                       ("audio", files.audio, entry.audio_candidates)) if found is None]
            if lacking:
                return SkippedClip(entry.clip_id, f"missing: no {' and no '.join(lacking)} under {self.root}")
            frame, waveform = load_clip_media(files, self.sample_rate)
            problem = _media_problem(frame, waveform, allow_silent=entry.meta.get("negative", False))
            if problem:
                return SkippedClip(entry.clip_id, problem)
            return ClipRecord(entry.clip_id, frame, waveform, self.sample_rate, boxes=entry.boxes,
                              box_format=entry.box_format, label=entry.label, meta=meta)
        files = ClipFiles(entry.clip_id, video=entry.video) if entry.video else locate_clip(self.root, entry.clip_id)
        if files is None:
            return SkippedClip(entry.clip_id, f"missing: no frame, audio or video file under {self.root}")
        frame, waveform = load_clip_media(files, self.sample_rate)
        problem = _media_problem(frame, waveform)
        if problem:
            return SkippedClip(entry.clip_id, problem)
        return ClipRecord(entry.clip_id, frame, waveform, self.sample_rate, boxes=entry.boxes,
                          box_format=entry.box_format, label=entry.label, meta=meta)


def _media_problem(frame: np.ndarray, waveform: np.ndarray, allow_silent: bool = False) -> str | None:
    """Why a decoded clip cannot be scored, or None. ``allow_silent``: silence is the point of the
    sample (a non-sounding pair of the extended sets), not a defect."""
    if frame is None or frame.ndim != 3 or frame.shape[0] == 0 or frame.shape[1] == 0:
        return f"no frame (decoded shape {None if frame is None else frame.shape})"
    if waveform.size == 0:
        return "no audio samples"
    if allow_silent:  # the extended sets' non-sounding pairs may be silent: scored as negatives, not skipped
        return None if np.isfinite(waveform).all() else "audio holds NaN or infinite samples"
    return waveform_problem(waveform)  # non-finite or silent (each encoder's minimum length: eval)
