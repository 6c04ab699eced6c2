"""Benchmark evaluation: explain every clip, score it with cIoU, summarise, resume.

A run lives in one output folder:

- ``run.json``: the settings that determine the numbers; resuming with other settings is refused;
- ``clips.jsonl``: one line per clip (its cIoU for every method, or why it was skipped);
  while running, each process appends to ``clips.rank<r>.jsonl`` and flushes after every batch,
  so an interrupted run loses at most one batch and a rerun skips the clips already scored;
- ``summary.json``: N, AP50 (the "cIoU" papers print), mean cIoU and AUC per method, the skipped
  clips with reasons, and the annotation problems met; written atomically;
- ``overlays/<clip id>.png``: heatmaps over the frame with the GT boxes, when asked for.

Under ``torchrun`` each process takes every world-size-th clip, and rank 0 merges the results.
"""
from __future__ import annotations

import itertools
import json
import logging
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import quote

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from . import metrics
from .data import create_dataset
from .data.datasets import collate_clips
from .distributed import all_gather_objects, cleanup, init_distributed
from .explain import create_explainer, list_explainers
from .models import RANDOM_WEIGHTS, encode_text, image_tensor, load_clip
from .visualize import draw_boxes, overlay, save_image

log = logging.getLogger("avlegrad")

DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
CLIP_PREPROCESS = {"mean": (0.48145466, 0.4578275, 0.40821073), "std": (0.26862954, 0.26130258, 0.27577711)}
BASELINE = "center"  # the centre prior, scored beside every method on the same clips
# settings that change the numbers: a resumed run must have the same
RESULT_KEYS = ("dataset", "split", "annotations", "methods", "model", "pretrained", "audio_encoder",
               "target", "prompt", "layer_index", "image_size", "dtype")


@dataclass
class EvalOptions:
    dataset: str = "vggsound"
    root: str | None = None
    split: str = "test"
    annotations: str | None = None
    methods: list[str] = field(default_factory=lambda: ["legrad"])
    model: str | None = None  # None: the audio encoder's tower, else ViT-B-16
    pretrained: str | None = None  # None: the audio encoder's weights, else "openai"
    audio_encoder: str | None = None
    target: str = "audio"  # "audio": the clip's sound; "text": a prompt with the clip's class name
    prompt: str = "a photo of a {}."
    layer_index: int = -2
    image_size: int | None = None  # None: the model's own input size
    batch_size: int = 32
    workers: int = min(4, os.cpu_count() or 1)  # more than the cores only makes torch warn
    device: str | None = None
    dtype: str = "fp32"
    limit: int | None = None
    out: str | None = None  # None: outputs/<dataset>-<split> (-2, -3, ... when that holds another run)
    save_overlays: int = 0  # how many clips get an overlay image (per process)
    overwrite: bool = False
    # segmentation benchmarks only (avlegrad.segmentation_eval): the metric variants (None: the
    # dataset's defaults) and the batch size, in frames, of AVSBench's official batched figures
    seg_metrics: list[str] | None = None
    avsbench_batch_frames: int = 20


class EvalCollate:
    """DataLoader collate (runs in the workers): records, skipped clips, and the image batch."""

    def __init__(self, preprocess_cfg: dict, size: int):
        self.preprocess_cfg, self.size = preprocess_cfg, size

    def __call__(self, batch):
        records, skipped = collate_clips(batch)
        images = torch.stack([image_tensor(r.frame, self.preprocess_cfg, self.size) for r in records]) \
            if records else torch.zeros(0, 3, self.size, self.size)
        return records, skipped, images


# ----------------------------------------------------------------------------- targets
class AudioTargets:
    """Targets from each clip's sound through an audio encoder."""

    def __init__(self, encoder):
        self.encoder = encoder

    @torch.no_grad()
    def __call__(self, records, device) -> torch.Tensor:
        out = torch.empty(len(records), self.encoder.embed_dim, device=device)
        by_length: dict[int, list[int]] = {}
        for i, r in enumerate(records):
            by_length.setdefault(len(r.waveform), []).append(i)
        for idx in by_length.values():  # only equal lengths share a batch: no padding effects
            waves = torch.from_numpy(np.stack([records[i].waveform for i in idx])).to(device)
            out[idx] = self.encoder.embed_each(waves).to(out.dtype)  # a clip's target never depends on the batch
        return out


