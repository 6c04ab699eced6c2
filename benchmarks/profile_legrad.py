"""Where LeGrad's time goes on a GPU: the top CUDA kernels of one batched call (torch.profiler).

    python benchmarks/profile_legrad.py --model ViT-B-16 --batch 64 --dtype bf16 --layer-index 0
"""
from __future__ import annotations

import torch
from torch.profiler import ProfilerActivity, profile

from avlegrad import LeGrad
from legrad_speed import autocast, speed_arguments, speed_setup


def main(argv=None):
    ap = speed_arguments(__doc__)
    ap.add_argument("--layer-index", type=int, default=0)
    ap.add_argument("--rows", type=int, default=20)
    args = ap.parse_args(argv)

    device, dtype, model, images, targets = speed_setup(args)
    explainer = LeGrad(model, layer_index=args.layer_index)

    def explain():
        with autocast(device, dtype):
            explainer(images, targets)

    explain()  # warm-up
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(args.repeats):
            explain()
        if device.type == "cuda":
            torch.cuda.synchronize()
    sort = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
    print(f"# {args.model} {args.size}px batch {args.batch} {args.dtype} layer_index {args.layer_index}, "
          f"{args.repeats} calls")
    print(prof.key_averages().table(sort_by=sort, row_limit=args.rows))


if __name__ == "__main__":
    main()
