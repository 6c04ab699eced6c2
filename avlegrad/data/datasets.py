"""Benchmark datasets: one ``ClipDataset`` class, built by ``create_dataset(name, root, ...)``.

Every dataset yields a :class:`ClipRecord` per clip, or a :class:`SkippedClip` saying why the
clip cannot be used (missing files, unreadable media, no audio track, silent audio, no frame):
one bad clip never stops an evaluation, and the number evaluated is always known.

Names: ``vggsound`` (VGG-SS test set; splits test / heard / unheard), ``flickr``
(Flickr-SoundNet; splits test = EZ-VSL's 249 ids, test250 = the original 250), ``folder`` (every
video under root, no boxes), ``synthetic`` (``data/synthetic.py``'s generated benchmark in the
VGG-SS format; generated with defaults when root does not exist). Segmentation benchmarks
(records with a ground-truth ``mask``): ``ade20k-sound``, ``ade20k-speech``, ``avsbench-s4``,
``avsbench-ms3`` (see ``avlegrad.data.segmentation``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from ..audio.base import SILENCE_PEAK, waveform_problem  # noqa: F401 (SILENCE_PEAK: re-exported)
from .annotations import (AnnotationReport, BoxAnnotation, check_boxes, find_annotation, read_flickr_annotations,
                          read_flickr_test_csv, read_id_list, read_vggss_json)
from .media import MediaError
from .record import VIDEO_SUFFIXES, ClipFiles, ClipRecord, SkippedClip, first_file, load_clip_media, locate_clip
from .segmentation import SEGMENTATION_SPLITS
from .sslalignment import SOUND_FOLLOWING_SPLITS

DATASET_SPLITS = {
    "vggsound": ("test", "heard", "unheard"),
    "flickr": ("test", "test250"),
    "folder": ("test",),  # one split holding every video
    "synthetic": ("test", "interactive", "extended"),  # the last two: avlegrad.data.sslalignment
    **SEGMENTATION_SPLITS,
    **SOUND_FOLLOWING_SPLITS,
}
VGGSS_SPLIT_FILES = {"test": "vggss_test.csv", "heard": "vggss_heard_test.csv",
                     "unheard": "vggss_unheard_test.csv"}
FLICKR_SPLIT_FILES = {"test": "flickr_test.csv", "test250": "test_list_250.txt"}

GET_DATA_HINTS = {
    "vggsound": (
        "VGG-SS clips are VGGSound videos, identified by YouTube id and start time "
        "(<id>_<start s>); they are not redistributed, fetch them yourself (e.g. with yt-dlp) "
        "into <root>/videos/<id>.mp4, optionally run `python data/prepare_clips.py <root>` for "
        "the frames/ + audio/ layout, and get the boxes with `python data/download_annotations.py`."),
    "flickr": (
        "download the Flickr-SoundNet test set (frames/<id>.jpg and audio/<id>.wav, see "
        "github.com/ardasnck/learning_to_localize_sound_source) into <root>, and the annotations "
        "with `python data/download_annotations.py --flickr-xml`."),
    "folder": "point root at a folder holding video files (.mp4, .mkv, .webm).",
}


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


# --------------------------------------------------------------------------------------------
# Factory
# --------------------------------------------------------------------------------------------

def create_dataset(name: str, root, *, split: str = "test", sample_rate: int = 16000,
                   annotations=None, limit: int | None = None, media: bool = True) -> ClipDataset:
    """Build a benchmark dataset.

    ``annotations``: an explicit annotation file or directory (else ``root``, else the cache;
    see ``avlegrad.data.annotations``). ``limit``: keep only the first ``limit`` clips.
    ``media=False``: the records carry the annotations only (nothing is read from root, which
    need not exist), for methods that need no frame or sound (the centre prior).
    """
    if name not in DATASET_SPLITS:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(DATASET_SPLITS)}")
    if split not in DATASET_SPLITS[name]:
        raise ValueError(f"unknown split {split!r} for dataset {name!r}; valid splits: "
                         f"{', '.join(DATASET_SPLITS[name])}")
    if name in SEGMENTATION_SPLITS:
        from .segmentation import create_segmentation_dataset

        return create_segmentation_dataset(name, root, split=split, sample_rate=sample_rate,
                                           annotations=annotations, limit=limit)
    root = Path(root).expanduser()
    if name in SOUND_FOLLOWING_SPLITS or (name == "synthetic" and split != "test"):
        from .sslalignment import create_sound_following_dataset

        dataset = create_sound_following_dataset(name, root, split=split, sample_rate=sample_rate,
                                                 annotations=annotations, limit=limit, media=media)
        return dataset
    if name == "synthetic":
        from .synthetic import ensure_synthetic

        ensure_synthetic(root)
        annotations = annotations if annotations is not None else root
    elif not root.is_dir() and (media or name == "folder"):
        raise FileNotFoundError(f"{name} dataset root {root} does not exist: {GET_DATA_HINTS[name]}")
    if name == "folder":
        entries = _folder_entries(root)
    elif name == "flickr":
        entries = _flickr_entries(root, split, annotations)
    else:
        entries = _vggss_entries(root, split, annotations)
    if limit is not None:
        entries = entries[:limit]
    has_boxes = name != "folder"
    return ClipDataset(name, root, entries, split=split, sample_rate=sample_rate,
                       annotation_report=_report_for(entries) if has_boxes else None,
                       requires_boxes=has_boxes, media=media)


def _report_for(entries: list[ClipEntry]) -> AnnotationReport:
    """The annotation problems among the clips this dataset will evaluate."""
    report = check_boxes(BoxAnnotation(e.clip_id, e.boxes, e.box_format)
                         for e in entries if e.boxes is not None)
    report.clips = len(entries)
    for entry in entries:
        if entry.boxes is None:
            report.note("missing_clips", entry.clip_id)
    return report


def _vggss_entries(root: Path, split: str, annotations) -> list[ClipEntry]:
    json_path = find_annotation("vggss.json", "vggss", annotations=annotations, root=root, named=True)
    boxes = read_vggss_json(json_path)
    given_file = annotations is not None and Path(annotations).expanduser().is_file()
    try:
        if given_file and split == "test":  # a file the user named (a subset, say): its own clips
            raise FileNotFoundError
        ids = read_id_list(find_annotation(VGGSS_SPLIT_FILES[split], "vggss", annotations=annotations, root=root))
        if given_file:  # heard / unheard clips of the named file only
            ids = [i for i in ids if i in boxes]
    except FileNotFoundError:
        if split != "test":
            raise
        ids = list(boxes)  # vggss.json holds exactly the test set, in the csv's order
    entries = []
    for clip_id in ids:
        ann = boxes.get(clip_id)
        meta = {"annotation_file": str(json_path)}
        if ann is None:
            meta["annotation_problem"] = f"no entry in {json_path}"
        entries.append(ClipEntry(clip_id, ann.boxes if ann else None, "vggss", ann.label if ann else None, meta))
    return entries


def _flickr_entries(root: Path, split: str, annotations) -> list[ClipEntry]:
    list_path = find_annotation(FLICKR_SPLIT_FILES[split], "flickr", annotations=annotations, root=root, named=True)
    if split == "test":
        values = read_flickr_test_csv(list_path)
        ids = list(values)
    else:
        values, ids = {}, read_id_list(list_path)
    xml_dir = find_annotation("Annotations", "flickr", annotations=annotations, root=root)
    boxes, problems = read_flickr_annotations(xml_dir, ids)
    entries = []
    for clip_id in ids:
        meta = {"annotation_file": str(xml_dir / f"{clip_id}.xml")}
        if clip_id in values:
            meta["flickr_test_csv_value"] = values[clip_id]  # the csv's second column, kept as is
        if clip_id in problems:
            meta["annotation_problem"] = problems[clip_id]
        ann = boxes.get(clip_id)
        entries.append(ClipEntry(clip_id, ann.boxes if ann else None, "flickr", None, meta=meta))
    return entries


def _folder_entries(root: Path) -> list[ClipEntry]:
    videos = sorted(p for p in root.rglob("*")
                    if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file()
                    and not any(part.startswith(".") for part in p.relative_to(root).parts))
    if not videos:
        raise FileNotFoundError(f"no video files ({', '.join(VIDEO_SUFFIXES)}) under {root}: "
                                f"{GET_DATA_HINTS['folder']}")
    return [ClipEntry(p.relative_to(root).with_suffix("").as_posix(), meta={"video": str(p)}, video=p)
            for p in videos]
