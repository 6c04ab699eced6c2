"""Maps/s of every explainer on the same model, batch and dtype, beside a plain forward pass.

    python benchmarks/explainers_speed.py --model ViT-B-16 --batch 64 --dtype bf16 --device cuda
    python benchmarks/explainers_speed.py --model ViT-B-16 --batch 4 --dtype fp32 --device cpu --repeats 2

With ``--families``: LeGrad maps/s on one base-size model of every supported family (random
weights, nothing downloaded), each beside that model's own forward pass:

    python benchmarks/explainers_speed.py --families --batch 2 --repeats 2 --device cpu
"""
from __future__ import annotations


import torch

from avlegrad.explain import create_explainer, list_explainers
from legrad_speed import DTYPES, autocast, speed_arguments, speed_setup, timed


def family_models(size: int):
    """``{family: (model, forward)}``: one base-size random-weight model per family (ViT-B
    widths; CoCa and transformers' CLIP at patch 32, as their base configs), ``forward(images)``
    its own image forward. Families whose library is missing are left out."""
    import open_clip
    import timm

    def clip(name, **kw):
        torch.manual_seed(0)
        return open_clip.create_model(name, pretrained=None, **kw).visual.eval()

    models = {
        "open_clip ViT-B-16": clip("ViT-B-16", force_image_size=size),
        "open_clip SigLIP ViT-B-16-SigLIP": clip("ViT-B-16-SigLIP"),
        "open_clip EVA02-B-16 (RoPE)": clip("EVA02-B-16"),
        "open_clip PE-Core-B-16 (RoPE, attention pool)": clip("PE-Core-B-16"),
        "open_clip coca_ViT-B-32 (attentional pooler)": clip("coca_ViT-B-32"),
        "timm vit_base_patch16_224 (classifier)": timm.create_model("vit_base_patch16_224").eval(),
    }
    try:
        import transformers

        models["transformers CLIPVisionModelWithProjection (B/32)"] = transformers.CLIPVisionModelWithProjection(
            transformers.CLIPVisionConfig()).eval()
        models["transformers SiglipVisionModel (B/16)"] = transformers.SiglipVisionModel(
            transformers.SiglipVisionConfig()).eval()
    except ImportError:
        pass
    try:
        import torchvision

        models["torchvision vit_b_16 (classifier)"] = torchvision.models.vit_b_16().eval()
    except ImportError:
        pass
    return models


def families(args):
    from avlegrad import LeGrad
    from avlegrad.explain.vit import UnsupportedModelError

    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    print(f"# LeGrad per family, {args.size}px batch {args.batch} {args.dtype} on {device} (random weights)")
    print("| family | forward images/s | LeGrad maps/s | LeGrad / forward |")
    print("|---|---|---|---|")
    for name, model in family_models(args.size).items():
        model = model.to(device)
        try:
            explainer = LeGrad(model)
        except UnsupportedModelError as e:
            print(f"| {name} | | not supported: {str(e).split('. Supported')[0]} | |")
            continue
        vit = explainer.vit
        side = args.size - args.size % vit.patch_size[0]
        images = torch.randn(args.batch, 3, side, side, device=device)
        targets = (torch.randn(args.batch, vit.embed_dim, device=device) if vit.num_classes is None
                   else torch.randint(0, vit.num_classes, (args.batch,), device=device))

        def forward():
            with torch.no_grad(), autocast(device, dtype):
                _own_forward(model, images)

        def explain():
            with autocast(device, dtype):
                explainer(images, targets)

        forward_s = timed(forward, device, args.repeats)
        legrad_s = timed(explain, device, args.repeats)
        print(f"| {name} | {args.batch / forward_s:,.1f} | {args.batch / legrad_s:,.1f} | {forward_s / legrad_s:.0%} |")


def _own_forward(model, images):
    """The model's own image forward (what a user would time)."""
    if hasattr(model, "get_image_features"):
        return model.get_image_features(pixel_values=images)
    if type(model).__module__.startswith("transformers."):
        return model(pixel_values=images)
    return model(images)


def main(argv=None):
    ap = speed_arguments(__doc__)
    ap.add_argument("--methods", default=",".join(list_explainers()))
    ap.add_argument("--families", action="store_true", help="LeGrad on one model of every supported family")
    args = ap.parse_args(argv)
    if args.families:
        return families(args)

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
