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

from pathlib import Path

from .annotations import (AnnotationReport, BoxAnnotation, check_boxes, find_annotation, read_flickr_annotations,
                          read_flickr_test_csv, read_id_list, read_vggss_json)
from .base import ClipDataset, ClipEntry, _media_problem, collate_clips  # noqa: F401 (re-exported)
from .record import VIDEO_SUFFIXES
from .registry import dataset_spec, register_dataset
from .segmentation import SEGMENTATION_SPLITS
from .sslalignment import SOUND_FOLLOWING_SPLITS, sound_following_kind

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
    "folder": f"point root at a folder holding video files ({', '.join(VIDEO_SUFFIXES)}).",
}


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
    spec = dataset_spec(name)  # every benchmark is registered (avlegrad.data.registry)
    if split not in spec.splits:
        raise ValueError(f"unknown split {split!r} for dataset {name!r}; valid splits: {', '.join(spec.splits)}")
    if name not in DATASET_SPLITS:  # a benchmark of its own module
        return spec.builder(Path(root).expanduser(), split=split, sample_rate=sample_rate, annotations=annotations,
                            limit=limit, media=media)
    if name in SEGMENTATION_SPLITS:
        from .segmentation import create_segmentation_dataset

        return create_segmentation_dataset(name, root, split=split, sample_rate=sample_rate,
                                           annotations=annotations, limit=limit)
    root = Path(root).expanduser()
    if name in SOUND_FOLLOWING_SPLITS or (name == "synthetic" and split != "test"):
        from .sslalignment import create_sound_following_dataset

        dataset = create_sound_following_dataset(
            name, root, split=split, sample_rate=sample_rate, annotations=annotations, limit=limit, media=media,
            positive_entries={"vggsound": _vggss_entries, "flickr": _flickr_entries}, hints=GET_DATA_HINTS)
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
                       annotation_report=box_annotation_report(entries) if has_boxes else None,
                       requires_boxes=has_boxes, media=media)


def box_annotation_report(entries: list[ClipEntry]) -> AnnotationReport:
    """The box-annotation problems (``AnnotationReport``) among the clips a dataset will evaluate:
    malformed or zero-area boxes (``check_boxes``) and clips without boxes; for dataset builders."""
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


# The built-in benchmarks, registered as data (their builders are create_dataset's branches above);
# a new benchmark is a module of its own with @register_dataset (docs/extending.md).
BUILTIN_ROOTS = {"vggsound": "vggss", "flickr": "flickr", "folder": "videos", "synthetic": "synthetic",
                 "ade20k-sound": "ADE20KSoundPrompted", "ade20k-speech": "ADE20KSpeechPrompted",
                 "avsbench-s4": "avsbench", "avsbench-ms3": "avsbench", "is3": "IS3", "vpo-ss": "vpo", "vpo-ms": "vpo",
                 "avsbench-s4-box": "avsbench", "avsbench-ms3-box": "avsbench", "vggsound-extended": "vggss",
                 "flickr-extended": "flickr"}


def _register_builtins() -> None:
    from .segmentation import DEFAULT_METRICS, GET_DATA_HINTS as SEGMENTATION_HINTS

    for name, splits in DATASET_SPLITS.items():
        scoring = ("masks" if name in SEGMENTATION_SPLITS else
                   "sound-following" if name in SOUND_FOLLOWING_SPLITS else "boxes")
        if name == "synthetic":  # the world's sound-following versions (avlegrad.data.sslalignment)
            scoring = {split: "sound-following" if sound_following_kind(name, split) else "boxes"
                       for split in splits}
        hint = GET_DATA_HINTS.get(name) or SEGMENTATION_HINTS.get(name) or \
            "see docs/benchmarks-sound-following.md for where to get the media"
        register_dataset(name, splits=splits, default_root=BUILTIN_ROOTS.get(name, name), hint=hint,
                         scoring=scoring, metrics=DEFAULT_METRICS.get(name, ()))(create_dataset)


_register_builtins()