class TextTargets:
    """Targets from a text prompt with each clip's class name (CLIP's text tower)."""

    def __init__(self, model, model_name: str, prompt: str):
        self.model, self.model_name, self.prompt = model, model_name, prompt
        self.cache: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def __call__(self, records, device) -> torch.Tensor:
        missing = sorted({r.label for r in records if r.label not in self.cache})
        if None in missing:
            clip = next(r.clip_id for r in records if r.label is None)
            raise ValueError(f"clip {clip} has no class label, so --target text has no prompt for it; "
                             f"use --target audio with an --audio-encoder")
        if missing:
            embeddings = encode_text(self.model, self.model_name, [self.prompt.format(label) for label in missing])
            self.cache.update(zip(missing, embeddings))
        return torch.stack([self.cache[r.label] for r in records]).to(device)


# ----------------------------------------------------------------------------- result files
def _read_jsonl(path: Path) -> list[dict]:
    """Lines of a JSONL file; a torn last line (a killed writer) is ignored."""
    rows = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def _end_torn_line(path: Path) -> None:
    """A killed writer may leave half a line: end it, so the next row starts on its own line."""
    if path.is_file() and path.stat().st_size:
        with path.open("rb+") as f:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                f.write(b"\n")


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _json_safe(value):
    """NaN/inf (a method with no scored clip) as null: strict JSON readers reject bare NaN."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _result_files(out: Path) -> list[Path]:
    return [out / "clips.jsonl", *sorted(out.glob("clips.rank*.jsonl"))]


def load_results(out: Path) -> dict[str, dict]:
    """Every clip's latest row in a run folder (merged file and unmerged per-process files)."""
    rows: dict[str, dict] = {}
    for path in _result_files(out):
        for row in _read_jsonl(path):
            rows[row["clip_id"]] = row
    return rows


def _changed_settings(out: Path, settings: dict) -> dict:
    """``{key: (before, now)}`` where ``out`` holds results scored with other settings; empty when
    it holds none (no results: nothing to protect)."""
    run_file = out / "run.json"
    if not run_file.is_file() or not any(p.is_file() and p.stat().st_size for p in _result_files(out)):
        return {}
    previous = json.loads(run_file.read_text())
    return {k: (previous.get(k), settings[k]) for k in RESULT_KEYS if previous.get(k) != settings[k]}


def _default_out(opts: EvalOptions, settings: dict) -> Path:
    """``outputs/<dataset>-<split>``, or the first of ``-2``, ``-3``, ... that holds no other run's
    results: rerunning a command resumes in its folder, another command gets its own."""
    base = Path("outputs") / f"{opts.dataset}-{opts.split}"
    if opts.overwrite:
        return base
    candidates = (base if k == 1 else base.with_name(f"{base.name}-{k}") for k in itertools.count(1))
    return next(out for out in candidates if not _changed_settings(out, settings))


def _prepare_run_folder(opts: EvalOptions, settings: dict) -> Path:
    """The run's folder (rank 0 only): results of other settings are refused, never mixed."""
    out = Path(opts.out) if opts.out else _default_out(opts, settings)
    run_file = out / "run.json"
    out.mkdir(parents=True, exist_ok=True)
    if opts.overwrite:
        for path in _result_files(out) + [out / "summary.json", run_file]:
            path.unlink(missing_ok=True)
    changed = _changed_settings(out, settings)
    if changed:
        detail = "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changed.items())
        raise ValueError(f"{out} holds results of a run with other settings ({detail}); "
                         f"use another --out, or --overwrite to start afresh")
    _write_atomic(run_file, json.dumps(settings, indent=2))  # (a run that scored nothing is replaced)
    if not opts.out:
        log.info("results go to %s", out)
    return out


