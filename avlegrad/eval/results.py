"""The files of a benchmark run's folder (``avlegrad.eval.run``), and how its figures print.

Rows are JSON lines: ``clips.jsonl`` (merged) and ``clips.rank<r>.jsonl`` (one per process while
running, flushed after every batch). A writer killed mid-line leaves a torn last line: readers skip
it (:func:`read_jsonl`) and writers end it first (:func:`end_torn_line`), so a resumed run loses at
most that row. Summaries are strict JSON (:func:`json_safe`: NaN/inf as null).
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path


def read_jsonl(path: Path) -> list[dict]:
    """Lines of a JSONL file; a torn last line (a killed writer) is ignored."""
    rows = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def end_torn_line(path: Path) -> None:
    """A killed writer may leave half a line: end it, so the next row starts on its own line."""
    if path.is_file() and path.stat().st_size:
        with path.open("rb+") as f:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                f.write(b"\n")


def json_safe(value):
    """NaN/inf (a method with no scored clip) as null: strict JSON readers reject bare NaN."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def result_files(out: Path) -> list[Path]:
    """A run folder's row files: the merged ``clips.jsonl`` and the per-process ``clips.rank<r>.jsonl``."""
    return [out / "clips.jsonl", *sorted(out.glob("clips.rank*.jsonl"))]


def load_results(out: Path) -> dict[str, dict]:
    """Every clip's latest row in a run folder (merged file and unmerged per-process files)."""
    rows: dict[str, dict] = {}
    for path in result_files(out):
        for row in read_jsonl(path):
            rows[row["clip_id"]] = row
    return rows



def percent(value) -> str:
    """A fraction as papers print it (x100), '-' where there is none."""
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.2f}"

