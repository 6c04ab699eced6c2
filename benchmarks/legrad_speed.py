"""LeGrad throughput against the per-image, per-layer reference and a plain forward pass.

All three are measured in the same run on the same randomly initialised model, so the ratios
mean something on a noisy shared machine. Example (one GPU):

    python benchmarks/legrad_speed.py --model ViT-B-16 --size 224 --batch 64 --dtype bf16 --device cuda
    python benchmarks/legrad_speed.py --model ViT-B-16 --size 224 --batch 8 --dtype fp32 --device cpu

The reference is the slow, obvious implementation of the tests (attention materialised, one
image at a time, one ``autograd.grad`` per layer); it runs in fp32 on ``--ref-images`` images and
its maps are compared with LeGrad's on the same images.
"""
from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from reference import reference_legrad  # noqa: E402  (the tests' reference, not a second copy)

from avlegrad import LeGrad  # noqa: E402

DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def timed(fn, device, repeats: int) -> float:
    """Seconds per call: one warm-up call, then the mean of ``repeats`` calls."""
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


def autocast(device, dtype):
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def speed_arguments(doc: str) -> argparse.ArgumentParser:
    """The options every speed benchmark takes: model, input size, batch, dtype, device, repeats."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--model", default="ViT-B-16", help="open_clip model name (random weights)")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=64)
    cuda = torch.cuda.is_available()
    ap.add_argument("--dtype", choices=DTYPES, default="bf16" if cuda else "fp32",
                    help="autocast dtype (default: bf16 on a GPU, fp32 on the CPU)")
    ap.add_argument("--device", default="cuda" if cuda else "cpu")
    ap.add_argument("--repeats", type=int, default=10)
    return ap


def speed_setup(args):
    """``(device, dtype, model, images, targets)`` for ``speed_arguments``' options: a randomly
    initialised open_clip model (seed 0), random images and random targets of its embedding width."""
    import open_clip

    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    torch.manual_seed(0)
    model = open_clip.create_model(args.model, pretrained=None, force_image_size=args.size).to(device).eval()
    images = torch.randn(args.batch, 3, args.size, args.size, device=device)
    targets = torch.randn(args.batch, model.visual.output_dim, device=device)
    return device, dtype, model, images, targets


def main(argv=None):
    ap = speed_arguments(__doc__)
    ap.add_argument("--layers", default="-2,0", help="layer_index values to measure (0 = all blocks)")
    ap.add_argument("--ref-images", type=int, default=4, help="images timed and compared with the reference")
    args = ap.parse_args(argv)

    device, dtype, model, images, targets = speed_setup(args)
    visual = model.visual

    def forward():
        with torch.no_grad(), autocast(device, dtype):
            visual(images)

    forward_s = timed(forward, device, args.repeats)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(f"# {args.model} {args.size}px batch {args.batch} {args.dtype} on {name} "
          f"(torch {torch.__version__}, {torch.get_num_threads()} threads)")
    print(f"forward only: {args.batch / forward_s:,.1f} images/s")
    print("| layers | LeGrad maps/s | reference maps/s | LeGrad / forward | LeGrad / reference "
          "| max |diff| vs reference |")
    print("|---|---|---|---|---|---|")
    for layer_index in (int(v) for v in args.layers.split(",")):
        explainer = LeGrad(model, layer_index=layer_index)

        def explain():
            with autocast(device, dtype):
                explainer(images, targets)

        legrad_s = timed(explain, device, args.repeats)
        n_ref = min(args.ref_images, args.batch)

        def reference():
            return torch.stack([reference_legrad(visual, images[i:i + 1], targets[i], layer_index)
                                for i in range(n_ref)])

        ref_s = timed(reference, device, 1) / n_ref
        with autocast(device, dtype):
            ours = explainer(images[:n_ref], targets[:n_ref])
        diff = (ours - reference()).abs().max().item()
        legrad_rate, ref_rate = args.batch / legrad_s, 1 / ref_s
        label = "all" if layer_index == 0 else str(layer_index)
        print(f"| {label} | {legrad_rate:,.1f} | {ref_rate:,.1f} | {legrad_rate * forward_s / args.batch:.0%} "
              f"| {legrad_rate / ref_rate:,.1f}x | {diff:.2e} |")


if __name__ == "__main__":
    main()
