"""A benchmark run: explain every clip, score it, summarise, resume.

A run lives in one output folder:

- ``run.json``: the settings that determine the numbers; resuming with other settings is refused;
- ``clips.jsonl``: one line per clip (its scores for every method, or why it was skipped);
  while running, each process appends to ``clips.rank<r>.jsonl`` and flushes after every batch,
  so an interrupted run loses at most one batch and a rerun skips the clips already scored
  (the files: ``avlegrad.eval.results``);
- ``summary.json``: the dataset's figures per method (for the box benchmarks N, AP50 (the "cIoU"
  papers print), mean cIoU and AUC), the skipped clips with reasons, and the annotation problems
  met; written atomically;
- ``overlays/<clip id>.png``: heatmaps over the frame with the annotation, when asked for.

How clips are scored is the dataset's scoring kind (``avlegrad.scoring``; the built-in ones:
``avlegrad.eval.boxes``, ``.masks``, ``.sound_following``); the targets come from
``avlegrad.eval.targets``. Under ``torchrun`` each process takes every world-size-th clip, and
rank 0 merges the results.
"""
from __future__ import annotations

import itertools
import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from urllib.parse import quote

import torch
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from ..data import create_dataset
from ..data.datasets import collate_clips
from ..data.record import SkippedClip, skip_kind
from ..distributed import all_gather_objects, cleanup, init_distributed
from ..explain import create_explainer, list_explainers
from ..fileio import write_text_atomic
from ..models import DTYPES, image_tensor, load_pair
from ..scoring import Scoring, scoring_class
from .results import end_torn_line, json_safe, load_results, result_files
from .targets import AudioTargets, TextTargets

log = logging.getLogger("avlegrad")

CLIP_PREPROCESS = {"mean": (0.48145466, 0.4578275, 0.40821073), "std": (0.26862954, 0.26130258, 0.27577711)}
# settings that change the numbers: a resumed run must have the same
RESULT_KEYS = ("dataset", "root", "split", "annotations", "methods", "model", "pretrained", "audio_encoder",
               "target", "prompt", "layer_index", "image_size", "dtype", "confidence")


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
    # "audio": the clip's sound; "text": a prompt with the clip's class name; None: audio when an
    # audio encoder is given (or defaulted, see resolve_defaults), else text
    target: str | None = None
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
    # segmentation benchmarks only (avlegrad.eval.masks): the metric variants (None: the
    # dataset's defaults) and the batch size, in frames, of AVSBench's official batched figures
    seg_metrics: list[str] | None = None
    # box benchmarks: registered metric variants scored beside the protocol's figures
    # (avlegrad.box_metrics; None: none)
    box_metrics: list[str] | None = None
    avsbench_batch_frames: int = 20
    # extended sound-following sets (avlegrad.eval.sound_following): a sample's confidence, "cosine"
    # (target vs image embedding; None means it) or "map-max"
    confidence: str | None = None
    # faithfulness metrics per method, a random map beside (avlegrad.faithfulness): deletion/insertion
    # steps and how many perturbed images go through the model per forward
    faithfulness: bool = False
    faithfulness_steps: int = 20
    faithfulness_batch: int = 256


class EvalCollate:
    """DataLoader collate (runs in the workers): records, skipped clips, and the image batch."""

    def __init__(self, preprocess_cfg: dict, size: int):
        self.preprocess_cfg, self.size = preprocess_cfg, size

    def __call__(self, batch):
        records, skipped = collate_clips(batch)
        with_frames = records and records[0].frame is not None  # no frames: a media-less run (centre prior)
        images = torch.stack([image_tensor(r.frame, self.preprocess_cfg, self.size) for r in records]) \
            if with_frames else torch.zeros(len(records), 3, 1, 1)
        return records, skipped, images



def _changed_settings(out: Path, settings: dict) -> dict:
    """``{key: (before, now)}`` where ``out`` holds results scored with other settings; empty when
    it holds none (no results: nothing to protect)."""
    run_file = out / "run.json"
    if not run_file.is_file() or not any(p.is_file() and p.stat().st_size for p in result_files(out)):
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
    if out.exists() and not out.is_dir():
        raise ValueError(f"`out` {out} is a file, not a folder: name a folder for the results")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise ValueError(f"`out` {out}: cannot write results there ({e.strerror or e})") from None
    if opts.overwrite:
        for path in result_files(out) + [out / "summary.json", run_file]:
            path.unlink(missing_ok=True)
        shutil.rmtree(out / "overlays", ignore_errors=True)
    changed = _changed_settings(out, settings)
    if changed:
        detail = "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changed.items())
        raise ValueError(f"{out} holds results of a run with other settings ({detail}); "
                         f"use another `out`, or `overwrite` to start afresh")
    write_text_atomic(run_file, json.dumps(settings, indent=2))  # (a run that scored nothing is replaced)
    if not opts.out:
        log.info("results go to %s", out)
    return out


