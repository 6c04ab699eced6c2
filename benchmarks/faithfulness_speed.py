"""Perturbation metrics batched (several steps of several images per forward) against one image
and one step per forward, in the same run, on the same maps; checks that both give the same AUCs.

    python benchmarks/faithfulness_speed.py                      # the offline world's CLIP (64 px), CPU
    python benchmarks/faithfulness_speed.py --model ViT-B-16 --images 8 --device cuda --dtype bf16
"""
from __future__ import annotations

import argparse
import platform
import time

import torch

from avlegrad import faithfulness as fa

DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def load_model(name: str, device):
    if name == "world":
        from avlegrad.world_clip import load_world_models

        model, cfg, _ = load_world_models(device=device)
        return model, cfg["size"][0]
    import open_clip

    model = open_clip.create_model(name, pretrained=None).to(device).eval()  # random weights
    return model, model.visual.image_size[0]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="world", help="'world' (the shipped tiny CLIP) or an open_clip name")
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--steps", type=int, default=20, help="deletion/insertion steps")
    ap.add_argument("--batch", type=int, default=256, help="perturbed images per forward (batched)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="fp32", choices=list(DTYPES))
    args = ap.parse_args(argv)

    device = torch.device(args.device)
    model, size = load_model(args.model, device)
    torch.manual_seed(0)
    images = torch.randn(args.images, 3, size, size, device=device)
    targets = torch.randn(args.images, model.visual.output_dim, device=device)
    maps = torch.rand(args.images, size, size, device=device)
    scorer = fa.ModelScorer(model)
    autocast = torch.autocast(device.type, dtype=DTYPES[args.dtype], enabled=DTYPES[args.dtype] is not None)

    def run(one_at_a_time: bool):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with autocast:
            if one_at_a_time:  # one image, one perturbation step per forward pass
                parts = [fa.perturbation_metrics(scorer, images[b:b + 1], targets[b:b + 1], maps[b:b + 1],
                                                 steps=args.steps, batch_size=1) for b in range(args.images)]
                out = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
            else:
                out = fa.perturbation_metrics(scorer, images, targets, maps, steps=args.steps,
                                              batch_size=args.batch)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return out, time.perf_counter() - start

    run(False)  # warm-up
    batched, batched_s = run(False)
    single, single_s = run(True)
    forwards = args.images * (2 * (args.steps + 1) + 2 * len(fa.CHEFER_FRACTIONS))
    diff = max((batched[k] - single[k]).abs().max().item() for k in batched)
    machine = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    print(f"# {args.model} {size}px, {args.images} images x {forwards // args.images} perturbed copies "
          f"(deletion, insertion: {args.steps} steps; positive, negative: 10), {args.dtype} on {machine}")
    print("| how | seconds | perturbed images/s |")
    print("|---|---|---|")
    print(f"| batched ({args.batch} per forward) | {batched_s:.2f} | {forwards / batched_s:,.0f} |")
    print(f"| one image, one step per forward | {single_s:.2f} | {forwards / single_s:,.0f} |")
    print(f"speed-up: {single_s / batched_s:.1f}x; max difference of the AUCs: {diff:.2e}")


if __name__ == "__main__":
    main()
