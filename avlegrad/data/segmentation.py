"""Segmentation benchmarks prompted by sound: dense masks instead of boxes.

Built by ``create_dataset(name, root, split=...)`` like the box benchmarks, and yielding the same
:class:`ClipRecord` (with ``mask`` set: a ``[224, 224]`` bool array) or :class:`SkippedClip`:

- ``ade20k-sound`` / ``ade20k-speech``: DenseAV's ADE20K Sound-Prompted / Speech-Prompted
  (``denseav/data/AVDatasets.py``: ``ADE20KPromptedBase``, ``ADE20KSoundPrompted``,
  ``ADE20KSpeechPrompted``, ``prep_ade_label``). ``root`` holds ``prompted_segmentation.csv``,
  ``frames/<image_location>``, ``annotations/<image_location .jpg -> _seg.png>`` and
  ``audio/<basename of vggsound_file | speech_prompt_file>`` (``root`` may also be the folder
  above, holding ``ADE20KSoundPrompted/``). Rows without a prompt file, and rows of class 0, are
  dropped as DenseAV drops them, and counted in the report. Image: bilinear ``Resize(224)``
  (shorter side) + ``CenterCrop(224)``; label PNG: the same with nearest, then the full ADE20K
  index ``class = int(R / 10) * 256 + G``; the mask is ``class == ade_class_id``. Audio: the
  first 10.26 s (DenseAV's 164200 samples at 16 kHz) at the encoder's rate. Speech prompts: split ``test``
  keeps only the spoken word, ``[start - 0.2 s, end + 0.2 s]`` of the row's ``timing`` (the
  "advanced" speech metric DenseAV's paper reports); split ``test-full-prompt`` keeps the whole
  prompt (its "basic" metric). A prompt shorter than 0.41 s at 16 kHz is skipped, as DenseAV's
  loader drops it (``AVDatasets.py`` l. 361, audio mask mean < 0.04). ``ade20k-sound`` split
  ``taco``: TACO's preparation instead (``taco/data.py`` ``ADEBinary``, ``_fcclip_image``,
  ``_ade_binary_mask``): the whole image squashed to 224 x 224 (bilinear, ``align_corners=True``,
  no crop) and the class ids of the full-size label resized the same way, then ``== class id``.
- ``avsbench-s4`` / ``avsbench-ms3``: AVSBench single-source / multi-source
  (``avs_scripts/avs_{s4,ms3}/dataloader.py``, ``config.py``). ``root`` holds
  ``s4_meta_data.csv`` + ``s4_data/`` (or ``Single-source/`` holding them, or ``avsbench_data/``);
  likewise ``ms3_meta_data.csv`` + ``ms3_data/`` under ``Multi-sources/``. One record per
  annotated frame (5 per video), in the csv's order: frames
  ``visual_frames/<split>/<category>/<name>/<name>_<i>.png`` (S4) or
  ``visual_frames/<name>/<name>.mp4_<i>.png`` (MS3), masks
  ``gt_masks/<split>[/<category>]/<name>/<name>_<i>.png``, audio
  ``audio_wav/<split>[/<category>]/<name>.wav`` (the whole 5 s clip for each of its frames, as
  ACL-SSL uses it; ``meta["seconds"]`` gives the frame's own second). Frames and masks are
  224 x 224 (others are resized: bilinear / nearest); a mask pixel is foreground when its grey
  level is >= 128 (``convert('1')`` of the binary release).
"""
from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .media import MediaError, check_frame_size, load_audio, load_image
from .base import ClipDataset, _media_problem
from .record import ClipRecord, SkippedClip

EVAL_SIZE = 224
# DenseAV pads / crops every prompt to its target length 10, which prep_waveform (shared.py l. 309-310)
# turns into 164200 samples at 16 kHz (1024 spectrogram frames): 10.2625 s
ADE_AUDIO_SECONDS = 164200 / 16000
SPEECH_TIMING_MARGIN = 0.2  # DenseAV widens a word's timing by 0.2 s on both sides
AVSBENCH_FRAMES = 5  # annotated frames per test video, named _1 .. _5
MAX_EXAMPLES = 20