# ----------------------------------------------------------------------------- the run
def _settings(opts: EvalOptions, model_name: str, pretrained, image_size: int) -> dict:
    s = asdict(opts)
    s.update(model=model_name, pretrained=pretrained, image_size=image_size,
             root=str(Path(opts.root or default_root(opts.dataset)).expanduser().resolve()),
             annotations=str(Path(opts.annotations).expanduser().resolve()) if opts.annotations else None)
    return {k: s[k] for k in RESULT_KEYS}


def _load_models(opts: EvalOptions, device):
    """(model, preprocess cfg, model name, weights, target source)."""
    if opts.target == "audio":
        if not opts.audio_encoder:
            raise ValueError("`target=audio` needs an `audio_encoder` (a registered name or a checkpoint "
                             "written by train.py), or use `target=text` with the class names")
    elif opts.target != "text":
        raise ValueError(f"unknown target {opts.target!r}; choose audio or text")
    model, cfg, name, pretrained, encoder = load_pair(opts.audio_encoder if opts.target == "audio" else None,
                                                      opts.model, opts.pretrained, device=device)
    targets = AudioTargets(encoder) if encoder is not None else TextTargets(model, name, opts.prompt)
    return model, cfg, name, pretrained, targets


DEFAULT_AUDIO_ENCODER = "imagebind"  # LeGrad's own audio setting, with its ViT-H-14 tower


def resolve_defaults(opts: EvalOptions) -> EvalOptions:
    """The models a run uses when ``opts`` names none, the same for ``eval.py`` and library callers:

    - a real benchmark, no audio encoder, model or weights, and a target other than ``"text"``:
      :data:`DEFAULT_AUDIO_ENCODER` (ImageBind, paired with OpenCLIP ViT-H-14 laion2b_s32b_b79k);
    - ``synthetic`` with no model, weights or audio encoder: the offline world's shipped models
      (``avlegrad.world_clip.WORLD_CHECKPOINTS``: its audio encoder, or with ``target="text"`` its
      CLIP and the prompt ``"a {}"`` it was trained with); random weights where they are absent;
    - ``target=None``: ``"audio"`` when there is an audio encoder, else ``"text"``.

    Returns a new EvalOptions (``opts`` is not changed); applying it twice changes nothing."""
    audio_encoder, model, pretrained, prompt = opts.audio_encoder, opts.model, opts.pretrained, opts.prompt
    if opts.dataset != "synthetic" and not (audio_encoder or opts.target == "text" or model or pretrained):
        audio_encoder = DEFAULT_AUDIO_ENCODER
    if opts.dataset == "synthetic" and not (model or pretrained or audio_encoder):
        from ..world_clip import AUDIO_FILE, CLIP_FILE, CONFIG_FILE, WORLD_CHECKPOINTS

        if not (WORLD_CHECKPOINTS / AUDIO_FILE).is_file():
            pretrained = "none"  # says so loudly when loading
        elif opts.target == "text":  # the world CLIP's own text tower, prompted as it was trained
            model, pretrained = str(WORLD_CHECKPOINTS / CONFIG_FILE), str(WORLD_CHECKPOINTS / CLIP_FILE)
            prompt = "a {}" if opts.prompt == EvalOptions.prompt else opts.prompt
        else:
            audio_encoder = str(WORLD_CHECKPOINTS / AUDIO_FILE)
    target = opts.target or ("audio" if audio_encoder else "text")
    return replace(opts, audio_encoder=audio_encoder, model=model, pretrained=pretrained, prompt=prompt,
                   target=target)


def evaluate(opts: EvalOptions) -> dict | None:
    """Run the benchmark; returns the summary (on rank 0; None on the other ranks). The models are
    chosen by :func:`resolve_defaults` where ``opts`` names none, as ``eval.py`` does."""
    opts = resolve_defaults(opts)
    dist = init_distributed(opts.device)
    try:
        return _evaluate(opts, dist)
    finally:
        cleanup(dist)


def methods_needing_model(methods: list[str], scoring) -> list[str]:
    return [m for m in dict.fromkeys(methods) if m not in scoring.baselines]


def scoring_for(opts: EvalOptions) -> Scoring:
    """How a dataset's clips are scored: the Scoring of the kind its registration names for the
    split (avlegrad.scoring: ``boxes``, ``masks``, ``sound-following``, ...); an unregistered name
    is scored with boxes. ValueError (from the scoring) for an option that does not apply to it."""
    from ..data.registry import _DATASETS

    spec = _DATASETS.get(opts.dataset)
    return scoring_class(spec.scoring_kind(opts.split) if spec else "boxes")(opts)