# ----------------------------------------------------------------------------- the run
def _settings(opts: EvalOptions, model_name: str, pretrained, image_size: int) -> dict:
    s = asdict(opts)
    s.update(model=model_name, pretrained=pretrained, image_size=image_size,
             annotations=str(opts.annotations) if opts.annotations else None)
    return {k: s[k] for k in RESULT_KEYS}


def _load_models(opts: EvalOptions, device):
    """(model, preprocess cfg, model name, weights, target source)."""
    encoder = None
    if opts.target == "audio":
        if not opts.audio_encoder:
            raise ValueError("--target audio needs an --audio-encoder (a registered name or a checkpoint "
                             "written by train.py), or use --target text with the class names")
        from .audio import create_audio_encoder

        encoder = create_audio_encoder(opts.audio_encoder, device=device).eval()
    elif opts.target != "text":
        raise ValueError(f"unknown target {opts.target!r}; choose audio or text")

    if encoder is not None and opts.model is None and opts.pretrained is None:
        spec = encoder.clip_tower_spec  # the tower the encoder was trained against
        name, pretrained = spec["model"], spec["pretrained"]
        model, cfg = load_clip(name, pretrained, device=device, model_cfg=spec["model_cfg"],
                               init_seed=spec["init_seed"])
    else:
        name = opts.model or "ViT-B-16"
        pretrained = opts.pretrained if opts.pretrained is not None else "openai"
        model, cfg = load_clip(name, pretrained, device=device)
        if encoder is not None:
            encoder.check_pair(name, None if pretrained in RANDOM_WEIGHTS else pretrained)
    targets = AudioTargets(encoder) if encoder is not None else TextTargets(model, name, opts.prompt)
    return model, cfg, name, pretrained, targets


def evaluate(opts: EvalOptions) -> dict | None:
    """Run the benchmark; returns the summary (on rank 0; None on the other ranks)."""
    dist = init_distributed(opts.device)
    try:
        return _evaluate(opts, dist)
    finally:
        cleanup(dist)


class BoxScoring:
    """Box benchmarks (EZ-VSL protocol): each clip's cIoU per method, the centre prior beside them."""

    baselines = (BASELINE,)

    def __init__(self, opts: EvalOptions):
        self.center = metrics.center_prior()  # at the GT size, float64: exactly the benchmark's prior

    def start(self, out: Path, opts: EvalOptions, is_main: bool) -> None:
        pass

    def is_done(self, row: dict, out: Path) -> bool:
        return "ciou" in row

    def score(self, record, maps: dict, i: int, out: Path) -> dict:
        row = {"clip_id": record.clip_id}
        if record.boxes is None:
            row["scored"] = False  # a folder of videos has no boxes to score against
            return row
        gt = metrics.gt_map(record.boxes, record.box_format)
        row["ciou"] = {m: metrics.ciou(maps[m][i], gt) for m in maps}
        row["ciou"][BASELINE] = metrics.ciou(self.center, gt)
        return row

    def save_overlay(self, path: Path, record, heatmap: torch.Tensor, image_size: int) -> None:
        import cv2

        frame = cv2.resize(record.frame, (image_size, image_size), interpolation=cv2.INTER_AREA)
        picture = overlay(frame, heatmap)
        if record.boxes is not None:
            gt = metrics.gt_map(record.boxes, record.box_format, size=image_size)
            # outline of the GT region (drawn from the map, so corrupt boxes show as they are scored)
            contours, _ = cv2.findContours((gt > 0).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            boxes = [(x, y, x + w - 1, y + h - 1) for x, y, w, h in map(cv2.boundingRect, contours)]
            picture = draw_boxes(picture, boxes)
        save_image(path, np.concatenate([frame, picture], axis=1))

    def summarise(self, out: Path, scored: list[dict], methods: list[str]) -> dict:
        return {"methods": {m: metrics.summarize([r["ciou"][m] for r in scored if m in r["ciou"]])
                            for m in methods}}

    def format_table(self, summary: dict) -> str:
        lines = [f"{'method':<16} {'N':>6} {'cIoU(AP50)':>11} {'mean cIoU':>10} {'AUC':>7}"]
        for m, r in summary["methods"].items():
            label = f"{m} (prior)" if m == BASELINE else m
            lines.append(f"{label:<16} {r['n']:>6} {percent(r['ap50']):>11} {percent(r['mean_ciou']):>10} "
                         f"{percent(r['auc']):>7}")
        return "\n".join(lines)


def percent(value) -> str:
    """A fraction as papers print it (x100), '-' where there is none."""
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.2f}"


