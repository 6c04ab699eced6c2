"""Why LeGrad is defined as it is, measured: the ablation grid on a dataset, a table and plots.

    python -m avlegrad.analyze --dataset synthetic                 # offline: the world's trained models
    python -m avlegrad.analyze --dataset vggsound --root DATA/vggss --audio-encoder CKPT --device cuda

Every variant of LeGrad (the switches of :class:`avlegrad.LeGrad`, one changed at a time from the
official definition with all blocks explained, and the official definition over the last
``1 ... L`` blocks) is scored on the same clips with the benchmark's localization figures (AP50,
mean cIoU, AUC) and the faithfulness metrics (:mod:`avlegrad.faithfulness`), beside a random map.
Writes to ``--out`` (default ``outputs/analysis-<dataset>``):

- ``ablation.json``: every variant's settings and figures (written atomically), and
  ``faithfulness_steps``;
- ``clips.jsonl``: each clip's figures, appended per batch (a rerun resumes; ``run.json`` holds the
  settings, and a folder of other settings is refused);
- ``accumulated_layers.png``: the figures against the share of accumulated layers;
- ``layer_contributions.png``: each layer's mean share of the summed map (all blocks explained);
- ``heads_<clip>.png``: one clip's per-layer, per-head maps as a grid.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from . import faithfulness as fa
from . import metrics
from .cli import add_import_flag, flag_wording, import_extensions, parser_flags
from .data import create_dataset
from .eval.results import end_torn_line, json_safe, percent, read_jsonl
from .eval.run import EvalCollate, EvalOptions, _load_models, default_root
from .eval.targets import AudioTargets
from .explain import LeGrad
from .fileio import atomic_path, write_text_atomic
from .models import DTYPES

log = logging.getLogger("avlegrad")

# one switch changed at a time from the official definition over all blocks (the grid's last
# "official, last L" row)
ABLATIONS = {
    "score: class token": {"score_tokens": "cls"},
    "score: patch tokens": {"score_tokens": "patches"},
    "no ReLU on the gradient": {"relu": False},
    "heads: max": {"head_aggregation": "max"},
    "layers: rollout product": {"layer_aggregation": "product"},
}
FIGURES = ("ap50", "mean_ciou", "auc") + fa.METRICS


def variants(num_layers: int) -> dict[str, dict]:
    """The grid: the official definition over the last k blocks (k = 1 ... L), then the ablations
    (all blocks)."""
    grid = {f"official, last {k}" + (" (default)" if k == 2 else " (all blocks)" if k == num_layers else ""):
            {"layer_index": -k} for k in range(1, num_layers + 1)}
    grid.update({name: {"layer_index": 0, **switches} for name, switches in ABLATIONS.items()})
    return grid


def run_analysis(opts: EvalOptions, out: Path, steps: int = 20, faith_batch: int = 256, heads_clip: int = 0,
                 overwrite: bool = False) -> dict:
    """Score every variant on every clip, write the JSON and plots to ``out``; returns the summary.

    Each clip's figures are appended to ``out/clips.jsonl`` after every batch, so an interrupted
    run resumes where it stopped; a folder holding results of other settings (every one that changes
    the numbers: the dataset's root, split, annotations, models, target, image size, dtype, steps)
    is refused. Bad options are refused up front, before any model is loaded (``ValueError``)."""
    fa.check_steps(steps, "`steps`")
    for name, value, least in (("limit", opts.limit, 1), ("batch_size", opts.batch_size, 1),
                               ("workers", opts.workers, 0), ("faith_batch", faith_batch, 1),
                               ("heads_clip", heads_clip, 0)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < least):
            raise ValueError(f"`{name}` must be an integer >= {least}, got {value!r}")
    if opts.dtype not in DTYPES:
        raise ValueError(f"unknown dtype {opts.dtype!r}; choose from {', '.join(DTYPES)}")
    device = torch.device(opts.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dataset = create_dataset(opts.dataset, opts.root or default_root(opts.dataset), split=opts.split,
                             annotations=opts.annotations, limit=opts.limit)
    model, cfg, name, pretrained, targets = _load_models(opts, device)
    if isinstance(targets, AudioTargets):
        dataset.sample_rate = targets.encoder.sample_rate
    size = opts.image_size or cfg["size"][0]
    vit_layers = LeGrad(model).vit.num_layers
    grid = variants(vit_layers)
    root = str(Path(opts.root or default_root(opts.dataset)).expanduser().resolve())
    annotations = str(Path(opts.annotations).expanduser().resolve()) if opts.annotations else None
    settings = {"dataset": opts.dataset, "root": root, "split": opts.split, "annotations": annotations, "model": name,
                "pretrained": pretrained, "audio_encoder": opts.audio_encoder, "target": opts.target,
                "prompt": opts.prompt, "image_size": size, "dtype": opts.dtype, "faithfulness_steps": steps,
                "variants": grid}
    rows_file = _prepare(out, settings, overwrite)
    done = {r["clip_id"] for r in read_jsonl(rows_file)}
    todo = [i for i, cid in enumerate(dataset.ids) if cid not in done]
    explainers = {v: LeGrad(model, **kw) for v, kw in grid.items()}
    all_blocks = LeGrad(model, layer_index=0)
    scorer = fa.ModelScorer(model)
    autocast = torch.autocast(device.type, dtype=DTYPES[opts.dtype], enabled=DTYPES[opts.dtype] is not None)
    collate = EvalCollate(cfg, size)
    loader = DataLoader(Subset(dataset, todo), batch_size=opts.batch_size, num_workers=opts.workers,
                        collate_fn=collate)
    if done:
        log.info("%s: %d clips already analysed, %d to do", out, len(done), len(todo))
    end_torn_line(rows_file)
    with rows_file.open("a") as sink, tqdm(total=len(todo), desc=f"ablations on {opts.dataset}", unit="clip") as bar:
        for records, skipped_batch, images in loader:
            rows = [{"clip_id": sk.clip_id, "skipped": sk.reason} for sk in skipped_batch]
            if records:
                rows += _score_batch(records, images.to(device), targets, explainers, all_blocks, scorer, autocast,
                                     steps, faith_batch, device)
            for row in rows:
                sink.write(json.dumps(json_safe(row)) + "\n")
            sink.flush()
            os.fsync(sink.fileno())
            bar.update(len(records) + len(skipped_batch))

    by_id = {r["clip_id"]: r for r in read_jsonl(rows_file)}
    ordered = [by_id[cid] for cid in dataset.ids if cid in by_id]
    scored = [r for r in ordered if "variants" in r]
    summary = {**settings, "clips": len(dataset), "analysed": len(scored), "num_layers": vit_layers,
               "skipped": [{"clip_id": r["clip_id"], "reason": r["skipped"]} for r in ordered if "skipped" in r],
               "variants": {v: _summarise(v, grid, scored) for v in [*grid, fa.RANDOM]}}
    shares = [r["share"] for r in scored]
    summary["layer_share_all_blocks"] = np.mean(shares, axis=0).tolist() if shares else None
    write_text_atomic(out / "ablation.json", json.dumps(json_safe(summary), indent=2, allow_nan=False))
    plots = [plot_accumulated_layers(summary["variants"], vit_layers, out / "accumulated_layers.png")]
    if shares:
        plots.append(plot_layer_contributions(torch.tensor(summary["layer_share_all_blocks"]),
                                              out / "layer_contributions.png"))
        record = None  # the head grid of one analysed clip
        for position, row in enumerate(scored):
            if position >= heads_clip:
                item = dataset[dataset.ids.index(row["clip_id"])]
                records, _, images = collate([item])
                if records:
                    record = records[0]
                    break
        if record is not None:
            with autocast:
                layers = all_blocks.explain_layers(images.to(device), targets([record], device))
            plots.append(plot_heads(record, layers.heads[0].cpu(), layers.layer_ids,
                                    out / f"heads_{_safe(record.clip_id)}.png"))
    print(format_table(summary))
    log.info("wrote %s and %s", out / "ablation.json", ", ".join(str(p) for p in plots))
    return summary


def _prepare(out: Path, settings: dict, overwrite: bool) -> Path:
    """The run folder: results of other settings are refused, never mixed (``overwrite`` starts afresh)."""
    out.mkdir(parents=True, exist_ok=True)
    rows_file, run_file = out / "clips.jsonl", out / "run.json"
    if overwrite:
        rows_file.unlink(missing_ok=True)
    if run_file.is_file() and rows_file.is_file() and rows_file.stat().st_size:
        previous = json.loads(run_file.read_text())
        changed = [k for k in settings if previous.get(k) != json.loads(json.dumps(settings[k]))]
        if changed:
            raise ValueError(f"{out} holds an analysis with other settings ({', '.join(changed)}); use another "
                             f"`out`, or `overwrite` to start afresh")
    write_text_atomic(run_file, json.dumps(settings, indent=2))
    return rows_file


def _score_batch(records, images, targets, explainers, all_blocks, scorer, autocast, steps, faith_batch, device):
    """Each clip's row: every variant's cIoU and faithfulness figures, and the layer shares."""
    with autocast:
        batch_targets = targets(records, device)
        maps = {v: e(images, batch_targets).float() for v, e in explainers.items()}
        maps[fa.RANDOM] = torch.stack([fa.random_map(r.clip_id, images.shape[-2:]) for r in records]).to(device)
        share = all_blocks.explain_layers(images, batch_targets).share.cpu()
        rows = [{"clip_id": r.clip_id, "share": share[i].tolist(), "variants": {}} for i, r in enumerate(records)]
        for v, m in maps.items():
            values = fa.perturbation_metrics(scorer, images, batch_targets, m, steps=steps, batch_size=faith_batch)
            for i, record in enumerate(records):
                figures = {k: float(x[i]) for k, x in values.items()}
                gt = fa.record_ground_truth(record)
                if gt is not None:
                    figures["pointing_game"] = fa.pointing_game(m[i], gt)
                    figures["energy_pointing_game"] = fa.energy_pointing_game(m[i], gt)
                if fa.has_boxes(record):  # negatives (no box) have no cIoU
                    figures["ciou"] = metrics.ciou(m[i].cpu(), metrics.gt_map(record.boxes, record.box_format))
                rows[i]["variants"][v] = figures
    return rows


def _summarise(variant: str, grid: dict, scored: list[dict]) -> dict:
    row = {"settings": grid.get(variant, "uniform noise per clip")}
    cious = [r["variants"][variant]["ciou"] for r in scored if "ciou" in r["variants"].get(variant, {})]
    row.update(metrics.summarize(cious))
    for k in fa.METRICS:
        values = [r["variants"][variant].get(k) for r in scored if variant in r["variants"]]
        values = [x for x in values if x is not None and np.isfinite(x)]
        row[k] = float(np.mean(values)) if values else None
    return row


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def format_table(summary: dict) -> str:
    """``ablation.json``'s summary as a text table: one row per variant (and the random map), its
    clip count N and every figure of ``FIGURES`` x100 ("-" where no clip had it)."""
    names = {"ap50": "AP50", "mean_ciou": "mean cIoU", "auc": "AUC", "deletion_auc": "del v", "insertion_auc": "ins ^",
             "pos_perturbation_auc": "pos v", "neg_perturbation_auc": "neg ^", "pointing_game": "PG",
             "energy_pointing_game": "ePG"}
    lines = [f"{summary['dataset']} ({summary['split']}): {summary['clips']} clips, {len(summary['skipped'])} skipped"
             " (x100; v lower is better, ^ higher)",
             f"{'variant':<30} {'N':>5} " + " ".join(f"{names[k]:>9}" for k in FIGURES)]
    for v, r in summary["variants"].items():
        lines.append(f"{v:<30} {r['n']:>5} " + " ".join(f"{percent(r.get(k)):>9}" for k in FIGURES))
    return "\n".join(lines)


def _save_figure(fig, path: Path) -> Path:
    """A matplotlib figure as a PNG, atomically."""
    import matplotlib.pyplot as plt

    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def plot_accumulated_layers(rows: dict, num_layers: int, path: Path) -> Path:
    """The figures of the official definition over the last k blocks against k / L."""
    plt = _pyplot()
    ks = [k for k in range(1, num_layers + 1)]
    keys = [next(v for v in rows if v.startswith(f"official, last {k}")) for k in ks]
    x = [k / num_layers for k in ks]
    fig, ax = plt.subplots(figsize=(6, 4))
    for figure, label in (("ap50", "AP50"), ("mean_ciou", "mean cIoU"), ("pos_perturbation_auc", "pos. pert. AUC (lower better)"),
                          ("neg_perturbation_auc", "neg. pert. AUC"), ("pointing_game", "pointing game")):
        y = [rows[k].get(figure) for k in keys]
        if all(v is not None and np.isfinite(v) for v in y):
            ax.plot(x, y, marker="o", label=label)
            random = rows[fa.RANDOM].get(figure)
            if figure.endswith("perturbation_auc") and random is not None:
                ax.axhline(random, ls=":", lw=0.8, color=ax.lines[-1].get_color())
    ax.set_xlabel("share of accumulated layers (last k of L blocks)")
    ax.set_ylabel("figure")
    ax.set_title("LeGrad: accumulated layers (dotted: random map)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save_figure(fig, path)


def plot_layer_contributions(share: torch.Tensor, path: Path) -> Path:
    """A bar chart of ``share`` ``[L]`` (each block's mean share of the summed, un-normalised
    LeGrad map, as :class:`avlegrad.explain.LayerMaps` ``share``; sums to 1) saved as a PNG at
    ``path`` (atomically); returns ``path``."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar(range(len(share)), share.numpy())
    ax.set_xlabel("block")
    ax.set_ylabel("mean share of the summed map")
    ax.set_title("each layer's contribution (all blocks explained)")
    return _save_figure(fig, path)


def plot_heads(record, heads: torch.Tensor, layer_ids: list, path: Path) -> Path:
    """``heads`` ``[L, heads, gh, gw]`` of one clip: rows are layers, columns heads (each
    min-max normalised on its own), the frame first."""
    plt = _pyplot()
    L, H = heads.shape[:2]
    fig, axes = plt.subplots(L, H + 1, figsize=(1.4 * (H + 1), 1.4 * L), squeeze=False)
    for r in range(L):
        axes[r, 0].imshow(record.frame)
        axes[r, 0].set_ylabel(f"block {layer_ids[r]}", fontsize=7)
        for h in range(H):
            axes[r, h + 1].imshow(heads[r, h].numpy(), cmap="jet")
            if r == 0:
                axes[r, h + 1].set_title(f"head {h}", fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"per-head LeGrad maps of {record.clip_id}", fontsize=9)
    return _save_figure(fig, path)


def build_parser() -> argparse.ArgumentParser:
    d = EvalOptions()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="synthetic", help="a box or mask dataset of eval.py")
    ap.add_argument("--root")
    ap.add_argument("--split", default=d.split)
    ap.add_argument("--annotations")
    ap.add_argument("--model")
    ap.add_argument("--pretrained")
    ap.add_argument("--audio-encoder", help="default for --dataset synthetic: the world's trained encoder")
    ap.add_argument("--target", choices=("audio", "text"))
    ap.add_argument("--prompt", default=d.prompt)
    ap.add_argument("--image-size", type=int)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--device")
    ap.add_argument("--dtype", default="fp32", choices=list(DTYPES))
    ap.add_argument("--limit", type=int)
    ap.add_argument("--steps", type=int, default=d.faithfulness_steps,
                    help="deletion/insertion steps (default as eval.py --faithfulness-steps)")
    ap.add_argument("--faithfulness-batch", type=int, default=256, help="perturbed images per forward")
    ap.add_argument("--heads-clip", type=int, default=0, help="which analysed clip (its position) gets the head grid")
    ap.add_argument("--out", help="default: outputs/analysis-<dataset>")
    ap.add_argument("--overwrite", action="store_true", help="discard an earlier analysis in --out")
    add_import_flag(ap)
    return ap