# DenseAV (AVDatasets.py l. 361): a prompt whose padding mask has mean < 0.04 is dropped by the
# loader (and its batch slot filled by another clip): audio shorter than 0.04 x 164200 samples
# (the 10 s target length, shared.py prep_waveform) at 16 kHz, i.e. 6568 samples = 0.4105 s
DENSEAV_MIN_AUDIO_SAMPLES_16K = 0.04 * 164200
SEGMENTATION_SPLITS = {
    "ade20k-sound": ("test", "taco"),
    "ade20k-speech": ("test", "test-full-prompt"),
    "avsbench-s4": ("test", "val"),
    "avsbench-ms3": ("test", "val"),
}
# the metric variants (avlegrad.mask_metrics) each benchmark's papers report, per split: its default
DEFAULT_METRICS = {
    "ade20k-sound": {"test": ("denseav-global", "taco-per-image"), "taco": ("taco-per-image", "taco-per-image-fixed")},
    "ade20k-speech": ("denseav-global", "taco-per-image"),
    "avsbench-s4": ("avsbench-official", "avsbench-dataset"),
    "avsbench-ms3": ("avsbench-official", "avsbench-dataset"),
}
ADE_FOLDERS = {"ade20k-sound": "ADE20KSoundPrompted", "ade20k-speech": "ADE20KSpeechPrompted"}
ADE_PROMPT_COLUMNS = {"ade20k-sound": "vggsound_file", "ade20k-speech": "speech_prompt_file"}
# The csv's class-name column is not documented; the first of these present is used as the label
ADE_NAME_COLUMNS = ("ade_class_name", "class_name", "ade_name", "name", "word", "label")
# the cells pandas.read_csv reads as NaN by default (DenseAV reads the table with pandas)
PANDAS_NA = {"", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
             "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"}
AVSBENCH_FILES = {"avsbench-s4": ("Single-source", "s4_meta_data.csv", "s4_data"),
                  "avsbench-ms3": ("Multi-sources", "ms3_meta_data.csv", "ms3_data")}

AVSBENCH_REQUEST = (
    "AVSBench is released on request: e-mail the authors (zhoujxhfut@gmail.com, as the AVSBench "
    "README at github.com/OpenNLPLab/AVSBench says) with your name and institution for the "
    "processed frames, masks and audio (or fetch the raw YouTube clips from the csv files linked "
    "there and run their preprocess_scripts). Point root at the folder holding "
    "{csv} and {data}/ (the release's avsbench_data/{sub}/), with {data}/visual_frames, "
    "{data}/gt_masks and {data}/audio_wav; see docs/segmentation.md.")
GET_DATA_HINTS = {
    "ade20k-sound": ("run `python data/download_denseav.py --sound` (DenseAV's public "
                     "ADE20KSoundPrompted.zip) and pass root=<out>/ADE20KSoundPrompted"),
    "ade20k-speech": ("run `python data/download_denseav.py --speech` (DenseAV's public "
                      "ADE20KSpeechPrompted.zip) and pass root=<out>/ADE20KSpeechPrompted"),
    "avsbench-s4": AVSBENCH_REQUEST.format(csv="s4_meta_data.csv", data="s4_data", sub="Single-source"),
    "avsbench-ms3": AVSBENCH_REQUEST.format(csv="ms3_meta_data.csv", data="ms3_data", sub="Multi-sources"),
}


@dataclass
class SegmentationReport:
    """What a reader met in the dataset's table (the counterpart of the box annotation report)."""

    rows: int = 0  # rows of the table (of the split asked for)
    clips: int = 0  # records the dataset will yield
    dropped_no_prompt: int = 0  # DenseAV: rows without a prompt file
    dropped_class_zero: int = 0  # DenseAV: rows of class 0 ("unlabelled")
    dropped_bad_class: int = 0  # a class id that is not a number
    rows_without_timing: int = 0  # speech rows whose timing is missing or unreadable: whole prompt used
    label_column: str | None = None  # the column the class names came from (None: no names)
    examples: dict = field(default_factory=dict)

    def note(self, kind: str, example: str) -> None:
        setattr(self, kind, getattr(self, kind) + 1)
        ids = self.examples.setdefault(kind, [])
        if len(ids) < MAX_EXAMPLES:
            ids.append(example)

    def as_dict(self) -> dict:
        return asdict(self)

    def dropped(self) -> dict:
        return {k: getattr(self, k) for k in ("dropped_no_prompt", "dropped_class_zero", "dropped_bad_class")
                if getattr(self, k)}

    def __str__(self) -> str:
        return (f"{self.rows} rows, {self.clips} clips; dropped: {self.dropped_no_prompt} without a "
                f"prompt file, {self.dropped_class_zero} of class 0, {self.dropped_bad_class} with a bad "
                f"class id; {self.rows_without_timing} speech rows without timing")