def scoring_for(opts: EvalOptions):
    """How a dataset's clips are scored: boxes (cIoU), or masks (maps stored, dataset-level metrics)."""
    from .segmentation_eval import MaskScoring, is_segmentation_dataset

    return MaskScoring(opts) if is_segmentation_dataset(opts.dataset) else BoxScoring(opts)


def _evaluate(opts: EvalOptions, dist) -> dict | None:
    scoring = scoring_for(opts)
    allowed = list_explainers() + list(scoring.baselines)
    unknown = [m for m in opts.methods if m not in allowed]
    if unknown:
        raise ValueError(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(allowed)}")
    if opts.seg_metrics and isinstance(scoring, BoxScoring):
        raise ValueError(f"--seg-metrics applies to the segmentation datasets; {opts.dataset} is scored with "
                         f"boxes (cIoU, AP50, AUC)")
    if opts.dtype not in DTYPES:
        raise ValueError(f"unknown dtype {opts.dtype!r}; choose from {', '.join(DTYPES)}")
    device = dist.device
    methods = [m for m in dict.fromkeys(opts.methods) if m not in scoring.baselines]

    # the data first: a wrong name or root is told before any model is loaded (or downloaded)
    def open_dataset():
        return create_dataset(opts.dataset, opts.root or default_root(opts.dataset), split=opts.split,
                              annotations=opts.annotations, limit=opts.limit)

    # rank 0 first: it may have to write the data (the synthetic set), which the others then read
    dataset = open_dataset() if dist.is_main else None
    dist.barrier()
    if dataset is None:
        dataset = open_dataset()

    if dist.is_main and opts.dataset == "folder":
        log.info("the folder dataset has no boxes: maps are computed (see them with --save-overlays N) "
                 "but no clip can be scored")
    model = cfg = targets = None
    name = pretrained = None
    if methods:
        model, cfg, name, pretrained, targets = _load_models(opts, device)
    if isinstance(targets, AudioTargets):
        dataset.sample_rate = targets.encoder.sample_rate  # clips are decoded at the encoder's rate
    image_size = opts.image_size or (cfg["size"][0] if cfg else 224)
    settings = _settings(opts, name, pretrained, image_size)
    out = _prepare_run_folder(opts, settings) if dist.is_main else None
    out = Path(all_gather_objects(dist, str(out) if out else None)[0])
    scoring.start(out, opts, dist.is_main)
    dist.barrier()
    done = {cid for cid, row in load_results(out).items() if scoring.is_done(row, out)}
    todo = [i for i, cid in enumerate(dataset.ids) if cid not in done]
    shard = todo[dist.rank::dist.world_size]
    if dist.is_main:
        log.info("%s: %d clips, %d already scored, %d to do", dataset, len(dataset), len(done), len(todo))

    explainers = {m: create_explainer(m, model, **({"layer_index": opts.layer_index} if m == "legrad" else {}))
                  for m in methods}
    loader = DataLoader(Subset(dataset, shard), batch_size=opts.batch_size, num_workers=opts.workers,
                        collate_fn=EvalCollate(cfg or CLIP_PREPROCESS, image_size),
                        pin_memory=device.type == "cuda")
    rank_file = out / f"clips.rank{dist.rank}.jsonl"
    overlays_left = opts.save_overlays
    autocast = torch.autocast(device.type, dtype=DTYPES[opts.dtype], enabled=DTYPES[opts.dtype] is not None)
    _end_torn_line(rank_file)
    with rank_file.open("a") as sink, tqdm(total=len(shard), desc=f"{opts.dataset} [{dist.rank}]",
                                            disable=not dist.is_main, unit="clip") as bar:
        for records, skipped, images in loader:
            rows = [{"clip_id": s.clip_id, "skipped": s.reason} for s in skipped]
            if records:
                maps = {}
                if methods:
                    images = images.to(device, non_blocking=True)
                    with autocast:
                        batch_targets = targets(records, device)
                        for m, explainer in explainers.items():
                            maps[m] = explainer(images, batch_targets).float().cpu()
                for i, record in enumerate(records):
                    rows.append(scoring.score(record, maps, i, out))
                    if overlays_left > 0 and methods:
                        scoring.save_overlay(out / "overlays" / f"{quote(record.clip_id, safe='')}.png", record,
                                             maps[methods[0]][i], image_size)
                        overlays_left -= 1
            for row in rows:
                sink.write(json.dumps(row) + "\n")
            sink.flush()
            os.fsync(sink.fileno())
            bar.update(len(records) + len(skipped))

    dist.barrier()  # every rank has finished writing before rank 0 merges
    if not dist.is_main:
        return None
    summary = _merge_and_summarise(out, dataset, scoring, methods, settings)
    print(format_table(summary, scoring))
    return summary


