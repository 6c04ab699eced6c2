"""``eval.py --dataset synthetic --explain audio``: LeGrad on the sound, scored in the offline world.

For each held-out clip, the audio encoder's embedding of the clip's sound is explained with
respect to the clip's frame embedding (the world CLIP's image embedding of the annotated frame,
the embedding the encoder was trained to reach): :class:`~avlegrad.explain.audio.AudioLeGrad`
gives a map over (mel band, frame) on the encoder's own log-mel grid. The generator knows the
clip's parts (the sounding object, background noise, the off-screen distractor), so the map is
scored against the sounding object's time-frequency mask and its per-frame activity
(:func:`avlegrad.data.synthetic.audio_truth`, :mod:`avlegrad.metrics_audio`): ``tf_energy`` and
``time_auc``. Beside it: the same explainer on the untrained encoder (the config's
initialisation) and the loudness prior (the log-mel itself, min-max normalised).

``--split audio-mixture`` (:func:`avlegrad.data.synthetic.ensure_audio_mixture`): the same clips'
pictures, with the object sounding in spans and an off-screen class sounding in spans of its own at
a comparable loudness (-5..+5 dB), so that the spectrogram's loudness no longer tells the object's
bins and frames; the ground truth comes from the separated parts as for the standard clips.

Beside them, the time_auc ceiling (:func:`avlegrad.metrics_audio.time_auc_bound`): the best any map
constant over the encoder's patch columns can score, which bounds every patch-level explainer.

Two readings of ``time_auc`` beside it, per method: ``time_auc_max`` (the per-frame curve as the
maximum over mel bands, :func:`~avlegrad.metrics_audio.relevance_curve`), and the object's active
frames against only part of its silent frames (:func:`~avlegrad.metrics_audio.time_auc_against`),
on the audio-mixture split: ``time_auc_other``, the frames where only the off-screen distractor is
heard (does the map tell the pictured sound from the other one?), and ``time_auc_silence``, the
frames where neither is (None on the standard clips, whose distractor sounds throughout).

Output (``--out``): ``summary.json`` (means per method, N, skipped clips and why, the ceiling) and
``clips.jsonl`` (per clip: class, distractor, each method's scores), written atomically; the
table is printed. A run takes seconds, so it is recomputed rather than resumed.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch

from ..fileio import write_text_atomic
from ..metrics_audio import loudness_prior, relevance_curve, tf_energy, time_auc, time_auc_against, time_auc_bound

log = logging.getLogger(__name__)

AUDIO_VIT_FILE = "audio_vit.pt"  # the world's audio encoder as a ViT (configs/world_audio_vit.yaml)
AUDIO_VIT_CONFIG = "configs/world_audio_vit.yaml"
# time_auc_max: the per-frame curve as the maximum over mel bands instead of the mean;
# time_auc_other / time_auc_silence: the active frames against only the frames where the off-screen
# sound alone is heard / where neither is (mean curve)
METRICS = ("tf_energy", "time_auc", "time_auc_max", "time_auc_other", "time_auc_silence")


def untrained_like(config) -> torch.nn.Module:
    """The encoder of a ``train.py`` config at its initialisation (what a run starts from).
    ``config``: a YAML file, or the resolved config a ``train.py`` checkpoint stores."""
    from ..train import build_encoder, load_config

    cfg = config if isinstance(config, dict) else load_config(config)
    torch.manual_seed(int(cfg["seed"]))  # as the trainer does before building the encoder
    return build_encoder(cfg, int(cfg["clip"]["model_cfg"]["embed_dim"]), "cpu").eval()


def evaluate_audio_side(root, encoders: dict, clip_model, preprocess_cfg: dict, *, limit: int | None = None,
                        layer_index: int = -2, out=None, progress: bool = True, split: str = "test") -> dict:
    """Score audio-side LeGrad maps on a synthetic set; returns the summary (also written under ``out``).

    ``encoders``: ``{name: audio encoder}`` (each a ViT the audio explainer supports, all on the
    same log-mel front-end); ``clip_model``: the image tower whose frame embeddings are the targets;
    ``split``: ``test`` (the clips' own sound) or ``audio-mixture`` (see the module docstring).
    """
    from tqdm import tqdm

    from ..data.datasets import create_dataset
    from ..data.media import load_audio
    from ..data.synthetic import MIXTURE_DIR, MIXTURE_SPLIT, audio_truth, ensure_audio_mixture, ensure_synthetic
    from ..explain.adapters import image_embedding
    from ..explain.audio import AudioLeGrad
    from ..models import image_tensor

    if split not in ("test", MIXTURE_SPLIT):
        raise ValueError(f"`explain=audio`: unknown `split` {split!r} of the synthetic set; choose test (the clips' "
                         f"own sound) or {MIXTURE_SPLIT}")
    root = ensure_audio_mixture(root) if split == MIXTURE_SPLIT else ensure_synthetic(root)
    names = list(encoders)
    first = encoders[names[0]]
    frontend = first.frontend
    for name, enc in encoders.items():
        fe = getattr(enc, "frontend", None)
        if fe is None or repr(fe) != repr(frontend):
            raise ValueError(f"audio encoder {name!r}: its front-end differs from {names[0]!r}'s; the ground truth "
                             f"is computed on one log-mel grid")
    explainers = {name: AudioLeGrad(enc, layer_index=layer_index) for name, enc in encoders.items()}
    # the ceiling of time_auc for any map constant over the first encoder's patch columns
    patch_frames = explainers[names[0]].adapter.patch_frames
    dataset = create_dataset("synthetic", root, sample_rate=first.sample_rate, limit=limit)
    scenes = {s["file"]: s for s in json.loads((Path(root) / "synthetic.json").read_text()).get("scenes", [])}
    if split == MIXTURE_SPLIT:  # the distractor is the split's own
        mixture = json.loads((Path(root) / f"{MIXTURE_DIR}.json").read_text())["clips"]
        scenes = {c: dict(scenes.get(c, {}), **m) for c, m in mixture.items()}
    rows, skipped = [], []
    device = next(clip_model.parameters()).device
    items = range(len(dataset))
    for i in tqdm(items, desc="audio-side LeGrad", disable=not progress):
        item = dataset[i]
        if not hasattr(item, "waveform"):  # a SkippedClip
            skipped.append({"clip": item.clip_id, "reason": item.reason})
            continue
        waveform = item.waveform
        if split == MIXTURE_SPLIT:  # the picture is the clip's, the sound the split's
            try:
                waveform, _ = load_audio(Path(root) / MIXTURE_DIR / f"{item.clip_id}.wav", first.sample_rate)
            except (OSError, ValueError, RuntimeError) as e:
                skipped.append({"clip": item.clip_id, "reason": str(e)})
                continue
        problem = first.check_waveform(waveform)
        if problem:
            skipped.append({"clip": item.clip_id, "reason": problem})
            continue
        mixture = split == MIXTURE_SPLIT  # the distractor's frames are only used there (below)
        truth = audio_truth(root, [item.clip_id], frontend, split=split, distractor=mixture)[item.clip_id]
        mask, active = truth[:2]
        wave = torch.from_numpy(np.ascontiguousarray(waveform))[None]
        with torch.no_grad():
            image = image_tensor(item.frame, preprocess_cfg)[None].to(device)
            target = image_embedding(clip_model, image).cpu()
            log_mel = frontend(wave)[0, 0]
        if tuple(log_mel.shape) != mask.shape:
            raise ValueError(f"clip {item.clip_id}: the ground truth's grid {mask.shape} differs from the "
                             f"encoder's log-mel {tuple(log_mel.shape)}")
        maps = {name: ex.explain_waveforms(wave, target).maps[0].numpy() for name, ex in explainers.items()}
        maps["loudness prior"] = loudness_prior(log_mel)
        row = {"clip": item.clip_id, "class": item.label, "distractor": scenes.get(item.clip_id, {}).get("distractor"),
               **({"snr_db": scenes.get(item.clip_id, {}).get("snr_db")} if split == MIXTURE_SPLIT else {}),
               "mask_share": round(float(mask.mean()), 4), "active_share": round(float(active.mean()), 4)}
        # vs other / vs silence only on the mixtures: the standard clips' distractor sounds throughout,
        # so there the two would divide clips (with a distractor or not), not frames
        if mixture:
            only_other, neither = truth[2] & ~active, ~truth[2] & ~active
            row["other_share"] = round(float(only_other.mean()), 4)
            row["neither_share"] = round(float(neither.mean()), 4)
        for name, m in maps.items():
            curve = relevance_curve(m)
            row[name] = {"tf_energy": tf_energy(m, mask), "time_auc": time_auc(curve, active),
                         "time_auc_max": time_auc(relevance_curve(m, "max"), active),
                         "time_auc_other": time_auc_against(curve, active, only_other) if mixture else None,
                         "time_auc_silence": time_auc_against(curve, active, neither) if mixture else None}
        if patch_frames:
            row["time_auc_ceiling"] = time_auc_bound(active, patch_frames)
        rows.append(row)
    methods = names + ["loudness prior"]
    summary = {"dataset": "synthetic", "root": str(root), "split": split, "explain": "audio",
               "layer_index": layer_index,
               "n": len(rows), "methods": {}, "skipped": skipped,
               "mask_share": float(np.mean([r["mask_share"] for r in rows])) if rows else None}
    def means(subset):
        table = {}
        for name in methods:
            entry = {}
            for metric in METRICS:
                values = [r[name][metric] for r in subset if r[name][metric] is not None]
                entry[metric] = float(np.mean(values)) if values else None
                entry[f"n_{metric}"] = len(values)
            table[name] = entry
        return table

    summary["methods"] = means(rows)
    ceilings = [r["time_auc_ceiling"] for r in rows if r.get("time_auc_ceiling") is not None]
    summary["time_auc_ceiling"] = ({"patch_frames": patch_frames, "time_auc": float(np.mean(ceilings)),
                                    "n_time_auc": len(ceilings)} if ceilings else None)
    # the clips with an off-screen distractor: loudness alone no longer tells the object's bins
    # (every clip of the audio-mixture split: the subset would repeat the table)
    with_distractor = [r for r in rows if r["distractor"]] if split != MIXTURE_SPLIT else []
    summary["n_with_distractor"] = len(with_distractor)
    summary["methods_with_distractor"] = means(with_distractor)
    # the summary keys the issue names: the first (trained) encoder's figures
    summary["tf_energy"] = summary["methods"][names[0]]["tf_energy"]
    summary["time_auc"] = summary["methods"][names[0]]["time_auc"]
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / "clips.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
        write_text_atomic(out / "summary.json", json.dumps(summary, indent=1))
    return summary


def format_audio_table(summary: dict) -> str:
    """The printed table: N, tf_energy, time_auc and its readings (max-band; on the audio-mixture
    split vs other and vs silence) x100 per method, on all clips and on those with an off-screen
    distractor."""
    def pct(v):
        return f"{100 * v:8.2f}" if v is not None else "     n/a"

    first = next(iter(summary.get("methods", {}).values()), {})
    n_other, n_silence = first.get("n_time_auc_other", 0), first.get("n_time_auc_silence", 0)
    split_cols = bool(n_other or n_silence)  # the audio-mixture split's
    lines = [f"synthetic ({summary.get('split', 'test')}), audio side: {summary['n']} clips scored, "
             f"{len(summary.get('skipped', []))} skipped",
             f"{'method':34s} {'N':>5s} {'tf_energy':>9s} {'N(time)':>8s} {'time_auc':>9s} {'max-band':>9s}"
             + (f" {'vs other':>9s} {'vs silence':>10s}" if split_cols else "")]
    for key, n, suffix in (("methods", summary["n"], ""),
                           ("methods_with_distractor", summary.get("n_with_distractor", 0), " (distractor)")):
        if not n:
            continue
        for name, entry in summary.get(key, {}).items():
            lines.append(f"{name + suffix:34s} {n:5d} {pct(entry['tf_energy']):>9s} {entry['n_time_auc']:8d} "
                         f"{pct(entry['time_auc']):>9s} {pct(entry.get('time_auc_max')):>9s}"
                         + (f" {pct(entry.get('time_auc_other')):>9s} {pct(entry.get('time_auc_silence')):>10s}"
                            if split_cols else ""))
    ceiling = summary.get("time_auc_ceiling")
    if ceiling:
        lines.append(f"(time_auc ceiling {100 * ceiling['time_auc']:.2f}: the best any map constant over the encoder's "
                     f"{ceiling['patch_frames']}-frame patch columns can score on these {ceiling['n_time_auc']} clips)")
    lines.append("(max-band: time_auc with the per-frame maximum over mel bands instead of the mean" +
                 (f"; vs other / vs silence: time_auc against only the frames where the off-screen sound alone is "
                  f"heard / where neither is, on {n_other} / {n_silence} of all clips)" if split_cols else ")"))
    if summary.get("mask_share") is not None:
        lines.append(f"(the object's T-F mask covers {100 * summary['mask_share']:.1f}% of the spectrogram on average: "
                     f"a uniform map's tf_energy)")
    return "\n".join(lines)


def run_from_eval(opts, encoder_path=None) -> dict:
    """``eval.py --explain audio``: the world's audio ViT (shipped, or ``--audio-encoder``), trained
    and untrained, with the world CLIP, on ``opts.root`` (default ``datasets/synthetic``), split
    ``opts.split`` (``test``: the clips' own sound; ``audio-mixture``)."""
    from ..audio import create_audio_encoder
    from ..world_clip import WORLD_CHECKPOINTS, load_world_models

    if opts.dataset != "synthetic":
        raise ValueError(f"the audio-side run needs the ground truth of the offline world: `dataset=synthetic`, "
                         f"not {opts.dataset!r}")
    path = Path(encoder_path) if encoder_path else WORLD_CHECKPOINTS / AUDIO_VIT_FILE
    if not path.is_file():
        raise ValueError(f"{path}: no audio ViT checkpoint (train one with configs/world_audio_vit.yaml and "
                         f"package it with scripts/package_world_audio.py)")
    clip_model, preprocess_cfg, _ = load_world_models()
    from ..audio.factory import load_checkpoint_file

    trained = create_audio_encoder(str(path)).eval()
    # the control: the trained encoder's own config at its initialisation (stored by train.py), else
    # the shipped ViT's config
    config = load_checkpoint_file(path).get("config") or Path(__file__).resolve().parents[2] / AUDIO_VIT_CONFIG
    encoders = {"LeGrad, trained": trained}
    if isinstance(config, dict) or config.is_file():
        encoders["LeGrad, untrained"] = untrained_like(config)
    root = opts.root or str(Path("datasets") / "synthetic")
    split = getattr(opts, "split", "test")
    out = opts.out or str(Path("outputs") / ("synthetic-audio" if split == "test" else f"synthetic-{split}"))
    summary = evaluate_audio_side(root, encoders, clip_model, preprocess_cfg, limit=opts.limit,
                                  layer_index=opts.layer_index, out=out, split=split)
    print(format_audio_table(summary))
    print(f"results in {out}")
    return summary
