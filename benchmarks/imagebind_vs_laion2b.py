"""How far ImageBind's own image tower is from OpenCLIP ViT-H-14 ``laion2b_s32b_b79k``.

ImageBind says its image tower is that open_clip tower, frozen. This script loads both (ImageBind's
from ``imagebind_huge.pth`` via ``load_clip("ViT-H-14", "imagebind")``, see
``avlegrad/audio/imagebind_clip.py``) and reports, per weight tensor of the image tower, the largest
absolute difference, and, on images, the cosine between the two towers' embeddings and between
the two towers' LeGrad maps for the same target. Needs both weight files (nothing is downloaded
when they are cached); runs on the CPU in about a minute per image batch.

    python benchmarks/imagebind_vs_laion2b.py [--imagebind PATH] [--laion2b TAG_OR_FILE] \
        [--images DIR] [--out results.json]

Without ``--images``, 8 random images (uniform pixels, CLIP-normalised) are used.
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from avlegrad import LeGrad  # noqa: E402
from avlegrad.models import image_tensor, load_clip  # noqa: E402


def weight_differences(a, b) -> dict:
    """Largest |a - b| per image-tower tensor (names as open_clip's), and over all of them."""
    sa, sb = a.visual.state_dict(), b.visual.state_dict()
    diffs = {k: float((sa[k].float() - sb[k].float()).abs().max())
             for k in sa if k in sb and sa[k].shape == sb[k].shape}
    return {"max": max(diffs.values()), "per_tensor": diffs,
            "identical_tensors": sum(v == 0 for v in diffs.values()), "tensors": len(diffs)}


@torch.no_grad()
def embedding_agreement(a, b, images: torch.Tensor) -> dict:
    ea, eb = F.normalize(a.encode_image(images).float(), dim=-1), F.normalize(b.encode_image(images).float(), dim=-1)
    cos = (ea * eb).sum(-1)
    return {"cosine_mean": float(cos.mean()), "cosine_min": float(cos.min()),
            "max_abs_diff": float((ea - eb).abs().max())}


def map_agreement(a, b, images: torch.Tensor) -> dict:
    """LeGrad maps of both towers for the same target (tower a's own embedding of each image)."""
    with torch.no_grad():
        targets = a.encode_image(images).float()
    ma, mb = LeGrad(a)(images, targets), LeGrad(b)(images, targets)
    return {"legrad_map_max_abs_diff": float((ma - mb).abs().max()),
            "legrad_map_mean_abs_diff": float((ma - mb).abs().mean())}


def load_images(folder, cfg, n=8):
    if folder is None:
        rng = np.random.default_rng(0)
        frames = [rng.integers(0, 256, (cfg["size"][0], cfg["size"][1], 3), dtype=np.uint8) for _ in range(n)]
    else:
        from PIL import Image

        paths = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:n]
        frames = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
    return torch.stack([image_tensor(f, cfg) for f in frames])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--imagebind", default="imagebind", help="imagebind_huge.pth (default: the cached copy)")
    ap.add_argument("--laion2b", default="laion2b_s32b_b79k", help="open_clip tag or checkpoint file")
    ap.add_argument("--model", default="ViT-H-14")
    ap.add_argument("--images", default=None, help="a folder of jpg/png images (default: 8 random images)")
    ap.add_argument("--out", default=None, help="write the figures as JSON here")
    args = ap.parse_args(argv)
    try:
        with torch.no_grad():
            ib, cfg = load_clip(args.model, args.imagebind)
            laion, _ = load_clip(args.model, args.laion2b)
            images = load_images(args.images, cfg)
    except (OSError, RuntimeError, ValueError) as e:  # a weight file missing offline, or not the tower's
        raise SystemExit(f"imagebind_vs_laion2b: {e}") from None
    report = {"weights": weight_differences(ib, laion), "embeddings": embedding_agreement(ib, laion, images),
              "maps": map_agreement(ib, laion, images), "images": len(images)}
    w = report["weights"]
    print(f"image tower weights: max |diff| {w['max']:.3g} ({w['identical_tensors']}/{w['tensors']} tensors identical)")
    e = report["embeddings"]
    print(f"embeddings ({len(images)} images): cosine mean {e['cosine_mean']:.6f}, min {e['cosine_min']:.6f}")
    m = report["maps"]
    print(f"LeGrad maps: max |diff| {m['legrad_map_max_abs_diff']:.3g}, mean {m['legrad_map_mean_abs_diff']:.3g}")
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
