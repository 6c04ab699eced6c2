"""Maps/s of every explainer on the same model, batch and dtype, beside a plain forward pass.

    python benchmarks/explainers_speed.py --model ViT-B-16 --batch 64 --dtype bf16 --device cuda
    python benchmarks/explainers_speed.py --model ViT-B-16 --batch 4 --dtype fp32 --device cpu --repeats 2
"""
from __future__ import annotations


import torch

from avlegrad.explain import create_explainer, list_explainers
from legrad_speed import autocast, speed_arguments, speed_setup, timed


def main(argv=None):
    ap = speed_arguments(__doc__)
    ap.add_argument("--methods", default=",".join(list_explainers()))
    args = ap.parse_args(argv)

    device, dtype, model, images, targets = speed_setup(args)

    def forward():
        with torch.no_grad(), autocast(device, dtype):
            model.visual(images)

    forward_s = timed(forward, device, args.repeats)
    print(f"# {args.model} {args.size}px batch {args.batch} {args.dtype} on {device}")
    print(f"| method | maps/s | vs forward ({args.batch / forward_s:,.1f} images/s) |")
    print("|---|---|---|")
    for name in args.methods.split(","):
        explainer = create_explainer(name, model)

        def explain():
            with autocast(device, dtype):
                explainer(images, targets)

        seconds = timed(explain, device, args.repeats)
        print(f"| {name} | {args.batch / seconds:,.1f} | {forward_s / seconds:.0%} |")


if __name__ == "__main__":
    main()