def _merge_and_summarise(out: Path, dataset, scoring, methods: list[str], settings: dict) -> dict:
    """Merge the per-process rows into clips.jsonl (dataset order), then write summary.json."""
    rows = load_results(out)
    ordered = [rows[cid] for cid in dataset.ids if cid in rows]
    _write_atomic(out / "clips.jsonl", "".join(json.dumps(r) + "\n" for r in ordered))
    for path in out.glob("clips.rank*.jsonl"):
        path.unlink()
    scored = [r for r in ordered if scoring.is_done(r, out)]
    skipped = [r for r in ordered if "skipped" in r]
    reasons: dict[str, int] = {}
    for r in skipped:
        reason = r["skipped"]  # counted by kind: "missing: <what>", else the text before its details
        key = " ".join(reason.split(" ")[:2]) if reason.startswith("missing: ") else reason.split(" (")[0]
        reasons[key] = reasons.get(key, 0) + 1
    summary = {
        "settings": settings,
        "clips": len(dataset),
        "evaluated": len(scored),
        "unscored": sum(1 for r in ordered if r.get("scored") is False),
        "skipped": {"count": len(skipped), "reasons": reasons,
                    "clips": [{"clip_id": r["clip_id"], "reason": r["skipped"]} for r in skipped]},
        "annotation_report": _as_dict(dataset.annotation_report),
        **scoring.summarise(out, scored, methods + list(scoring.baselines)),
    }
    _write_atomic(out / "summary.json", json.dumps(_json_safe(summary), indent=2, allow_nan=False))
    return summary


def _as_dict(report) -> dict | None:
    if report is None:
        return None
    if hasattr(report, "as_dict"):
        return report.as_dict()
    return asdict(report) if hasattr(report, "__dataclass_fields__") else dict(report)


def format_table(summary: dict, scoring=None) -> str:
    """The results as a table, x100 as papers print them, with the trivial baselines beside them."""
    scoring = scoring or scoring_for(EvalOptions(dataset=summary["settings"]["dataset"]))
    s = summary["settings"]
    head = (f"{s['dataset']} ({s['split']}): {summary['evaluated']} clips scored of {summary['clips']}, "
            f"{summary['skipped']['count']} skipped"
            + "".join(f"\n  skipped, {k}: {v}" for k, v in summary["skipped"]["reasons"].items()))
    return head + "\n" + scoring.format_table(summary)


def default_root(dataset: str) -> str:
    """Where a dataset is looked for when --root is not given."""
    base = Path(os.environ.get("AVLEGRAD_DATA", "datasets"))
    return str(base / {"vggsound": "vggss", "flickr": "flickr", "folder": "videos",
                       "synthetic": "synthetic", "ade20k-sound": "ADE20KSoundPrompted",
                       "ade20k-speech": "ADE20KSpeechPrompted", "avsbench-s4": "avsbench",
                       "avsbench-ms3": "avsbench"}.get(dataset, dataset))