def parse_args(argv=None):
    a = build_parser().parse_args(argv)
    audio_encoder = a.audio_encoder
    if a.dataset == "synthetic" and not (a.model or a.pretrained or a.audio_encoder or a.target == "text"):
        from .world_clip import AUDIO_FILE, WORLD_CHECKPOINTS

        audio_encoder = str(WORLD_CHECKPOINTS / AUDIO_FILE)
    opts = EvalOptions(dataset=a.dataset, root=a.root, split=a.split, annotations=a.annotations, model=a.model,
                       pretrained=a.pretrained, audio_encoder=audio_encoder,
                       target=a.target or ("audio" if audio_encoder else "text"), prompt=a.prompt,
                       image_size=a.image_size, batch_size=a.batch_size, workers=a.workers, device=a.device,
                       dtype=a.dtype, limit=a.limit)
    out = Path(a.out or f"outputs/analysis-{a.dataset}")
    return opts, out, a


def main(argv=None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    logging.getLogger("avlegrad").setLevel(logging.INFO)
    problem = import_extensions(argv)  # before the parser: its help lists the registries
    if problem:
        log.error("%s", problem)
        return 2
    opts, out, a = parse_args(argv)
    try:
        run_analysis(opts, out, steps=a.steps, faith_batch=a.faithfulness_batch, heads_clip=a.heads_clip,
                     overwrite=a.overwrite)
    except (ValueError, FileNotFoundError) as e:  # the library names arguments: said here as flags
        flags = {**parser_flags(build_parser()), "faith_batch": "--faithfulness-batch"}
        log.error("%s", flag_wording(str(e), flags))
        return 2
    return 0


def cli(argv=None) -> int:
    """``python -m avlegrad.analyze``: :func:`main`, with Ctrl-C a one-line message (exit 130), no traceback."""
    from .cli import run_command

    return run_command(main, argv, name="python -m avlegrad.analyze",
                       interrupted="interrupted; the clips analysed so far are kept: rerun the same command "
                                   "to resume")


if __name__ == "__main__":
    sys.exit(cli())
