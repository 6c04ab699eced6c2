"""Readers of the "does the map follow the sound?" benchmarks: IS3, VPO, AVSBench as boxes
(SSLalignment's metadata) and the extended VGG-SS / Flickr test sets (SLAVC's non-sounding pairs),
and the offline world's versions of them (``synthetic`` splits ``interactive`` and ``extended``).

Formats (``../shared/docs/benchmarks.md``, "Does the map follow the sound?"; the reference is
kaistmm/SSLalignment ``datasets.py`` ``load_all_bboxes`` / ``get_test_dataset`` and stoneMo/SLAVC
``datasets.py`` ``get_test_dataset``):

- ``is3`` (``synthetic3240_bbox.json``), ``vpo-ss`` (``vpo_ss_bbox.json``), ``vpo-ms``
  (``vpo_ms_bbox.json``), ``avsbench-s4-box`` (``s4_box.json``), ``avsbench-ms3-box``
  (``ms3_box.json``): a JSON list of ``{"image", "audio", "gt_box": [x0, y0, x1, y1]}``, the box in
  pixels of the 224 x 224 frame (``int`` of each value, as ``load_all_bboxes``). An entry's id is
  the last path component of ``image`` without its extension (S4: the last 3, MS3: the last 2,
  joined by ``/``). IS3 lists each picture twice, once per sounding object; the picture is the id
  minus its last ``_`` part (the iIoU groups).
- ``vggsound-extended`` / ``flickr-extended``: the positive test set (``vggsound`` / ``flickr``,
  with their boxes) plus every ``non-sounding`` row ``video,audio,label`` of
  ``vggss_test_plus_silent.csv`` / ``flickr_test_plus_silent.csv``: the frame of clip ``video``
  with the sound of clip ``audio``, scored as a negative (no box). Entry id
  ``neg:<video>:<audio>``.

Media: the files are looked for under ``root`` by the tail of the JSON's paths (``visual_frames/...``,
``audio_wav/...``, as the archives unpack), else ``frames/<id>`` / ``audio/<id>`` (the prepared
layout; ``images/<name>`` too for IS3's zip). A non-sounding pair's frame and sound are each found
like a clip's (``frames/<id>.jpg`` or a video; ``audio/<id>.wav`` or a video). Its sound is scored
even when silent (a silent clip is skipped elsewhere).
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from .annotations import AnnotationReport, find_annotation
from .base import ClipDataset, ClipEntry
from .record import AUDIO_SUFFIXES, FRAME_SUFFIXES, audio_candidates, frame_candidates

# dataset -> (metadata file, number of trailing path components in an entry's id)
SSLALIGNMENT_SETS = {
    "is3": ("synthetic3240_bbox.json", 1),
    "vpo-ss": ("vpo_ss_bbox.json", 1),
    "vpo-ms": ("vpo_ms_bbox.json", 1),
    "avsbench-s4-box": ("s4_box.json", 3),
    "avsbench-ms3-box": ("ms3_box.json", 2),
}
# dataset -> (the positive set's dataset, its annotation folder, the non-sounding pairs' file)
EXTENDED_SETS = {
    "vggsound-extended": ("vggsound", "vggss", "vggss_test_plus_silent.csv"),
    "flickr-extended": ("flickr", "flickr", "flickr_test_plus_silent.csv"),
}
SOUND_FOLLOWING_SPLITS = {name: ("test",) for name in (*SSLALIGNMENT_SETS, *EXTENDED_SETS)}
ANNOTATION_FOLDER = "sslalignment"  # <cache>/annotations/sslalignment/ (data/download_annotations.py)
GROUPED_SETS = ("is3",)  # every sound of a picture must be localized: iIoU / iAUC
NEGATIVE_PREFIX = "neg:"

# the offline world's versions (avlegrad.data.synthetic's root): files written beside its clips
WORLD_INTERACTIVE_FILE = "interactive_bbox.json"
WORLD_EXTENDED_FILE = "vggss_test_plus_silent.csv"


def sound_following_kind(dataset: str, split: str = "test") -> str | None:
    """``"boxes"`` (SSLalignment's rules, cIoU/AUC + adaptive + iIoU), ``"extended"`` (positives and
    negatives with a confidence: AP, max-F1, LocAcc), or None for the other benchmarks."""
    if dataset in SSLALIGNMENT_SETS or (dataset == "synthetic" and split == "interactive"):
        return "boxes"
    if dataset in EXTENDED_SETS or (dataset == "synthetic" and split == "extended"):
        return "extended"
    return None


def is_grouped(dataset: str, split: str = "test") -> bool:
    """Whether the entries group into pictures with several sounds (iIoU / iAUC apply)."""
    return dataset in GROUPED_SETS or (dataset == "synthetic" and split == "interactive")


# --------------------------------------------------------------------------------------------
# Metadata files
# --------------------------------------------------------------------------------------------

def entry_key(image_path: str, parts: int = 1) -> str:
    """``load_all_bboxes``' key: the last ``parts`` components of ``image``, extension removed."""
    tail = "/".join(str(image_path).replace("\\", "/").split("/")[-parts:])
    stem, dot, suffix = tail.rpartition(".")
    return stem if dot and "/" not in suffix else tail