# --------------------------------------------------------------------------------------------
# Preprocessing, exactly as the reference loaders
# --------------------------------------------------------------------------------------------

def denseav_image(frame: np.ndarray, size: int = EVAL_SIZE) -> np.ndarray:
    """DenseAV's ``T.Resize(size, BILINEAR)`` (shorter side) + ``T.CenterCrop(size)`` on the PIL
    image, as uint8 RGB ``[size, size, 3]``."""
    import torchvision.transforms.functional as TF
    from PIL import Image
    from torchvision.transforms import InterpolationMode

    img = TF.center_crop(TF.resize(Image.fromarray(frame), size, InterpolationMode.BILINEAR), size)
    return np.asarray(img)


def denseav_label(seg: np.ndarray, size: int = EVAL_SIZE) -> np.ndarray:
    """DenseAV's label transform: ``Resize(size, NEAREST)`` + ``CenterCrop(size)`` of the RGB
    ``_seg.png``, then ``prep_ade_label``: class ``int(R / 10) * 256 + G`` (int32 ``[size, size]``)."""
    import torchvision.transforms.functional as TF
    from PIL import Image
    from torchvision.transforms import InterpolationMode

    img = np.asarray(TF.center_crop(TF.resize(Image.fromarray(seg), size, InterpolationMode.NEAREST), size))
    return ade_class_map(img)


def taco_image(frame: np.ndarray, size: int = EVAL_SIZE) -> np.ndarray:
    """TACO's image (``taco/data.py`` ``_fcclip_image``): the whole image, no crop, resized to a
    square with ``F.interpolate(bilinear, align_corners=True)`` (TACO's 764 for FC-CLIP; ``size``
    here), rounded back to uint8 RGB ``[size, size, 3]``."""
    import torch
    import torch.nn.functional as F

    t = torch.tensor(np.asarray(frame)).permute(2, 0, 1).float()[None]
    t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=True)[0]
    return t.round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()


def taco_ade_mask(seg: np.ndarray, class_id: int, size: int = EVAL_SIZE) -> np.ndarray:
    """TACO's ground truth (``taco/data.py`` ``_ade_binary_mask`` with ``rgb2cls``): the full-size
    RGB label decoded to class ids, the ids (as floats) resized to ``size x size`` with
    ``F.interpolate(bilinear, align_corners=True)`` (no crop), then ``== class_id``: pixels where
    different ids are blended are lost, or, rarely, match another class. Bool ``[size, size]``."""
    import torch
    import torch.nn.functional as F

    ids = torch.from_numpy(ade_class_map(seg)).float()
    resized = F.interpolate(ids[None, None], size=(size, size), mode="bilinear", align_corners=True)[0, 0]
    return (resized == class_id).numpy()


def audio_samples_16k(path) -> float:
    """A file's length in samples at 16 kHz (DenseAV resamples every prompt to 16 kHz)."""
    import soundfile as sf

    try:
        info = sf.info(str(path))
        return info.frames * 16000 / info.samplerate
    except Exception:  # not a soundfile format: decode it
        audio, sr = load_audio(path)
        return audio.shape[0] * 16000 / sr


def ade_class_map(seg: np.ndarray) -> np.ndarray:
    """ADE20K's full-index class of every pixel of an RGB ``_seg.png``: ``R // 10 * 256 + G``."""
    seg = np.asarray(seg)
    return (seg[:, :, 0] / 10).astype(np.int32) * 256 + seg[:, :, 1].astype(np.int32)


