"""``csv-boxes``: a folder of clips with boxes in image pixels, listed in one CSV file.

A simple format for one's own localization benchmark::

    root/boxes.csv           clip_id,x0,y0,x1,y1,image_width,image_height[,label]
    root/frames/<clip_id>.jpg + root/audio/<clip_id>.wav   (or root/videos/<clip_id>.mp4, ...)

One row per box (a clip with two sources has two rows, in any order; clips are evaluated in the
order they first appear). ``x0, y0, x1, y1``: the box's corners in pixels of the frame, which is
``image_width x image_height`` pixels. They are converted to VGG-SS's normalised
``[x0 / W, y0 / H, x1 / W, y1 / H]`` and scored as VGG-SS boxes (binary union on the 224 x 224
grid, ``metrics.gt_map(boxes, "vggss")``; cIoU, AP50, AUC by the EZ-VSL protocol). A row that is
not numbers, has a non-positive image size or a box outside the image makes its clip
unscorable: the clip is skipped with that reason (line number included) and counted in the
annotation report; the other clips are evaluated.

Errors: ``FileNotFoundError`` when root or ``boxes.csv`` is missing, ``ValueError`` when the
CSV lacks a column. ``annotations``: another CSV file to read instead of ``root/boxes.csv``.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path

from .base import ClipDataset, ClipEntry
from .datasets import box_annotation_report
from .registry import register_dataset

COLUMNS = ("clip_id", "x0", "y0", "x1", "y1", "image_width", "image_height")
HINT = ("put boxes.csv (columns clip_id,x0,y0,x1,y1,image_width,image_height[,label], one row per box, in "
        "pixels) and frames/<id>.jpg + audio/<id>.wav (or videos/<id>.mp4) under root")


def _box(row: dict) -> list[float]:
    """The row's box in [0, 1] coordinates; ValueError saying what is wrong with it."""
    try:
        x0, y0, x1, y1, w, h = (float(row[c]) for c in COLUMNS[1:])
    except (TypeError, ValueError):
        raise ValueError("not numbers: " + ",".join(str(row.get(c)) for c in COLUMNS[1:])) from None
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1, w, h)) or w <= 0 or h <= 0:
        raise ValueError(f"image size {w} x {h} or a coordinate is not a finite positive number")
    if not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
        raise ValueError(f"box ({x0}, {y0}, {x1}, {y1}) is empty or outside the {w:g} x {h:g} image")
    return [x0 / w, y0 / h, x1 / w, y1 / h]


def read_boxes_csv(path: Path) -> list[ClipEntry]:
    """The clips of ``path``, in the order they first appear, with their normalised boxes."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: no column {', '.join(missing)} (columns: {', '.join(reader.fieldnames or [])})")
        entries: dict[str, ClipEntry] = {}
        for line, row in enumerate(reader, start=2):  # line 1 is the header
            clip_id = (row["clip_id"] or "").strip()
            entry = entries.setdefault(clip_id, ClipEntry(clip_id, [], "vggss", meta={"annotation_file": str(path)}))
            if row.get("label") and not entry.label:
                entry.label = row["label"].strip()
            try:
                entry.boxes.append(_box(row))
            except ValueError as e:
                entry.meta.setdefault("annotation_problem", f"{path.name} line {line}: {e}")
    for entry in entries.values():
        if "annotation_problem" in entry.meta:
            entry.boxes = None  # a half-annotated clip would be scored against part of its sources
    return list(entries.values())


@register_dataset("csv-boxes", splits=("test",), default_root="csv_boxes", hint=HINT, scoring="boxes")
def csv_boxes(root: Path, *, split: str, sample_rate: int, annotations=None, limit: int | None = None,
              media: bool = True) -> ClipDataset:
    """The ``csv-boxes`` dataset under ``root`` (see the module docstring)."""
    if not root.is_dir() and media:
        raise FileNotFoundError(f"csv-boxes dataset root {root} does not exist: {HINT}")
    path = Path(annotations).expanduser() if annotations is not None else root / "boxes.csv"
    if not path.is_file():
        raise FileNotFoundError(f"csv-boxes: no {path}: {HINT}")
    entries = read_boxes_csv(path)[:limit]
    return ClipDataset("csv-boxes", root, entries, split=split, sample_rate=sample_rate,
                       annotation_report=box_annotation_report(entries), requires_boxes=True, media=media)