def _evaluate(opts: EvalOptions, dist) -> dict | None:
    scoring = scoring_for(opts)
    allowed = list_explainers() + list(scoring.baselines)
    unknown = [m for m in opts.methods if m not in allowed]
    if unknown:
        raise ValueError(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(allowed)}")
    if opts.faithfulness and not methods_needing_model(opts.methods, scoring):
        raise ValueError("`faithfulness` scores the maps of an explainer: give `methods=legrad` (or another)")
    if opts.dtype not in DTYPES:
        raise ValueError(f"unknown dtype {opts.dtype!r}; choose from {', '.join(DTYPES)}")
    for name, value, least in (("limit", opts.limit, 1), ("save_overlays", opts.save_overlays, 0),
                               ("batch_size", opts.batch_size, 1), ("workers", opts.workers, 0),
                               ("avsbench_batch_frames", opts.avsbench_batch_frames, 1),
                               ("faithfulness_steps", opts.faithfulness_steps, 1),
                               ("faithfulness_batch", opts.faithfulness_batch, 1)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < least):
            raise ValueError(f"`{name}` must be an integer >= {least}, got {value!r}")
    device = dist.device
    methods = [m for m in dict.fromkeys(opts.methods) if m not in scoring.baselines]

    # the data first: a wrong name or root is told before any model is loaded (or downloaded)
    def open_dataset():
        # only the centre prior: no frame or sound is read, every annotation is scored
        return create_dataset(opts.dataset, opts.root or default_root(opts.dataset), split=opts.split,
                              annotations=opts.annotations, limit=opts.limit, media=bool(methods))

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
    ids = set(dataset.ids)
    faith = None
    if opts.faithfulness:
        from ..faithfulness import FaithfulnessScoring

        faith = FaithfulnessScoring(model, steps=opts.faithfulness_steps, batch_size=opts.faithfulness_batch)
    # a clip scored without --faithfulness is scored again when it is asked for
    done = {cid for cid, row in load_results(out).items()
            if cid in ids and scoring.is_done(row, out) and (faith is None or faith.is_done(row))}
    todo = [i for i, cid in enumerate(dataset.ids) if cid not in done]
    shard = todo[dist.rank::dist.world_size]
    if dist.is_main:
        log.info("%s: %d clips, %d already scored, %d to do", dataset, len(dataset), len(done), len(todo))

    explainers = {m: create_explainer(m, model, **({"layer_index": opts.layer_index} if m == "legrad" else {}))
                  for m in methods}
    collate = EvalCollate(cfg or CLIP_PREPROCESS, image_size)
    autocast = torch.autocast(device.type, dtype=DTYPES[opts.dtype], enabled=DTYPES[opts.dtype] is not None)

    def explained_batches(indices, scored: bool = True):
        """``(records, skipped, maps, faithfulness rows or None)`` per batch of the dataset's clips
        ``indices``; ``scored=False`` (overlays only) skips the scoring's extra passes."""
        loader = DataLoader(Subset(dataset, indices), batch_size=opts.batch_size, num_workers=opts.workers,
                            collate_fn=collate, pin_memory=device.type == "cuda")
        for records, skipped, images in loader:
            if methods:  # each clip checked on its own before the batch is embedded: one bad clip
                keep = []  # (too short for this encoder, ...) is skipped, its batch-mates are scored
                for i, record in enumerate(records):
                    reason = targets.problem(record)
                    if reason:
                        skipped.append(SkippedClip(record.clip_id, reason))
                    else:
                        keep.append(i)
                if len(keep) < len(records):
                    records, images = [records[i] for i in keep], images[keep]
            maps, extra = {}, None
            if records and methods:
                images = images.to(device, non_blocking=True)
                with autocast:
                    batch_targets = targets(records, device)
                    for m, explainer in explainers.items():
                        maps[m] = explainer(images, batch_targets).float().cpu()
                    if scored:  # e.g. the extended sets' confidences
                        scoring.observe_batch(model, images, batch_targets, maps, explainers)
                    extra = faith.score(images, batch_targets, maps, records) if faith and scored else None
            yield records, skipped, maps, extra

    def overlay_path(clip_id: str) -> Path:
        return out / "overlays" / f"{quote(clip_id, safe='')}.png"

    overlays_left = opts.save_overlays
    if overlays_left and not methods:
        log.warning("--save-overlays: no overlays, only the centre prior is computed (no method gives maps)")
        overlays_left = 0
    if overlays_left:  # overlays already written for clips scored earlier count (one share per process)
        overlays_left -= len([cid for cid in sorted(done) if overlay_path(cid).is_file()][dist.rank::dist.world_size])
    rank_file = out / f"clips.rank{dist.rank}.jsonl"
    end_torn_line(rank_file)
    with rank_file.open("a") as sink, tqdm(total=len(shard), desc=f"{opts.dataset} [{dist.rank}]",
                                            disable=not dist.is_main, unit="clip") as bar:
        for records, skipped, maps, extra in explained_batches(shard):
            rows = [{"clip_id": s.clip_id, "skipped": s.reason, "skip_kind": s.kind} for s in skipped]
            for i, record in enumerate(records):
                rows.append(scoring.score(record, maps, i, out))
                if extra is not None:
                    rows[-1].update(faithfulness=extra[i], faithfulness_steps=faith.steps)
                if overlays_left > 0:
                    scoring.save_overlay(overlay_path(record.clip_id), record, maps[methods[0]][i], image_size)
                    overlays_left -= 1
            for row in rows:
                sink.write(json.dumps(row) + "\n")
            sink.flush()
            os.fsync(sink.fileno())
            bar.update(len(records) + len(skipped))

    if overlays_left > 0 and done:  # a resumed run: clips scored before get their overlays too
        earlier = [i for i, cid in enumerate(dataset.ids) if cid in done and not overlay_path(cid).is_file()]
        earlier = earlier[dist.rank::dist.world_size][:overlays_left]
        if earlier:
            log.info("--save-overlays: drawing the overlays of %d clips scored by an earlier run", len(earlier))
        for records, skipped, maps, _ in explained_batches(earlier, scored=False):
            for i, record in enumerate(records):
                scoring.save_overlay(overlay_path(record.clip_id), record, maps[methods[0]][i], image_size)
            for s in skipped:
                log.warning("no overlay for %s: %s", s.clip_id, s.reason)

    dist.barrier()  # every rank has finished writing before rank 0 merges
    if not dist.is_main:
        return None
    summary = _merge_and_summarise(out, dataset, scoring, methods, settings, faith)
    print(format_table(summary, scoring))
    return summary


