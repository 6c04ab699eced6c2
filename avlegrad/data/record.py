"""The one sample type every dataset yields, and where a clip's files live on disk.

Two on-disk layouts are understood, per clip id:

- prepared: ``<root>/frames/<id>.jpg`` (the annotated frame; .png also read) and
  ``<root>/audio/<id>.wav`` (mono, usually 16 kHz; .flac also read), as ``data/prepare_clips.py``
  writes them and as most public repositories store them;
- raw: ``<root>/videos/<id>.mp4`` or ``<root>/<id>.mp4`` (VGGSound's 10 s clips; .mkv and .webm
  also read): the middle frame and the whole audio track are decoded with PyAV.

The prepared layout wins when both exist.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .media import MediaError, load_audio, load_frame

FRAME_SUFFIXES = (".jpg", ".png", ".jpeg")
AUDIO_SUFFIXES = (".wav", ".flac")
VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".mov", ".avi")  # the one list: datasets and localize


@dataclass
class ClipRecord:
    """One evaluation or training sample."""

    clip_id: str
    frame: np.ndarray  # [H, W, 3] uint8 RGB: the annotated frame
    waveform: np.ndarray  # [T] float32 mono
    sample_rate: int
    boxes: list | None = None  # boxes in the dataset's own convention (see box_format)
    box_format: str | None = None  # "vggss": [x0, y0, x1, y1] in [0, 1]; "flickr": 256-px boxes
    label: str | None = None  # class name, where the dataset has one
    meta: dict = field(default_factory=dict)
    mask: np.ndarray | None = None  # ground-truth mask of the segmentation benchmarks ([H, W], binary or labels)


@dataclass
class SkippedClip:
    """A clip that could not be used, and why (missing, unreadable, silent, no audio, ...).

    ``kind``: the short readable name summaries group skips under (default: :func:`skip_kind` of
    the reason)."""

    clip_id: str
    reason: str
    kind: str = ""

    def __post_init__(self):
        self.kind = self.kind or skip_kind(self.reason)


# (pattern in the reason, kind), first match wins: the kinds summaries count skips under
_SKIP_KINDS = (
    ("too short", "audio too short"), ("NaN or infinite", "non-finite audio"), ("silent audio", "silent audio"),
    ("no audio", "no audio"), ("has no audio stream", "no audio"), ("holds no samples", "no audio"),
    ("missing:", "missing files"), ("file not found", "missing files"),
    ("no frame", "no frame"), ("no video stream", "no frame"), ("holds no frames", "no frame"),
    ("too small", "frame too small"), ("no box annotation", "no box annotation"),
    ("no entry in", "no box annotation"), ("no annotation", "no box annotation"),
    ("annotation", "annotation problem"),
    ("cannot read", "unreadable media"), ("cannot decode", "unreadable media"), ("cannot open", "unreadable media"),
)


def skip_kind(reason: str) -> str:
    """The kind of a skip reason ("missing files", "audio too short", "unreadable media", ...);
    unknown reasons give their text before any details."""
    for pattern, kind in _SKIP_KINDS:
        if pattern in reason:
            return kind
    return reason.split(" (")[0].split(": ")[0][:60]


@dataclass
class ClipFiles:
    clip_id: str
    frame: Path | None = None
    audio: Path | None = None
    video: Path | None = None


def _first_existing(candidates) -> Path | None:
    return next((p for p in candidates if p.is_file()), None)


def frame_candidates(clip_id: str) -> list[str]:
    """Where a clip's frame may lie, relative to a root, in :func:`locate_clip`'s order (prepared
    frame first, else a video to take the middle frame from)."""
    return ([f"frames/{clip_id}{s}" for s in FRAME_SUFFIXES] + [f"videos/{clip_id}{s}" for s in VIDEO_SUFFIXES]
            + [f"{clip_id}{s}" for s in VIDEO_SUFFIXES])


def audio_candidates(clip_id: str) -> list[str]:
    """Where a clip's sound may lie, relative to a root (prepared audio first, else a video)."""
    return ([f"audio/{clip_id}{s}" for s in AUDIO_SUFFIXES] + [f"videos/{clip_id}{s}" for s in VIDEO_SUFFIXES]
            + [f"{clip_id}{s}" for s in VIDEO_SUFFIXES])


def first_file(root, candidates) -> Path | None:
    """The first of ``candidates`` (paths relative to ``root``) that is a file, else None."""
    root = Path(root)
    return _first_existing(root / c for c in candidates)


def locate_clip(root, clip_id: str) -> ClipFiles | None:
    """Find a clip's files under ``root`` in either layout; None when there are none."""
    root = Path(root)
    frame = _first_existing(root / "frames" / f"{clip_id}{s}" for s in FRAME_SUFFIXES)
    audio = _first_existing(root / "audio" / f"{clip_id}{s}" for s in AUDIO_SUFFIXES)
    video = _first_existing(
        [root / "videos" / f"{clip_id}{s}" for s in VIDEO_SUFFIXES]
        + [root / f"{clip_id}{s}" for s in VIDEO_SUFFIXES])
    if frame is None and audio is None and video is None:
        return None
    return ClipFiles(clip_id, frame, audio, video)


def load_clip_media(files: ClipFiles, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """The annotated frame and the whole mono waveform at ``sample_rate``.

    Raises MediaError (naming the file and the reason) when a part is missing or unreadable.
    """
    frame_src = files.frame or files.video
    audio_src = files.audio or files.video
    if frame_src is None:
        raise MediaError(files.audio, f"clip {files.clip_id}: no frame image and no video file")
    if audio_src is None:
        raise MediaError(files.frame, f"clip {files.clip_id}: no audio file and no video file")
    frame = load_frame(frame_src)  # a video gives its middle frame
    waveform, _ = load_audio(audio_src, sample_rate=sample_rate)
    return frame, waveform
