"""Readers of the benchmark annotation files, and where to find them.

Files (formats in ``../shared/docs/benchmarks.md``):

- VGG-SS: ``vggss.json`` (list of ``{"file", "class", "bbox"}``) and the id lists
  ``vggss_test.csv`` / ``vggss_heard_test.csv`` / ``vggss_unheard_test.csv``;
- Flickr-SoundNet: ``flickr_test.csv`` (``<id>,<int>`` rows), ``test_list_250.txt`` (one id a
  line) and one XML per id in ``Annotations/<id>.xml``.

Lookup order for a file: the explicit ``annotations`` path (a file, or a directory searched like
a root), else ``<root>/<name>`` / ``<root>/metadata/<name>``, else the cache
``~/.cache/avlegrad/annotations/<dataset>/<name>`` (``$AVLEGRAD_CACHE`` overrides ``~/.cache/avlegrad``
directory), which ``python data/download_annotations.py`` fills.
"""
from __future__ import annotations

import csv
import json
import math
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..download import cache_root
from ..metrics import EVAL_SIZE, flickr_box_pixels, pixel_box_pixels, vggss_box_pixels

DOWNLOAD_COMMAND = "python data/download_annotations.py"
# A VGG-SS coordinate outside this range is not a slightly sloppy annotation but garbage
# (the published file holds -2.88e16 in 12 boxes).
CORRUPT_RANGE = (-0.5, 1.5)
MAX_EXAMPLES = 20  # clip ids kept per kind of problem in a report
NO_PUBLIC_URL = {"test_list_250.txt"}  # the original 250 Flickr ids: no download is known


class AnnotationNotFoundError(FileNotFoundError):
    """An annotation file is in none of the places searched."""


def cache_dir() -> Path:
    """Where downloaded annotations live: ``<cache>/annotations`` (the cache is ``$AVLEGRAD_CACHE``,
    else ``~/.cache/avlegrad``)."""
    return cache_root() / "annotations"


def _candidates(directory: Path, name: str, dataset: str) -> list[Path]:
    return [directory / name, directory / "metadata" / name, directory / dataset / name]


def find_annotation(name: str, dataset: str, *, annotations=None, root=None, named: bool = False) -> Path:
    """Locate annotation file (or directory) ``name`` of ``dataset`` ("vggss" or "flickr").

    An explicit ``annotations`` path is the only place searched when given: a directory is
    searched like a root; a file is the wanted one itself when ``named`` (the caller's main file,
    e.g. the boxes: the file the user named is read, whatever its name) or when its name is
    ``name``, else a sibling of the wanted one.
    Raises :class:`AnnotationNotFoundError` listing the paths tried and the download command.
    """
    if annotations is not None:
        given = Path(annotations).expanduser()
        if given.is_file() and (named or given.name == name):
            return given
        if given.name == name and given.exists():
            return given
        if not given.exists() and given.suffix:  # a file that is not there, not a folder to search
            raise AnnotationNotFoundError(f"{dataset} annotations {given} do not exist (looking for {name!r})")
        tried = _candidates(given.parent if given.is_file() else given, name, dataset)
    else:
        tried = []
        if root is not None:
            tried += [Path(root) / name, Path(root) / "metadata" / name]
        tried.append(cache_dir() / dataset / name)
    for path in tried:
        if path.exists():
            return path
    where = "\n  ".join(str(p) for p in tried)
    if name in NO_PUBLIC_URL:
        how = f"{name} has no known public URL: copy it into {cache_dir() / dataset}/ yourself"
    else:
        command = DOWNLOAD_COMMAND + (" --flickr-xml" if name == "Annotations" else "")
        how = (f"Download the official annotations with `{command}` (into {cache_dir()}; "
               f"or add `--out DIR` and give that folder: eval.py --annotations DIR, "
               f"create_dataset(..., annotations=DIR))")
    raise AnnotationNotFoundError(f"{dataset} annotation {name!r} not found; looked in:\n  {where}\n{how}")


