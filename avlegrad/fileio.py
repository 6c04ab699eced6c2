"""Atomic file writes: the one helper every result, map, figure, checkpoint and cache file goes through.

A file is written to a hidden temporary name beside its destination (``.<stem>.tmp<pid><suffix>``:
same folder, so the rename is atomic; the suffix kept, so writers that infer the format from it
— ``np.savez``, ``matplotlib``, ``cv2`` — still do; the leading dot, so folder scans skip a
half-written file) and renamed over the destination only once complete. An interrupted write
leaves the old file (or none) and no temporary file behind.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path


def temporary_name(path) -> Path:
    """The hidden temporary file ``path`` is written to before the rename."""
    path = Path(path)
    return path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")


@contextmanager
def atomic_path(path):
    """``with atomic_path(path) as tmp: write(tmp)``: ``tmp`` replaces ``path`` when the block
    ends without an error; on an error ``path`` is untouched and ``tmp`` removed. Creates the
    parent folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns ``Path(path)``."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_bytes_atomic(path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns ``Path(path)``."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)
