"""Peak memory of ``python -m avlegrad.localize`` on a short and a longer video: it must not grow with length.

Two videos are generated, ``--seconds`` long and ``--factor`` times longer (default 60 s and 240 s),
with sound as YouTube serves it (48 kHz stereo AAC) and small frames (64x48, 10 fps), so the audio
track is what grows with the video. Each is localized by the command in a fresh child process
(the offline world's trained audio encoder and its CLIP tower, on the CPU); the child's peak
resident memory is its RSS high-water mark (``VmHWM`` of ``/proc/self/status``, read by the child
as it exits; Linux only). Printed: both peaks,
their ratio (goal <= 1.25) and the growth per minute of video.

    python benchmarks/localize_memory.py
    python benchmarks/localize_memory.py --seconds 20 --factor 4 --sample-rate 44100
    python benchmarks/localize_memory.py --code /path/to/another/checkout   # the same, another version's code
    python benchmarks/localize_memory.py --audio-encoder checkpoints/world/audio_vit.pt --audio-map   # with the strip

Exit code 1 when the ratio is above ``--goal``.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from avlegrad.data.media import write_video  # noqa: E402


def make_video(path: Path, seconds: float, fps: int, width: int, height: int, sample_rate: int, channels: int):
    """A moving box over a gradient, and a chord with a little noise (AAC has something to code)."""
    n = int(round(seconds * fps))
    y, x = np.mgrid[0:height, 0:width]
    background = np.stack([40 + 100 * x / width, 60 + 80 * y / height, np.full_like(x, 90.0)], -1).astype(np.uint8)

    def frames():
        for i in range(n):
            f = background.copy()
            left = int((width - 16) * (i % (4 * fps)) / (4 * fps))
            f[height // 3:height // 3 + 16, left:left + 16] = (230, 180, 40)
            yield f

    rng = np.random.default_rng(0)
    t = np.arange(int(round(seconds * sample_rate))) / sample_rate
    tracks = [0.2 * np.sin(2 * np.pi * f0 * t) + 0.02 * rng.standard_normal(len(t)) for f0 in (440, 660)[:channels]]
    write_video(path, frames(), fps, audio=np.stack(tracks, 1).astype(np.float32), sample_rate=sample_rate)


# Runs the command in the child and reports the child's own peak RSS (VmHWM) as it exits. ru_maxrss
# from wait4/RUSAGE_CHILDREN would not do: exec carries the parent's high-water mark over into it.
CHILD = """
import runpy, sys
try:
    runpy.run_module("avlegrad.localize", run_name="__main__")
finally:
    hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0].split()[1]
    print("PEAK_KB", hwm, file=sys.stderr)
"""


def peak_rss(args: list[str], cwd: Path, env: dict) -> tuple[float, float]:
    """(peak RSS in MiB, wall seconds) of ``python -m avlegrad.localize ARGS`` in a child process."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", CHILD, *args], cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - start
    peaks = [line.split()[1] for line in done.stderr.splitlines() if line.startswith("PEAK_KB ")]
    if done.returncode or not peaks:
        sys.exit(f"localize failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
    return int(peaks[-1]) / 1024, wall


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="length of the short video (default 60)")
    ap.add_argument("--factor", type=float, default=4.0, help="the long video is this many times longer (default 4)")
    ap.add_argument("--fps", type=int, default=10)
    ap.add_argument("--size", default="64x48", help="frame WxH (default 64x48: audio dominates the growth)")
    ap.add_argument("--sample-rate", type=int, default=48000)
    ap.add_argument("--channels", type=int, default=2, choices=(1, 2))
    ap.add_argument("--audio-encoder", default=str(ROOT / "checkpoints" / "world" / "audio.pt"))
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--audio-map", action="store_true", help="localize with --audio-map (needs an audio ViT encoder)")
    ap.add_argument("--code", type=Path, default=ROOT, help="checkout whose avlegrad the child runs (default: this one)")
    ap.add_argument("--goal", type=float, default=1.25)
    args = ap.parse_args(argv)
    width, height = map(int, args.size.lower().split("x"))

    env = dict(os.environ, PYTHONPATH=str(args.code.resolve()), OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    print(f"# localize peak memory: {args.size} {args.fps} fps, {args.sample_rate} Hz "
          f"{'stereo' if args.channels == 2 else 'mono'} AAC; audio encoder {Path(args.audio_encoder).name}, "
          f"batch {args.batch_size}{', --audio-map' if args.audio_map else ''}, CPU; "
          f"code from {args.code.resolve()}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seconds in (args.seconds, args.seconds * args.factor):
            video = Path(tmp) / f"clip_{seconds:g}s.mp4"
            make_video(video, seconds, args.fps, width, height, args.sample_rate, args.channels)
            command = [str(video), "-o", str(Path(tmp) / "out"), "--audio-encoder", args.audio_encoder,
                       "--device", "cpu", "--batch-size", str(args.batch_size), "--quiet"]
            command += ["--audio-map"] if args.audio_map else []
            peak, wall = peak_rss(command, args.code, env)
            rows.append((seconds, peak, wall))
            print(f"{seconds:7.1f} s video ({video.stat().st_size / 2**20:5.1f} MiB file): peak RSS {peak:8.1f} MiB"
                  f"  ({wall:.1f} s)", flush=True)
    (s0, p0, _), (s1, p1, _) = rows
    ratio = p1 / p0
    per_minute = (p1 - p0) / ((s1 - s0) / 60)
    print(f"ratio long / short: {ratio:.3f} (goal <= {args.goal}); growth {per_minute:+.1f} MiB per minute of video")
    return 0 if ratio <= args.goal else 1


if __name__ == "__main__":
    sys.exit(main())