@dataclass
class BoxAnnotation:
    """One clip's boxes, in its dataset's convention (see ``metrics.gt_map``)."""

    clip_id: str
    boxes: list
    box_format: str  # "vggss": [x0, y0, x1, y1] in [0, 1]; "flickr": 256-px boxes
    label: str | None = None


@dataclass
class AnnotationReport:
    """What a reader met: counts of problem boxes and clips, with example clip ids."""

    clips: int = 0
    boxes: int = 0
    corrupt_boxes: int = 0  # non-finite, far outside the frame, or not 4 numbers
    degenerate_boxes: int = 0  # valid numbers but zero width or height at the eval size
    zero_area_clips: int = 0  # clips whose ground-truth map is empty
    missing_clips: int = 0  # ids of the split that have no annotation
    examples: dict = field(default_factory=dict)  # kind -> [clip ids]

    def note(self, kind: str, clip_id: str) -> None:
        setattr(self, kind, getattr(self, kind) + 1)
        ids = self.examples.setdefault(kind, [])
        if len(ids) < MAX_EXAMPLES and clip_id not in ids:
            ids.append(clip_id)

    def as_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        return (f"{self.clips} clips, {self.boxes} boxes: {self.corrupt_boxes} corrupt, "
                f"{self.degenerate_boxes} degenerate, {self.zero_area_clips} clips with zero "
                f"ground-truth area, {self.missing_clips} ids without annotation")


# --------------------------------------------------------------------------------------------
# VGG-SS
# --------------------------------------------------------------------------------------------

def read_vggss_json(path) -> dict[str, BoxAnnotation]:
    """``vggss.json`` as ``{clip_id: BoxAnnotation}`` in file order; boxes kept as published
    (corrupt values included: ``metrics.gt_map`` treats them as EZ-VSL does)."""
    path = Path(path)
    try:
        entries = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: cannot read VGG-SS annotations ({e})") from None
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a JSON list of {{file, class, bbox}}, got {type(entries).__name__}")
    out = {}
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or "file" not in entry or "bbox" not in entry:
            raise ValueError(f"{path}: entry {index} is not a {{file, class, bbox}} object: {entry!r:.200}")
        boxes = entry["bbox"]
        if not isinstance(boxes, list):
            raise ValueError(f"{path}: entry {index} ({entry['file']}): bbox is not a list: {boxes!r:.200}")
        clip_id = str(entry["file"]).strip()
        out[clip_id] = BoxAnnotation(clip_id, [list(b) if isinstance(b, list) else b for b in boxes],
                                     "vggss", entry.get("class"))
    return out


def _is_corrupt_vggss(box) -> bool:
    try:
        values = [float(v) for v in box]
    except (TypeError, ValueError):
        return True
    low, high = CORRUPT_RANGE
    return len(values) != 4 or not all(math.isfinite(v) and low <= v <= high for v in values)


def _is_box_like(box) -> bool:
    try:
        return len([float(v) for v in box]) == 4
    except (TypeError, ValueError):
        return False


def _paints_pixels(pixels, size: int) -> bool:
    # whether gt[y0:y1, x0:x1] selects anything, with numpy's slicing rules (as the reference)
    if pixels is None:
        return False
    x0, y0, x1, y1 = pixels
    return len(range(size)[y0:y1]) > 0 and len(range(size)[x0:x1]) > 0


