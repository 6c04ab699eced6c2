"""Speed of the real pipeline, ImageBind audio + ViT-H-14: the models alone, ``eval`` and ``localize`` end to end.

One run, random weights in the real architectures (open_clip ViT-H-14 at 224 px; ImageBind's audio
tower in its official layout, :class:`avlegrad.audio.imagebind.ImageBindAudioEncoder`), measured
side by side so the ratios mean something on a shared machine:

1. image tower: forward images/s vs LeGrad maps/s, default layers (``-2``) and all layers (``0``);
2. ImageBind audio: 10 s waveforms/s through ``embed_each`` (3 x 2 s clips each: Kaldi fbank + the
   tower), with the share of the fbank preprocessing;
3. ``evaluate`` end to end on generated VGGSound-like clips (10 s, 640x360, 25 fps H.264 with a
   keyframe every ``--gop`` s, 44.1 kHz stereo AAC, listed in a ``csv-boxes`` dataset): clips/s, the
   share of the loop's time spent waiting for decoded clips, in the audio tower, in LeGrad and in
   scoring/writing, beside the model-only rate of the pair (audio + LeGrad per clip, from 1 and 2)
   and the decoding rate of one process (a DataLoader worker's share);
4. ``localize`` end to end on a 10 s 640x360 25 fps clip: frames/s, with the time of each thread's
   stages (reader: decode, to RGB, resize; main: waiting for frames, audio, LeGrad, waiting for the
   writer; writer: overlay, encode), beside the models alone on the same frames and decoding alone.

The pipelines' stages are timed by :mod:`avlegrad.profiling` (off outside benchmarks); with CUDA,
each stage edge waits for the GPU (``torch.cuda.synchronize``) so a stage's time holds its kernels.

    python benchmarks/pipeline_speed.py --device cuda --dtype bf16                # the real pair
    python benchmarks/pipeline_speed.py --small --device cpu                      # tiny models, a minute or two
    bash benchmarks/gpu_pipeline.sh                                               # the GPU run, results in $OUT

The clips are generated once into ``--cache`` (default: a folder under the system's temp dir) and
reused. A table is printed and the figures are written as JSON (``--json``, default
``benchmarks/results/pipeline_<device>_<model>.json``).
"""
from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from avlegrad import profiling  # noqa: E402
from localize_speed import cpu_name, sync  # noqa: E402  (benchmarks/, this script's folder)
from avlegrad.fileio import atomic_path, write_text_atomic  # noqa: E402

DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
# --small: an open_clip ViT with the real front end (224 px, 16 px patches: 196 tokens) and few,
# narrow blocks; ImageBind's audio tower likewise (the real fbank and 12 x 19 patch grid)
SMALL_TOWER = {"embed_dim": 64,
               "vision_cfg": {"image_size": 224, "layers": 4, "width": 128, "patch_size": 16, "head_width": 32},
               "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1}}
SMALL_AUDIO = {"width": 64, "depth": 2, "heads": 4}


# ----------------------------------------------------------------------------- media
def _textured_frames(seed: int, seconds: float, fps: int, width: int, height: int):
    """Frames with texture and a moving disc: the encoder and decoder have real work."""
    import cv2

    rng = np.random.default_rng(seed)
    texture = cv2.resize(rng.integers(0, 255, (height // 8, width // 8, 3), dtype=np.uint8), (width, height))
    n = int(round(seconds * fps))
    for i in range(n):
        f = np.roll(texture, 2 * i, axis=1)
        x = int((0.1 + 0.8 * i / max(n, 1)) * width)
        cv2.circle(f, (x, height // 2), height // 6, (240, 200, 40), -1)
        yield f


def write_clip(path: Path, seed: int, seconds: float = 10.0, fps: int = 25, size=(640, 360),
               sample_rate: int = 44100, gop_seconds: float = 2.0) -> None:
    """A VGGSound-like mp4 (H.264 yuv420p, CRF 23, a keyframe every ``gop_seconds``; stereo AAC), atomically."""
    import av

    width, height = size
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    tone = 0.3 * np.sin(2 * np.pi * (220 + 40 * seed % 400) * t) * (1 + 0.5 * np.sin(2 * np.pi * 0.5 * t))
    audio = np.stack([tone, 0.5 * tone]) + 0.02 * rng.standard_normal((2, len(t)))
    audio = audio.astype(np.float32)
    with atomic_path(path) as tmp, av.open(str(tmp), mode="w", format="mp4") as out:
        v = out.add_stream("libx264", rate=fps)
        v.width, v.height, v.pix_fmt = width, height, "yuv420p"
        v.options = {"crf": "23", "preset": "veryfast", "g": str(int(round(gop_seconds * fps)))}
        a = out.add_stream("aac", rate=sample_rate)
        a.layout = "stereo"
        for i, rgb in enumerate(_textured_frames(seed, seconds, fps, width, height)):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = i
            out.mux(v.encode(frame))
        out.mux(v.encode())
        for i in range(0, audio.shape[1], 1024):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(audio[:, i:i + 1024]), format="fltp",
                                               layout="stereo")
            frame.sample_rate, frame.pts = sample_rate, i
            out.mux(a.encode(frame))
        out.mux(a.encode())


def make_dataset(root: Path, clips: int, distinct: int, gop_seconds: float) -> Path:
    """A ``csv-boxes`` dataset of ``clips`` videos under ``root/videos`` (``distinct`` encoded, the
    rest copies of them: decoding costs the same), one box each. Reused when already there."""
    videos = root / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    for k in range(distinct):
        source = videos / f"clip{k:05d}.mp4"
        if not source.is_file():
            write_clip(source, seed=k, gop_seconds=gop_seconds)
    rows = []
    for k in range(clips):
        path = videos / f"clip{k:05d}.mp4"
        if not path.is_file():
            shutil.copyfile(videos / f"clip{k % distinct:05d}.mp4", path)
        rows.append([f"clip{k:05d}", 160, 90, 480, 270, 640, 360, "tone"])
    with atomic_path(root / "boxes.csv") as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["clip_id", "x0", "y0", "x1", "y1", "image_width", "image_height", "label"])
        w.writerows(rows)
    return root


# ----------------------------------------------------------------------------- models
def make_pair(args, folder: Path, device):
    """The image tower and the ImageBind audio encoder, random weights, built as ``eval`` builds them:
    from an audio-encoder checkpoint naming its tower (written once into ``folder``)."""
    from avlegrad.audio import create_audio_encoder
    from avlegrad.audio.factory import encoder_checkpoint, save_checkpoint_file
    from avlegrad.models import load_pair

    if args.small:
        tower = {"clip_model": "tiny-ViT", "clip_pretrained": None, "clip_model_cfg": SMALL_TOWER}
        kwargs = {**SMALL_AUDIO, "embed_dim": SMALL_TOWER["embed_dim"]}
    else:
        import open_clip

        embed_dim = open_clip.get_model_config(args.model)["embed_dim"]
        tower, kwargs = {"clip_model": args.model, "clip_pretrained": None}, {"embed_dim": embed_dim}
    ckpt = folder / f"imagebind_random_{'small' if args.small else args.model}.pt"
    if not ckpt.is_file():
        torch.manual_seed(0)
        encoder = create_audio_encoder("imagebind", pretrained=False, **tower, **kwargs)
        save_checkpoint_file(encoder_checkpoint(encoder), ckpt)
    clip, cfg, name, pretrained, encoder = load_pair(str(ckpt), device=device)
    return ckpt, clip, cfg, encoder


# ----------------------------------------------------------------------------- timing helpers
def rate(fn, items: int, device, min_seconds: float, min_calls: int = 2) -> float:
    """Items/s of ``fn`` (one warm-up call, then calls until ``min_seconds`` and ``min_calls``)."""
    fn()
    sync(device)
    calls, start = 0, time.perf_counter()
    while calls < min_calls or time.perf_counter() - start < min_seconds:
        fn()
        calls += 1
    sync(device)
    return items * calls / (time.perf_counter() - start)


# ----------------------------------------------------------------------------- the measurements
def measure_models(args, clip, encoder, device) -> dict:
    from avlegrad import LeGrad

    dtype = DTYPES[args.dtype]
    cast = torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)
    size = clip.visual.image_size[0] if isinstance(clip.visual.image_size, (tuple, list)) else clip.visual.image_size
    images = torch.randn(args.batch, 3, size, size, device=device)
    targets = torch.randn(args.batch, encoder.embed_dim, device=device)

    def forward():
        with torch.no_grad(), cast:
            clip.visual(images)

    out = {"forward_images_per_s": rate(forward, args.batch, device, args.min_seconds)}
    for label, layer_index in (("legrad_default", -2), ("legrad_all_layers", 0)):
        explainer = LeGrad(clip, layer_index=layer_index)

        def explain():
            with cast:
                explainer(images, targets)

        out[f"{label}_maps_per_s"] = rate(explain, args.batch, device, args.min_seconds)
        out[f"{label}_vs_forward"] = out[f"{label}_maps_per_s"] / out["forward_images_per_s"]

    waves = torch.from_numpy(np.random.default_rng(0).standard_normal((args.audio_batch, 160000)).astype(np.float32)
                             * 0.1).to(device)

    def audio():
        with torch.no_grad(), cast:
            encoder.embed_each(waves)

    def fbank():
        encoder.preprocess(waves)

    out["audio_clips_per_s"] = rate(audio, args.audio_batch, device, args.min_seconds)
    out["audio_fbank_clips_per_s"] = rate(fbank, args.audio_batch, device, args.min_seconds)
    out["audio_fbank_share"] = out["audio_clips_per_s"] / out["audio_fbank_clips_per_s"]
    # eval's model work per clip: one 10 s sound through the audio tower, one frame through LeGrad
    out["pair_model_only_clips_per_s"] = 1 / (1 / out["audio_clips_per_s"] + 1 / out["legrad_default_maps_per_s"])
    return out


def measure_decode(root: Path, sample_rate: int, clips: int) -> dict:
    """One process reading clips as a DataLoader worker does (middle frame, whole sound at 16 kHz)."""
    from avlegrad.data import create_dataset

    dataset = create_dataset("csv-boxes", root, sample_rate=sample_rate, limit=clips)
    from avlegrad.data.media import load_audio, load_frame

    dataset[0]  # warm-up (imports, first open)
    start = time.perf_counter()
    for i in range(len(dataset)):
        dataset[i]
    out = {"decode_clips_per_s_one_process": len(dataset) / (time.perf_counter() - start)}
    videos = sorted((root / "videos").glob("*.mp4"))[:len(dataset)]
    for name, read in (("middle_frame", load_frame), ("sound", lambda v: load_audio(v, sample_rate))):
        start = time.perf_counter()
        for v in videos:
            read(v)
        out[f"decode_{name}_ms"] = 1000 * (time.perf_counter() - start) / len(videos)
    return out


def measure_eval(args, root: Path, ckpt: Path, device, out: Path) -> dict:
    from avlegrad.eval import EvalOptions, evaluate

    base = dict(dataset="csv-boxes", root=str(root), audio_encoder=str(ckpt), batch_size=args.batch,
                workers=args.workers, device=str(device), dtype=args.dtype, out=str(out), overwrite=True)
    evaluate(EvalOptions(**base, limit=args.batch))  # warm-up: kernels, allocator, page cache
    with profiling.timing(sync=device.type == "cuda") as stages:
        evaluate(EvalOptions(**base, limit=args.clips))
        totals = stages.totals()
    summary = json.loads((out / "summary.json").read_text())
    run = totals.get("eval: run", float("nan"))
    parts = {"wait for data": totals.get("eval: wait for data", 0.0), "audio": totals.get("eval: audio", 0.0),
             "explain": totals.get("eval: explain", 0.0)}
    parts["score and write"] = max(run - sum(parts.values()), 0.0)
    return {"eval_clips": summary["evaluated"], "eval_seconds": run, "eval_clips_per_s": summary["evaluated"] / run,
            "eval_share": {k: v / run for k, v in parts.items()}}


def localize_clip(args, folder: Path) -> Path:
    return folder / f"localize_640x360_25fps_{args.video_seconds:g}s_gop{args.gop:g}.mp4"


def measure_writer(video: Path, out_dir: Path, loc) -> float:
    """Frames/s of the writer's work alone: overlay a map on each frame, encode H.264 + AAC (one thread)."""
    from avlegrad import localize
    from avlegrad.visualize import overlay

    with localize.FrameReader(video) as reader:
        frames = [f.rgb for f in reader]
        fps = reader.fps
    heat = np.random.default_rng(0).random((loc.image_size, loc.image_size), dtype=np.float32)
    out_dir.mkdir(parents=True, exist_ok=True)
    writer = localize.VideoWriter(out_dir / "writer_only.mp4", frames[0].shape[1], frames[0].shape[0], fps,
                                  localize.read_audio_track(video))
    start = time.perf_counter()
    for rgb in frames:
        writer.write(overlay(rgb, heat, loc.alpha, loc.colormap))
    writer.finish()
    return len(frames) / (time.perf_counter() - start)


def measure_localize(args, clip, cfg, encoder, device, folder: Path) -> dict:
    from avlegrad import localize

    video = localize_clip(args, folder)
    if not video.is_file():
        write_clip(video, seed=99, seconds=args.video_seconds, sample_rate=48000, gop_seconds=args.gop)
    warmup = min(1.0, args.video_seconds)
    short = folder / f"localize_warmup_{warmup:g}s.mp4"
    if not short.is_file():
        write_clip(short, seed=98, seconds=warmup, sample_rate=48000, gop_seconds=args.gop)
    loc = localize.Localizer(clip, cfg, encoder, batch_size=args.localize_batch, dtype=args.dtype, progress=False)
    out_dir = folder / "localize_out"

    start = time.perf_counter()
    with localize.FrameReader(video) as reader:
        n = sum(1 for _ in reader)
    result = {"decode_frames_per_s": n / (time.perf_counter() - start)}
    start = time.perf_counter()
    with localize.FrameReader(video, prepare=loc.prepare) as reader:
        batch = []
        for f in reader:
            if len(batch) < loc.batch_size:
                batch.append(f)
    result["decode_resize_frames_per_s"] = n / (time.perf_counter() - start)
    result["overlay_encode_frames_per_s"] = measure_writer(video, out_dir, loc)

    audio = localize.AudioWindows(localize.read_audio_track(video), encoder.sample_rate, loc.window)
    images = [f.image for f in batch]

    def explain():
        for f, image in zip(batch, images):
            f.image = image
        loc.explain(batch, audio)

    result["model_only_frames_per_s"] = rate(explain, len(batch), device, args.min_seconds)
    if args.simulate_model_fps:  # an accelerator that frees the CPU while it works: a sleep
        zeros = np.zeros((loc.image_size, loc.image_size), np.float32)

        def sleeping_explain(frames, audio):
            time.sleep(len(frames) / args.simulate_model_fps)
            for f in frames:
                f.map, f.image = zeros, None

        loc.explain = sleeping_explain
        result["model_only_frames_per_s"] = float(args.simulate_model_fps)
    loc.localize(short, out_dir)  # warm-up
    with profiling.timing(sync=device.type == "cuda") as stages:
        r = loc.localize(video, out_dir)
        totals = stages.totals()
    result.update(frames=r.frames, seconds=r.seconds, frames_per_s=r.frames / r.seconds,
                  vs_model_only=r.frames / r.seconds / result["model_only_frames_per_s"],
                  stage_seconds=totals)
    return result


# ----------------------------------------------------------------------------- before / after
@contextmanager
def _pyav_default_reformat():
    """Before: PyAV's default conversion (``threads=0``: a pool of threads per frame from PyAV 17)."""
    from avlegrad.data import media

    saved = media.reformat_kwargs()
    media._REFORMAT_KWARGS = {}
    try:
        yield
    finally:
        media._REFORMAT_KWARGS = saved


def _interleaved_conversions(video: Path) -> dict:
    """yuv420p -> rgb24 (decoding) and rgb24 -> yuv420p (encoding) of each frame, PyAV's default and
    one thread alternating frame by frame (so a load change on a shared machine hits both alike)."""
    import av

    from avlegrad.data.media import reformat_kwargs

    one = reformat_kwargs()
    seconds = {"to_rgb": [0.0, 0.0], "to_yuv": [0.0, 0.0]}
    n = 0
    with av.open(str(video)) as c:
        for frame in c.decode(video=0):
            n += 1
            for k, kwargs in enumerate(({}, one) if n % 2 else (one, {})):
                j = 0 if not kwargs else 1
                t = time.perf_counter()
                rgb = frame.to_ndarray(format="rgb24", **kwargs)
                t1 = time.perf_counter()
                av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p", **kwargs)
                t2 = time.perf_counter()
                seconds["to_rgb"][j] += t1 - t
                seconds["to_yuv"][j] += t2 - t1
    return {f"{k}_frames_per_s": {"before": n / v[0], "after": n / v[1], "ratio": v[0] / v[1]}
            for k, v in seconds.items()}


@contextmanager
def _queues_of_8():
    """Before: localize's decoded-frame and frames-to-write queues held 8 frames (now a batch)."""
    from avlegrad import localize

    saved = localize.QUEUE_BYTES
    localize.QUEUE_BYTES = 0  # the queues' floor: 8 frames
    try:
        yield
    finally:
        localize.QUEUE_BYTES = saved


# a change of the pipeline and how to undo it for the "before" run
COMPARISONS = {"reformat-threads": _pyav_default_reformat, "queues": _queues_of_8}


def compare(args, name: str, clip, cfg, encoder, device, folder: Path, rounds: int = 2) -> dict:
    """localize's rates without (before) and with (after) the change ``name``, alternating runs."""
    runs = {"before": [], "after": []}
    for _ in range(rounds):
        for label in ("before", "after"):
            with (COMPARISONS[name]() if label == "before" else nullcontext()):
                runs[label].append(measure_localize(args, clip, cfg, encoder, device, folder))
    keys = ("decode_frames_per_s", "decode_resize_frames_per_s", "overlay_encode_frames_per_s", "frames_per_s")
    out = {}
    if name == "reformat-threads":  # the conversions alone, before and after alternating frame by frame
        out.update(_interleaved_conversions(localize_clip(args, folder)))
    for k in keys:
        before = float(np.median([r[k] for r in runs["before"]]))
        after = float(np.median([r[k] for r in runs["after"]]))
        out[k] = {"before": before, "after": after, "ratio": after / before}
    return out


# ----------------------------------------------------------------------------- report
def _r(x: float) -> str:
    """A rate: one decimal, or 3 significant digits below 10 (a big model on a CPU)."""
    return f"{x:,.1f}" if x >= 10 else f"{x:.3g}"


def report(res: dict) -> str:
    m, e, lo = res.get("models", {}), res.get("eval", {}), res.get("localize", {})
    lines = [f"# {res['setup']}"]
    if m:
        lines += [
            "| what | rate | ratio |", "|---|---|---|",
            f"| image forward | {_r(m['forward_images_per_s'])} images/s | |",
            f"| LeGrad, default layers (-2) | {_r(m['legrad_default_maps_per_s'])} maps/s | "
            f"{m['legrad_default_vs_forward']:.0%} of the forward |",
            f"| LeGrad, all layers (0) | {_r(m['legrad_all_layers_maps_per_s'])} maps/s | "
            f"{m['legrad_all_layers_vs_forward']:.0%} of the forward |",
            f"| ImageBind audio (10 s, 3 x 2 s clips) | {_r(m['audio_clips_per_s'])} sounds/s | "
            f"fbank {m['audio_fbank_share']:.0%} of it ({_r(m['audio_fbank_clips_per_s'])} sounds/s alone) |",
            f"| pair, models only (audio + LeGrad) | {_r(m['pair_model_only_clips_per_s'])} clips/s | |"]
    if e:
        share = ", ".join(f"{k} {v:.0%}" for k, v in e["eval_share"].items())
        ratio = f"{e['eval_clips_per_s'] / m['pair_model_only_clips_per_s']:.0%} of the models only" if m else ""
        lines.append(f"| eval end to end ({e['eval_clips']} clips) | {_r(e['eval_clips_per_s'])} clips/s | {ratio}; "
                     f"{share} |")
        if "decode_clips_per_s_one_process" in e:
            lines.append(f"| eval decoding, one process | {_r(e['decode_clips_per_s_one_process'])} clips/s | "
                         f"{e['workers']} workers; per clip: middle frame {e['decode_middle_frame_ms']:.1f} ms, "
                         f"sound at 16 kHz {e['decode_sound_ms']:.1f} ms |")
    if lo:
        main = {k: v for k, v in lo["stage_seconds"].items() if not k.startswith(("reader", "writer"))}
        threads = {k: v for k, v in lo["stage_seconds"].items() if k.startswith(("reader", "writer"))}
        fmt = lambda d: ", ".join(f"{k} {v / lo['seconds']:.0%}" for k, v in d.items())  # noqa: E731
        lines += [
            f"| localize decoding alone (reader thread) | {_r(lo['decode_frames_per_s'])} frames/s | "
            f"with the resize for the model {_r(lo['decode_resize_frames_per_s'])} |",
            f"| localize overlay + encoding alone (one thread) | {_r(lo['overlay_encode_frames_per_s'])} frames/s | |",
            f"| localize, models only | {_r(lo['model_only_frames_per_s'])} frames/s | |",
            f"| localize end to end ({lo['frames']} frames, 640x360) | {_r(lo['frames_per_s'])} frames/s | "
            f"{lo['vs_model_only']:.0%} of the models only |",
            f"| ... main thread, share of the wall time | | {fmt(main)} |",
            f"| ... other threads, busy share of the wall time | | {fmt(threads)} |"]
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cuda = torch.cuda.is_available()
    ap.add_argument("--device", default="cuda" if cuda else "cpu")
    ap.add_argument("--dtype", choices=DTYPES, default="bf16" if cuda else "fp32")
    ap.add_argument("--model", default="ViT-H-14", help="open_clip image tower, random weights (default ViT-H-14)")
    ap.add_argument("--small", action="store_true", help="tiny image and audio towers (a CPU run in a minute or two)")
    ap.add_argument("--batch", type=int, help="images per batch (default 64 on a GPU, 8 on the CPU)")
    ap.add_argument("--audio-batch", type=int, help="10 s sounds per audio batch (default: --batch)")
    ap.add_argument("--localize-batch", type=int, help="frames per localize batch (default: --batch)")
    ap.add_argument("--clips", type=int, help="clips in the eval run (default 512 on a GPU, 32 on the CPU)")
    ap.add_argument("--distinct", type=int, default=8, help="distinct clips encoded (the others are copies)")
    ap.add_argument("--workers", type=int, help="eval DataLoader workers (default: eval's)")
    ap.add_argument("--gop", type=float, default=2.0, help="seconds between keyframes of the generated clips")
    ap.add_argument("--video-seconds", type=float, default=10.0, help="length of the localize clip")
    ap.add_argument("--min-seconds", type=float, default=2.0, help="least time per model-only rate")
    ap.add_argument("--compare", choices=sorted(COMPARISONS),
                    help="instead of the table: localize's rates before and after this change, same run")
    ap.add_argument("--simulate-model-fps", type=float,
                    help="localize's model replaced by a sleep of a batch / this rate (the CPU is free meanwhile, "
                         "as with a GPU): what the CPU side allows, measured on a CPU")
    ap.add_argument("--skip", default="", help="comma list of parts to skip: models, eval, localize")
    ap.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "avlegrad_pipeline_speed"),
                    help="folder for the generated clips and checkpoints")
    ap.add_argument("--json", help="where to write the figures (default benchmarks/results/pipeline_<...>.json)")
    args = ap.parse_args(argv)
    on_gpu = args.device.startswith("cuda")
    args.batch = args.batch or (64 if on_gpu else 8)
    args.audio_batch = args.audio_batch or args.batch
    args.localize_batch = args.localize_batch or args.batch
    args.clips = args.clips or (512 if on_gpu else 32)
    if args.workers is None:
        from avlegrad.eval import EvalOptions

        args.workers = EvalOptions().workers
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}

    import logging

    logging.basicConfig(level=logging.ERROR)  # the random-weights warnings, once per model, are expected
    device = torch.device(args.device)
    folder = Path(args.cache).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    label = "small" if args.small else args.model
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    pair = "tiny ViT (4 x 128) + tiny ImageBind audio (2 x 64)" if args.small else f"{args.model} + ImageBind audio"
    setup = (f"{pair}"
             f", random weights, 224 px, {args.dtype}, batch {args.batch}, on {gpu or 'CPU'}; {cpu_name()}, "
             f"{os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), "
             f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC")
    res: dict = {"setup": setup, "args": vars(args)}
    t0 = time.perf_counter()
    ckpt, clip, cfg, encoder = make_pair(args, folder, device)
    print(f"# models built in {time.perf_counter() - t0:.1f} s", flush=True)
    if args.compare:
        figures = compare(args, args.compare, clip, cfg, encoder, device, folder)
        lines = [f"# {setup}", f"# localize before / after {args.compare} (median of 2 alternating runs each)",
                 "| rate (frames/s) | before | after | after / before |", "|---|---|---|---|"]
        lines += [f"| {k} | {v['before']:,.1f} | {v['after']:,.1f} | {v['ratio']:.2f} |" for k, v in figures.items()]
        print("\n".join(lines))
        path = (Path(args.json) if args.json
                else ROOT / "benchmarks" / "results" / f"compare_{args.compare}_{device.type}.json")
        write_text_atomic(path, json.dumps({"setup": setup, "compare": args.compare, "figures": figures,
                                            "table": "\n".join(lines)}, indent=2))
        return
    if "models" not in skip:
        res["models"] = measure_models(args, clip, encoder, device)
        print(report(res), flush=True)
    if "eval" not in skip:
        t0 = time.perf_counter()
        root = make_dataset(folder / f"clips_gop{args.gop:g}", args.clips, args.distinct, args.gop)
        print(f"# {args.clips} clips ready in {time.perf_counter() - t0:.1f} s", flush=True)
        res["eval"] = {"workers": args.workers, **measure_decode(root, encoder.sample_rate, min(args.clips, 16)),
                       **measure_eval(args, root, ckpt, device, folder / f"eval_out_{label}")}
    if "localize" not in skip:
        res["localize"] = measure_localize(args, clip, cfg, encoder, device, folder)
    table = report(res)
    print(table)
    path = Path(args.json) if args.json else ROOT / "benchmarks" / "results" / f"pipeline_{device.type}_{label}.json"
    write_text_atomic(path, json.dumps({**res, "table": table}, indent=2, default=str))
    print(f"# written to {path}")


if __name__ == "__main__":
    main()