def avsbench_frame(frame: np.ndarray, size: int = EVAL_SIZE) -> np.ndarray:
    """AVSBench frames are stored at 224 x 224 (``cv2.resize`` of the video frame); others are
    resized the same way."""
    if frame.shape[:2] == (size, size):
        return frame
    import cv2

    return cv2.resize(frame, (size, size), interpolation=cv2.INTER_LINEAR)


def read_binary_mask(path, size: int = EVAL_SIZE) -> np.ndarray:
    """An AVSBench mask PNG as bool ``[size, size]``: grey level >= 128 (what ``convert('1')``
    gives for the binary 0/255 masks of the release), nearest-resized if not ``size``."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise MediaError(path, "file not found")
    try:
        with Image.open(path) as im:
            grey = im.convert("L")
            if grey.size != (size, size):
                grey = grey.resize((size, size), Image.NEAREST)
            return np.asarray(grey) >= 128
    except (UnidentifiedImageError, OSError) as e:
        raise MediaError(path, f"cannot read mask ({e})") from None


# --------------------------------------------------------------------------------------------
# Entries and the dataset
# --------------------------------------------------------------------------------------------

@dataclass
class MaskEntry:
    """What a segmentation dataset knows about a record before reading its files."""

    clip_id: str
    frame: list  # candidate frame paths, the first existing one is read
    mask: Path
    audio: Path
    preprocess: str  # "denseav" (resize + centre crop, ADE20K label), "taco" (squashed, TACO's mask) or
    # "avsbench" (224 x 224, binary PNG)
    mask_class: int | None = None  # ADE20K: the class whose pixels are the ground truth
    audio_window: tuple[float, float | None] = (0.0, None)  # (start s, end s or None: to the end)
    label: str | None = None
    class_id: object = None  # what per-class metrics pool on (ADE class id, AVSBench category)
    meta: dict = field(default_factory=dict)


class MaskDataset(ClipDataset):
    """A ClipDataset whose records carry a ground-truth ``mask``."""

    def _load(self, entry: MaskEntry) -> ClipRecord | SkippedClip:
        frame_path = next((p for p in entry.frame if Path(p).is_file()), None)
        if frame_path is None:
            return SkippedClip(entry.clip_id, f"missing: frame {entry.frame[0]}")
        for kind, path in (("mask", entry.mask), ("audio", entry.audio)):
            if not Path(path).is_file():
                return SkippedClip(entry.clip_id, f"missing: {kind} {path}")
        frame = check_frame_size(load_image(frame_path), frame_path)  # too small: skipped, saying why
        if entry.preprocess == "denseav":
            frame = denseav_image(frame)
            mask = denseav_label(load_image(entry.mask)) == entry.mask_class
            short = audio_samples_16k(entry.audio) < DENSEAV_MIN_AUDIO_SAMPLES_16K
            if short:
                return SkippedClip(entry.clip_id, "prompt audio shorter than 0.41 s: DenseAV's loader drops "
                                                  "it (AVDatasets.py: audio mask mean < 0.04)")
        elif entry.preprocess == "taco":
            frame = taco_image(frame)
            mask = taco_ade_mask(load_image(entry.mask), entry.mask_class)
        else:
            frame = avsbench_frame(frame)
            mask = read_binary_mask(entry.mask)
        start, end = entry.audio_window
        duration = None if end is None else max(end - start, 0.0)
        waveform, _ = load_audio(entry.audio, sample_rate=self.sample_rate, start=start, duration=duration)
        problem = _media_problem(frame, waveform)
        if problem:
            return SkippedClip(entry.clip_id, problem)
        meta = {"dataset": self.name, "split": self.split, "class_id": entry.class_id,
                "frame_file": str(frame_path), "mask_file": str(entry.mask), "audio_file": str(entry.audio),
                "audio_window": [start, end], **entry.meta}
        return ClipRecord(entry.clip_id, frame, waveform, self.sample_rate, label=entry.label,
                          meta=meta, mask=mask)


def create_segmentation_dataset(name: str, root, *, split: str = "test", sample_rate: int = 16000,
                                annotations=None, limit: int | None = None):
    """The dataset ``name`` (see the module docstring); called by ``create_dataset``."""
    if name not in SEGMENTATION_SPLITS:
        raise ValueError(f"unknown segmentation dataset {name!r}; valid: {', '.join(SEGMENTATION_SPLITS)}")
    if split not in SEGMENTATION_SPLITS[name]:
        raise ValueError(f"unknown split {split!r} for dataset {name!r}; valid splits: "
                         f"{', '.join(SEGMENTATION_SPLITS[name])}")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"{name} dataset root {root} does not exist: {GET_DATA_HINTS[name]}")
    if name.startswith("ade20k"):
        entries, report = ade20k_entries(name, root, split, annotations)
    else:
        entries, report = avsbench_entries(name, root, split, annotations)
    if limit is not None:
        entries = entries[:limit]
    report.clips = len(entries)
    dataset = MaskDataset(name, root, entries, split=split, sample_rate=sample_rate,
                                      annotation_report=report)
    return dataset


# --------------------------------------------------------------------------------------------
# ADE20K Sound- / Speech-Prompted (DenseAV)
# --------------------------------------------------------------------------------------------

def find_ade20k_root(name: str, root: Path, annotations=None) -> tuple[Path, Path]:
    """``(dataset folder, prompted_segmentation.csv)``: ``root`` itself, or ``root/<DenseAV folder>``."""
    if annotations is not None:
        csv_path = Path(annotations).expanduser()
        if csv_path.is_dir():
            csv_path = csv_path / "prompted_segmentation.csv"
        if not csv_path.is_file():
            raise FileNotFoundError(f"{name}: no table at {csv_path}")
        folder = root / ADE_FOLDERS[name] if (root / ADE_FOLDERS[name]).is_dir() else root
        return folder, csv_path
    for folder in (root, root / ADE_FOLDERS[name]):
        if (folder / "prompted_segmentation.csv").is_file():
            return folder, folder / "prompted_segmentation.csv"
    raise FileNotFoundError(f"{name}: no prompted_segmentation.csv in {root} or {root / ADE_FOLDERS[name]}: "
                            f"{GET_DATA_HINTS[name]}")


def _parse_class_id(value) -> int | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return int(number) if math.isfinite(number) and number == int(number) else None


def _parse_timing(value) -> tuple[float, float] | None:
    try:
        start, end = (float(v) for v in json.loads(value))
    except (TypeError, ValueError, json.JSONDecodeError):
        return None
    return (start, end) if math.isfinite(start) and math.isfinite(end) and end >= start else None


def ade20k_entries(name: str, root: Path, split: str, annotations=None) -> tuple[list[MaskEntry], SegmentationReport]:
    folder, csv_path = find_ade20k_root(name, root, annotations)
    prompt_column = ADE_PROMPT_COLUMNS[name]
    report = SegmentationReport()
    with open(csv_path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        for needed in ("image_location", "ade_class_id", prompt_column):
            if needed not in columns:
                raise ValueError(f"{csv_path}: no column {needed!r} (columns: {', '.join(columns)}); "
                                 f"is this DenseAV's {ADE_FOLDERS[name]} table?")
        rows = list(reader)
    report.rows = len(rows)
    report.label_column = next((c for c in ADE_NAME_COLUMNS if c in columns), None)
    entries, seen = [], {}
    for number, row in enumerate(rows, start=2):  # line 1 is the header
        where = f"line {number}: {row.get('image_location')}"
        prompt = (row.get(prompt_column) or "").strip()
        if prompt in PANDAS_NA:  # DenseAV keeps rows whose prompt pandas reads as a str, not NaN
            report.note("dropped_no_prompt", where)
            continue
        class_id = _parse_class_id(row.get("ade_class_id"))
        if class_id is None:
            report.note("dropped_bad_class", where)
            continue
        if class_id == 0:
            report.note("dropped_class_zero", where)
            continue
        location = row["image_location"].strip()
        stem = location[:-4] if location.lower().endswith(".jpg") else location
        clip_id = f"{stem}@{class_id}"
        seen[clip_id] = seen.get(clip_id, 0) + 1
        if seen[clip_id] > 1:  # the same image and class prompted twice
            clip_id = f"{clip_id}#{seen[clip_id]}"
        window: tuple[float, float | None] = (0.0, ADE_AUDIO_SECONDS)
        meta = {"image_location": location, "prompt_file": prompt, "ade_class_id": class_id}
        if name == "ade20k-speech":
            timing = _parse_timing(row.get("timing"))
            meta["timing"] = list(timing) if timing else None
            if timing is None:
                report.note("rows_without_timing", where)
            elif split == "test":
                window = (max(timing[0] - SPEECH_TIMING_MARGIN, 0.0), timing[1] + SPEECH_TIMING_MARGIN)
        label = (row.get(report.label_column) or "").strip() or None if report.label_column else None
        entries.append(MaskEntry(
            clip_id=clip_id, frame=[folder / "frames" / location],
            mask=folder / "annotations" / location.replace(".jpg", "_seg.png"),
            audio=folder / "audio" / prompt.split("/")[-1], preprocess="taco" if split == "taco" else "denseav",
            mask_class=class_id,
            audio_window=window, label=label, class_id=class_id, meta=meta))
    return entries, report


# --------------------------------------------------------------------------------------------
# AVSBench S4 / MS3
# --------------------------------------------------------------------------------------------

def find_avsbench_files(name: str, root: Path, annotations=None) -> tuple[Path, Path]:
    """``(meta csv, data folder)`` of S4 or MS3 under ``root`` (any level of the release)."""
    sub, csv_name, data_name = AVSBENCH_FILES[name]
    if annotations is not None:
        candidates = [Path(annotations).expanduser()]
        if candidates[0].is_dir():
            candidates = [candidates[0] / csv_name]
    else:
        candidates = [root / csv_name, root / sub / csv_name, root / "avsbench_data" / sub / csv_name,
                      root.parent / csv_name]
    csv_path = next((p for p in candidates if p.is_file()), None)
    if csv_path is None:
        raise FileNotFoundError(f"{name}: {csv_name} not found (looked in "
                                f"{', '.join(str(p) for p in candidates)}): {GET_DATA_HINTS[name]}")
    data_candidates = [csv_path.parent / data_name, root / data_name, root / sub / data_name, root]
    data = next((d for d in data_candidates if (d / "gt_masks").is_dir()), None)
    if data is None:
        raise FileNotFoundError(f"{name}: no {data_name}/gt_masks folder next to {csv_path} or under {root}: "
                                f"{GET_DATA_HINTS[name]}")
    return csv_path, data


def avsbench_entries(name: str, root: Path, split: str, annotations=None) -> tuple[list[MaskEntry], SegmentationReport]:
    csv_path, data = find_avsbench_files(name, root, annotations)
    with open(csv_path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        if "split" not in columns:
            raise ValueError(f"{csv_path}: no 'split' column (columns: {', '.join(columns)})")
        rows = [r for r in reader if (r.get("split") or "").strip() == split]
    video_column = columns[0]  # the official loaders read the name as the first column
    s4 = name == "avsbench-s4"
    if s4 and "category" not in columns:
        raise ValueError(f"{csv_path}: no 'category' column (columns: {', '.join(columns)})")
    report = SegmentationReport(rows=len(rows), label_column="category" if s4 else None)
    entries = []
    for row in rows:
        video = row[video_column].strip()
        category = row["category"].strip() if s4 else (row.get("category") or "").strip() or None
        sub = Path(split, category) if s4 else Path(split)
        audio = data / "audio_wav" / sub / f"{video}.wav"
        for i in range(1, AVSBENCH_FRAMES + 1):
            if s4:
                frames = [data / "visual_frames" / sub / video / f"{video}_{i}.png"]
            else:
                frames = [data / "visual_frames" / video / f"{video}.mp4_{i}.png",
                          data / "visual_frames" / video / f"{video}_{i}.png",
                          data / "visual_frames" / split / video / f"{video}_{i}.png"]
            entries.append(MaskEntry(
                clip_id=f"{video}_{i}", frame=frames, mask=data / "gt_masks" / sub / video / f"{video}_{i}.png",
                audio=audio, preprocess="avsbench", audio_window=(0.0, None),
                label=category.replace("_", " ") if category else None, class_id=category,
                meta={"video": video, "frame_index": i, "category": category, "seconds": [i - 1, i]}))
    return entries, report