def check_boxes(annotations, size: int = EVAL_SIZE) -> AnnotationReport:
    """Count corrupt and degenerate boxes and clips with zero ground-truth area.

    Corrupt: not 4 numbers, non-finite, or (VGG-SS) far outside [0, 1]. Degenerate: not corrupt
    but painting no pixel of the ``size`` x ``size`` ground truth (zero width or height after
    clipping and int scaling). Zero area: no box of the clip paints a pixel.
    """
    report = AnnotationReport()
    for ann in annotations:
        report.clips += 1
        covered = False
        for box in ann.boxes:
            report.boxes += 1
            box_like = _is_box_like(box)
            if ann.box_format == "vggss":
                pixels = vggss_box_pixels(box, size) if box_like else None
                corrupt = _is_corrupt_vggss(box)
            else:
                to_pixels = pixel_box_pixels if ann.box_format == "pixels" else flickr_box_pixels
                pixels = to_pixels(box, size) if box_like else None
                corrupt = pixels is None
            paints = _paints_pixels(pixels, size)
            if corrupt:
                report.note("corrupt_boxes", ann.clip_id)
            elif not paints:
                report.note("degenerate_boxes", ann.clip_id)
            covered = covered or paints
        if not covered:
            report.note("zero_area_clips", ann.clip_id)
    return report


# --------------------------------------------------------------------------------------------
# Id lists
# --------------------------------------------------------------------------------------------

def read_id_list(path) -> list[str]:
    """One clip id per line (the first comma-separated column); blank lines and CRs ignored."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: cannot read id list ({e})") from None
    return [line.split(",")[0].strip() for line in lines if line.strip()]


def read_flickr_test_csv(path) -> dict[str, int]:
    """EZ-VSL's ``flickr_test.csv``: ``<id>,<int>`` rows as ``{id: int}`` in file order."""
    path = Path(path)
    out = {}
    with open(path, newline="") as f:
        for line_no, row in enumerate(csv.reader(f), start=1):
            if not row or not row[0].strip():
                continue
            try:
                out[row[0].strip()] = int(row[1])
            except (IndexError, ValueError):
                raise ValueError(f"{path}:{line_no}: expected '<id>,<int>', got {','.join(row)!r}") from None
    return out


# --------------------------------------------------------------------------------------------
# Flickr-SoundNet XML
# --------------------------------------------------------------------------------------------

def _parse_int(text) -> int:
    text = (text or "").strip()
    try:
        return int(text)
    except ValueError:
        return int(float(text))  # tolerate "12.0"; anything else raises ValueError


def read_flickr_xml(path) -> list[list[int]]:
    """The boxes of one ``Annotations/<id>.xml``: 256-px ``[xmin, ymin, xmax, ymax]`` per annotator.

    As EZ-VSL / LVS: every ``<bbox>`` grandchild of the root, its first sub-element skipped,
    the next four read as integers. Unlike the reference (which appends an empty box for other
    grandchildren and then crashes), other elements are ignored; a ``<bbox>`` with fewer than
    four readable numbers raises ValueError naming the file.
    """
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as e:
        raise ValueError(f"{path}: cannot parse Flickr XML annotation ({e})") from None
    boxes = []
    for child in root:
        for element in child:
            if element.tag != "bbox":
                continue
            fields = list(element)[1:5]
            try:
                box = [_parse_int(f.text) for f in fields]
            except (ValueError, OverflowError):  # text, NaN or infinity
                box = []
            if len(box) != 4:
                raise ValueError(f"{path}: a <bbox> lacks four integer coordinates after its first "
                                 f"field: {[f.text for f in element]}")
            boxes.append(box)
    return boxes


def read_flickr_annotations(directory, ids) -> tuple[dict[str, BoxAnnotation], dict[str, str]]:
    """Boxes of the given ids from ``<directory>/<id>.xml``.

    Returns ``(annotations, problems)``: ids whose XML is missing or unreadable are left out of
    ``annotations`` and listed in ``problems`` with the reason.
    """
    directory = Path(directory)
    annotations, problems = {}, {}
    for clip_id in ids:
        path = directory / f"{clip_id}.xml"
        if not path.is_file():
            problems[clip_id] = f"no annotation file {path}"
            continue
        try:
            annotations[clip_id] = BoxAnnotation(clip_id, read_flickr_xml(path), "flickr")
        except ValueError as e:
            problems[clip_id] = str(e)
    return annotations, problems
