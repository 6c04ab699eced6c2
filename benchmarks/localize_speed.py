"""Frames per second of ``python -m avlegrad.localize``: decoding alone, the models alone, end to end.

A clip is generated (default 10 s, 25 fps, 640x360, 48 kHz stereo sound) and the three rates are
measured in the same run with randomly initialised models, so the ratios mean something:

- decode: PyAV decoding to RGB through the background reader, with and without the resize for the model;
- model: audio windows through the audio encoder + LeGrad on the image tower, batched (no video I/O);
- end to end: ``Localizer.localize`` writing the heatmap video with its sound (model loading excluded).

    python benchmarks/localize_speed.py                                    # ViT-B-16, CUDA if available
    python benchmarks/localize_speed.py --device cpu --model ViT-B-32 --seconds 4
    python benchmarks/localize_speed.py --device cuda --dtype bf16 --batch-size 64
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from avlegrad import localize  # noqa: E402
from avlegrad.data.media import write_video  # noqa: E402


def make_clip(path: Path, seconds: float, fps: int, width: int, height: int, sample_rate: int = 48000) -> None:
    """Textured frames with a moving disc (so the encoder has real work) and a stereo tone."""
    import cv2

    rng = np.random.default_rng(0)
    texture = cv2.resize(rng.integers(0, 255, (height // 8, width // 8, 3), dtype=np.uint8), (width, height))

    def frames():
        for i in range(int(seconds * fps)):
            f = np.roll(texture, i * 2, axis=1).copy()
            x = int((0.1 + 0.8 * i / (seconds * fps)) * width)
            cv2.circle(f, (x, height // 2), height // 6, (240, 200, 40), -1)
            yield f

    t = np.arange(int(seconds * sample_rate)) / sample_rate
    audio = np.stack([0.3 * np.sin(2 * np.pi * 440 * t), 0.2 * np.sin(2 * np.pi * 660 * t)], axis=1)
    write_video(path, frames(), fps, audio=audio, sample_rate=sample_rate)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="ViT-B-16", help="open_clip model name or model-config JSON (random weights)")
    ap.add_argument("--pretrained", default="none", help="weights: none (random), a tag or a file")
    ap.add_argument("--audio-backbone", default="resnet18", help="timm backbone of the random audio encoder")
    ap.add_argument("--target-text", help="explain this prompt instead of the sound (no audio encoder)")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--fps", type=int, default=25)
    ap.add_argument("--size", default="640x360", help="frame WIDTHxHEIGHT")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--stride", type=int, default=1)
    ap.add_argument("--model-frames", type=int, help="frames timed in the model-only run (default: the clip's)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", choices=list(localize.DTYPES), default="fp32")
    ap.add_argument("--keep", help="folder to keep the clip and the output in (default: a temporary one)")
    args = ap.parse_args(argv)

    from avlegrad.audio import create_audio_encoder
    from avlegrad.models import load_clip

    device = torch.device(args.device)
    width, height = (int(v) for v in args.size.lower().split("x"))
    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="localize_speed_"))
    folder.mkdir(parents=True, exist_ok=True)
    clip = folder / f"clip_{width}x{height}.mp4"
    make_clip(clip, args.seconds, args.fps, width, height)
    n_frames = int(args.seconds * args.fps)

    torch.manual_seed(0)
    model, cfg = load_clip(args.model, args.pretrained, device=device)
    encoder = text = None
    if args.target_text:
        text = localize.text_embedding(model, args.model, args.target_text)
    else:
        encoder = create_audio_encoder("timm", backbone=args.audio_backbone, embed_dim=model.visual.output_dim,
                                       clip_model=args.model, clip_pretrained=None, device=device)
    loc = localize.Localizer(model, cfg, encoder, text, batch_size=args.batch_size, stride=args.stride,
                             dtype=args.dtype, progress=False)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    print(f"# {args.model} ({loc.image_size}px, random weights), "
          f"{'text target' if text is not None else f'timm {args.audio_backbone} audio encoder'}, batch "
          f"{args.batch_size}, stride {args.stride}, {args.dtype} on {gpu or 'CPU'}; {cpu_name()}"
          f" with {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads)")
    print(f"# clip: {args.seconds:g} s, {args.fps} fps, {width}x{height}, 48 kHz stereo ({n_frames} frames)")

    # decoding alone (the reader thread, drained as fast as possible)
    for label, prepare in (("decode to RGB", None), ("decode + resize for the model", loc.prepare)):
        start = time.perf_counter()
        with localize.FrameReader(clip, prepare=prepare) as reader:
            count = sum(1 for _ in reader)
        print(f"{label}: {count / (time.perf_counter() - start):,.1f} frames/s")

    # the models alone: one batch of real frames, explained over and over
    with localize.FrameReader(clip, prepare=loc.prepare) as reader:
        batch = []
        for f in reader:
            batch.append(f)
            if len(batch) == args.batch_size:
                break
    audio = localize.AudioWindows(localize.read_audio_track(clip), encoder.sample_rate, loc.window) if encoder else None
    images = [f.image for f in batch]

    def run_batch():
        for f, image in zip(batch, images):
            f.image = image
        loc.explain(batch, audio)

    run_batch()  # warm-up
    sync(device)
    todo = args.model_frames or n_frames
    start = time.perf_counter()
    done = 0
    while done < todo:
        run_batch()
        done += len(batch)
    sync(device)
    model_fps = done / (time.perf_counter() - start)
    print(f"model only (audio encoder + LeGrad, every frame explained): {model_fps:,.1f} frames/s")
    if args.stride > 1:
        print(f"  ... with --stride {args.stride}: {model_fps * args.stride:,.1f} frames/s of video")

    # end to end: decode, explain, overlay, encode H.264 + AAC, write
    result = loc.localize(clip, folder / "out")
    print(f"end to end: {result.frames / result.seconds:,.1f} frames/s "
          f"({result.frames} frames in {result.seconds:.1f} s) -> {result.output}")


if __name__ == "__main__":
    main()
