"""Audio-side LeGrad maps per second beside the audio encoder's forward pass, in the same run.

    python benchmarks/audio_legrad_speed.py                         # the world's audio ViT, 3 s clips, CPU
    python benchmarks/audio_legrad_speed.py --encoder imagebind     # ImageBind's tower (random weights), 5 s
    python benchmarks/audio_legrad_speed.py --encoder imagebind --device cuda --batch 16

Both measurements take the same waveforms; the forward pass is the encoder's own ``forward``
(front-end included) under ``no_grad``; a map is :meth:`AudioLeGrad.explain_waveforms` (front-end,
forward, one backward per target, placement on the waveform's axis). Reports the median of
``--repeats`` timed runs after one warm-up.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from avlegrad.explain.audio import AudioLeGrad  # noqa: E402


def load_encoder(name: str, device):
    if name == "world":
        from avlegrad.audio import create_audio_encoder
        from avlegrad.eval.audio import AUDIO_VIT_FILE
        from avlegrad.world_clip import WORLD_CHECKPOINTS

        path = WORLD_CHECKPOINTS / AUDIO_VIT_FILE
        if not path.is_file():
            raise SystemExit(f"{path} is missing (docs/world.md: train and package the audio ViT)")
        return create_audio_encoder(str(path), device=device).eval(), 3.0
    if name == "imagebind":
        from avlegrad.audio.imagebind import ImageBindAudioEncoder

        torch.manual_seed(0)
        return ImageBindAudioEncoder().to(device).eval(), 5.0  # imagebind_huge's layout, random weights
    raise SystemExit(f"--encoder must be world or imagebind, got {name!r}")


def timed(fn, device, repeats):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--encoder", default="world", help="world (the shipped audio ViT) or imagebind (random weights)")
    ap.add_argument("--batch", type=int, default=8, help="waveforms per call")
    ap.add_argument("--layer-index", type=int, default=-2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, help="torch threads (CPU)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    encoder, seconds = load_encoder(args.encoder, device)
    torch.manual_seed(1)
    waves = 0.1 * torch.randn(args.batch, int(seconds * encoder.sample_rate), device=device)
    with torch.no_grad():
        targets = torch.randn(args.batch, encoder.embed_dim, device=device)
    explainer = AudioLeGrad(encoder, layer_index=args.layer_index)

    def forward():
        with torch.no_grad():
            encoder(waves)

    t_fwd = timed(forward, device, args.repeats)
    t_map = timed(lambda: explainer.explain_waveforms(waves, targets), device, args.repeats)
    print(f"{args.encoder} audio encoder, {args.batch} waveforms of {seconds:g} s, layer_index {args.layer_index} "
          f"({len(explainer.layer_ids)} of {explainer.adapter.num_layers} blocks), {device.type}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}, {platform.processor() or platform.machine()}")
    print(f"forward pass (embeddings):  {args.batch / t_fwd:9.1f} waveforms/s")
    print(f"audio-side LeGrad maps:     {args.batch / t_map:9.1f} maps/s  ({t_map / t_fwd:.1f}x the forward's time)")


if __name__ == "__main__":
    main()