def read_sslalignment_json(path, parts: int = 1, key_from: str = "image") -> list[dict]:
    """SSLalignment's box metadata as ``[{"id", "image", "audio", "box"}]`` in file order; ``box`` is
    the 4 published numbers (made ``int`` by :func:`avlegrad.metrics.gt_map`'s ``"pixels"`` format).
    Raises ValueError naming the file and the entry when the format is not the published one, or
    when two entries share an id. ``key_from="audio"``: ids from the sound's path (the world's
    interactive split, whose entries of one picture share its frame)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: cannot read SSLalignment metadata ({e})") from None
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of {{image, audio, gt_box}}, got {type(data).__name__}")
    out, seen = [], set()
    for index, entry in enumerate(data):
        if not isinstance(entry, dict) or not {"image", "audio", "gt_box"} <= set(entry):
            raise ValueError(f"{path}: entry {index} is not an {{image, audio, gt_box}} object: {entry!r:.200}")
        box = entry["gt_box"]
        if not (isinstance(box, list) and len(box) == 4
                and all(isinstance(v, (int, float)) and np.isfinite(v) for v in box)):
            raise ValueError(f"{path}: entry {index} ({entry['image']}): gt_box is not 4 finite numbers: {box!r:.200}")
        key = entry_key(entry[key_from], parts)
        if key in seen:
            raise ValueError(f"{path}: entry {index}: id {key!r} appears twice")
        seen.add(key)
        out.append({"id": key, "image": str(entry["image"]), "audio": str(entry["audio"]), "box": list(box)})
    return out


def read_plus_silent_csv(path) -> list[tuple[str, str]]:
    """SLAVC's ``*_test_plus_silent.csv``: the ``(video, audio)`` of every ``non-sounding`` row."""
    path = Path(path)
    try:
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: cannot read the non-sounding pairs ({e})") from None
    out = []
    for line_no, row in enumerate(rows, start=1):
        if not row or row == ["video", "audio", "label"]:
            continue
        if len(row) != 3 or not row[0].strip() or not row[1].strip():
            raise ValueError(f"{path}:{line_no}: expected 'video,audio,label', got {','.join(row)!r}")
        if row[2].strip() == "non-sounding":
            out.append((row[0].strip(), row[1].strip()))
    return out


def _tails(path: str, extra: list[str]) -> tuple:
    """Relative places of a published absolute path under a root: its last 5..1 components, then
    ``extra``."""
    parts = [p for p in str(path).replace("\\", "/").split("/") if p]
    return tuple(dict.fromkeys(["/".join(parts[-k:]) for k in range(min(5, len(parts)), 0, -1)] + extra))


def _hint(path: str) -> str:
    """The published path as it lies under a root: from its ``visual_frames`` / ``audio_wav`` folder
    on (how the archives unpack), else its last two components (for messages)."""
    parts = [p for p in str(path).replace("\\", "/").split("/") if p]
    start = next((i for i, p in enumerate(parts) if p in ("visual_frames", "audio_wav")), max(0, len(parts) - 2))
    return "/".join(parts[start:])


