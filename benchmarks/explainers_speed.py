"""Maps/s of every explainer on the same model, batch and dtype, beside a plain forward pass.

    python benchmarks/explainers_speed.py --model ViT-B-16 --batch 64 --dtype bf16 --device cuda
    python benchmarks/explainers_speed.py --model ViT-B-16 --batch 4 --dtype fp32 --device cpu --repeats 2

With ``--families``: LeGrad maps/s on one base-size model of every supported family (random
weights, nothing downloaded), each beside that model's own forward pass:

    python benchmarks/explainers_speed.py --families --batch 2 --repeats 2 --device cpu
    python benchmarks/explainers_speed.py --families --only PE-AV --frames 8 --batch 1 --device cpu
"""
from __future__ import annotations

import logging

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
        logging.disable(logging.WARNING)  # open_clip's "no pretrained weights" per model: the table says so once
        try:
            return open_clip.create_model(name, pretrained=None, **kw).visual.eval()
        finally:
            logging.disable(logging.NOTSET)

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
        models[PE_AV] = pe_av_video_branch()
    except ImportError:
        pass
    try:
        import torchvision

        models["torchvision vit_b_16 (classifier)"] = torchvision.models.vit_b_16().eval()
    except ImportError:
        pass
    return models


PE_AV = "transformers PE-AV frame tower (PE-Core B/16, one-frame video)"


def pe_av_video_branch():
    """PE-AV's video branch (``PeVideoModel``) with a base-size frame tower (``vit_pe_core_base_patch16_224``
    structure) and the default temporal encoder; the text model, unused here, is kept tiny."""
    from avlegrad.audio.pe_av import build_random_model, tiny_config

    vision = dict(architecture="vit_pe_core_base_patch16_224", num_labels=1024, global_pool="map", do_pooling=True)
    config = dict(text_config=tiny_config()["text_config"], audio_video_config=dict(
        audio_config=tiny_config()["audio_video_config"]["audio_config"], video_config=dict(vision_config=vision)))
    return build_random_model(config).video_model


def families(args):
    from avlegrad import LeGrad
    from avlegrad.explain.vit import UnsupportedModelError

    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    print(f"# LeGrad per family, {args.size}px batch {args.batch} {args.dtype} on {device} (random weights)")
    print("| family | forward images/s | LeGrad maps/s | LeGrad / forward |")
    print("|---|---|---|---|")
    for name, model in family_models(args.size).items():
        if args.only and args.only.lower() not in name.lower():
            continue
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
        if name == PE_AV and args.frames:
            video_row(model, images, targets, args, device, dtype)


def video_row(model, images, targets, args, device, dtype):
    """PE-AV frames x patches: ``legrad_video`` on ``--frames`` frames per video beside the video
    forward; figures per frame (frames/s and maps/s, one map per frame)."""
    from avlegrad.explain import legrad_video
    from avlegrad.explain.adapters.pe_av import own_video_embeds

    videos = images[:, None].expand(-1, args.frames, -1, -1, -1).contiguous()

    def forward():
        with torch.no_grad(), autocast(device, dtype):
            own_video_embeds(model, videos)

    def explain():
        with autocast(device, dtype):
            legrad_video(model, videos, targets)

    forward_s, legrad_s = timed(forward, device, args.repeats), timed(explain, device, args.repeats)
    n = args.batch * args.frames
    print(f"| PE-AV frames x patches ({args.frames} frames per video; per frame) | {n / forward_s:,.1f} | "
          f"{n / legrad_s:,.1f} | {forward_s / legrad_s:.0%} |")


def _own_forward(model, images):
    """The model's own image forward (what a user would time)."""
    if type(model).__name__ == "PeVideoModel":  # transformers has no working video-only call (adapters/pe_av.py)
        from avlegrad.explain.adapters.pe_av import own_video_embeds

        return own_video_embeds(model, images[:, None])
    if hasattr(model, "get_image_features"):
        return model.get_image_features(pixel_values=images)
    if type(model).__module__.startswith("transformers."):
        return model(pixel_values=images)
    return model(images)


def main(argv=None):
    ap = speed_arguments(__doc__)
    ap.add_argument("--methods", default=",".join(list_explainers()))
    ap.add_argument("--families", action="store_true", help="LeGrad on one model of every supported family")
    ap.add_argument("--only", default="", help="with --families: only the families whose name holds this text")
    ap.add_argument("--frames", type=int, default=8, help="with --families: PE-AV's frames x patches row, "
                    "frames per video (0: none)")
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