def _merge_and_summarise(out: Path, dataset, scoring, methods: list[str], settings: dict, faith=None) -> dict:
    """Merge the per-process rows into clips.jsonl (dataset order), then write summary.json."""
    rows = load_results(out)
    ordered = [rows[cid] for cid in dataset.ids if cid in rows]
    ids = set(dataset.ids)  # rows of clips outside this run's list (a smaller --limit) are kept, not reported
    others = [r for cid, r in rows.items() if cid not in ids]
    write_text_atomic(out / "clips.jsonl", "".join(json.dumps(r) + "\n" for r in ordered + others))
    for path in out.glob("clips.rank*.jsonl"):
        path.unlink()
    scored = [r for r in ordered if scoring.is_done(r, out)]
    skipped = [r for r in ordered if "skipped" in r]
    reasons: dict[str, int] = {}
    for r in skipped:  # counted by kind ("missing files", "audio too short", ...)
        key = r.get("skip_kind") or skip_kind(r["skipped"])
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
    if faith is not None:  # each method's faithfulness figures beside its own, and the random map's
        summary["faithfulness_steps"] = faith.steps
        for m, figures in faith.summarise(scored).items():
            summary["methods"].setdefault(m, {}).update(figures)
    write_text_atomic(out / "summary.json", json.dumps(json_safe(summary), indent=2, allow_nan=False))
    return summary


def _as_dict(report) -> dict | None:
    if report is None:
        return None
    if hasattr(report, "as_dict"):
        return report.as_dict()
    return asdict(report) if hasattr(report, "__dataclass_fields__") else dict(report)


def format_table(summary: dict, scoring=None) -> str:
    """The results as a table, x100 as papers print them, with the trivial baselines beside them."""
    scoring = scoring or scoring_for(EvalOptions(dataset=summary["settings"]["dataset"],
                                                 split=summary["settings"].get("split", EvalOptions.split)))
    s = summary["settings"]
    head = (f"{s['dataset']} ({s['split']}): {summary['evaluated']} clips scored of {summary['clips']}, "
            f"{summary['skipped']['count']} skipped"
            + "".join(f"\n  skipped, {k}: {v}" for k, v in summary["skipped"]["reasons"].items()))
    methods = summary.get("methods", {})
    # not the random map's row (it has n, but only faithfulness figures)
    own = {**summary, "methods": {m: r for m, r in methods.items() if "n" in r and m != "random"}}
    table = head + "\n" + scoring.format_table(own)
    if any("deletion_auc" in r for r in methods.values()):
        from ..faithfulness import FaithfulnessScoring

        table += "\n" + FaithfulnessScoring.format_table(methods)
    return table


def default_root(dataset: str) -> str:
    """Where a dataset is looked for when no root is given: ``$AVLEGRAD_DATA`` (default
    ``./datasets``) / the registered ``default_root`` (an unknown name: its own name)."""
    from ..data.registry import _DATASETS

    base = Path(os.environ.get("AVLEGRAD_DATA", "datasets"))
    spec = _DATASETS.get(dataset)
    return str(base / (spec.default_root if spec else dataset))