def _box_entries(dataset: str, root: Path, annotations) -> list:
    name, parts = SSLALIGNMENT_SETS.get(dataset, (WORLD_INTERACTIVE_FILE, 1))
    folder = ANNOTATION_FOLDER if dataset in SSLALIGNMENT_SETS else "synthetic"
    path = find_annotation(name, folder, annotations=annotations, root=root)
    grouped = is_grouped(dataset, "interactive" if dataset == "synthetic" else "test")
    from ..metrics_sslalignment import picture_of

    entries = []
    for e in read_sslalignment_json(path, parts, key_from="image" if dataset in SSLALIGNMENT_SETS else "audio"):
        image_name = e["image"].replace("\\", "/").rsplit("/", 1)[-1]
        audio_stem = entry_key(e["audio"], 1)
        frames = [f"frames/{e['id']}{s}" for s in FRAME_SUFFIXES] + [f"images/{image_name}"]
        sounds = [f"audio/{e['id']}{s}" for s in AUDIO_SUFFIXES] + [f"audio/{audio_stem}{s}" for s in AUDIO_SUFFIXES]
        meta = {"annotation_file": str(path), "frame_hint": _hint(e["image"]), "audio_hint": _hint(e["audio"])}
        if grouped:
            meta["picture"] = picture_of(e["id"])
        entries.append(ClipEntry(e["id"], [e["box"]], "pixels", None, meta,
                                 frame_candidates=_tails(e["image"], frames),
                                 audio_candidates=_tails(e["audio"], sounds)))
    return entries


def _extended_entries(dataset: str, root: Path, annotations, positive_entries: dict) -> list:
    """The positive test set (``positive_entries[name](root, "test", annotations)``, the readers of
    ``datasets.py``, passed in so this module stays below it) plus the non-sounding pairs."""
    if dataset == "synthetic":
        positive_set, folder, pairs_file = "vggsound", "synthetic", WORLD_EXTENDED_FILE
    else:
        positive_set, folder, pairs_file = EXTENDED_SETS[dataset]
    positives = positive_entries[positive_set](root, "test", annotations)
    # an explicit --annotations (a folder holding vggss/ and sslalignment/, or the pairs file's folder)
    # is searched for the pairs file too
    pairs_path = find_annotation(pairs_file, folder if folder == "synthetic" else ANNOTATION_FOLDER,
                                 annotations=annotations, root=root)
    for entry in positives:
        entry.meta["negative"] = False
    negatives = []
    for video, audio in read_plus_silent_csv(pairs_path):
        negatives.append(ClipEntry(f"{NEGATIVE_PREFIX}{video}:{audio}", [], None, None,
                                   {"negative": True, "video": video, "audio": audio,
                                    "annotation_file": str(pairs_path)},
                                   frame_candidates=tuple(frame_candidates(video)),
                                   audio_candidates=tuple(audio_candidates(audio))))
    return positives + negatives


def _report(entries) -> AnnotationReport:
    """The annotation problems of the boxed entries (negatives have no box by design)."""
    from .annotations import BoxAnnotation, check_boxes

    boxed = [e for e in entries if e.boxes]
    report = check_boxes(BoxAnnotation(e.clip_id, e.boxes, e.box_format) for e in boxed)
    report.clips = len(entries)
    for entry in entries:
        if entry.boxes is None:
            report.note("missing_clips", entry.clip_id)
    return report


def create_sound_following_dataset(name: str, root, *, split: str = "test", sample_rate: int = 16000,
                                   annotations=None, limit: int | None = None, media: bool = True,
                                   positive_entries: dict | None = None, hints: dict | None = None):
    """Build one of these benchmarks (see the module docstring) as a
    :class:`~avlegrad.data.datasets.ClipDataset`. ``media=False``: records without frame or sound
    (the centre prior), and ``root`` need not exist. ``positive_entries`` (``{"vggsound": reader,
    "flickr": reader}``, the extended sets' positives) and ``hints`` (where to get each set's media)
    come from ``datasets.create_dataset``."""

    root = Path(root).expanduser()
    kind = sound_following_kind(name, split)
    if name == "synthetic":
        from .synthetic import ensure_sound_following

        ensure_sound_following(root, split)
        annotations = annotations if annotations is not None else root
    elif media and not root.is_dir():
        hint = (hints or {}).get(name, "see docs/benchmarks-sound-following.md for where to get the media")
        raise FileNotFoundError(f"{name} dataset root {root} does not exist: {hint}")
    if kind == "boxes":
        entries = _box_entries(name, root, annotations)
    else:
        entries = _extended_entries(name, root, annotations, positive_entries or {})
    if limit is not None:
        entries = entries[:limit]
    dataset = ClipDataset(name, root, entries, split=split, sample_rate=sample_rate,
                          annotation_report=_report(entries), requires_boxes=True, media=media)
    return dataset
