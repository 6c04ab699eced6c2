"""Where audio-side LeGrad's relevance goes, patch by patch, on the world's mixtures: the object's
patches, the other (off-screen) sound's, and silence (background noise only). Reproduces the
measurements behind docs/world.md, "Why silence".

For one explained block of the world's audio ViT (default the last) and each clip's frame embedding as
the target, every patch token j gets, per head h, LeGrad's raw cell ``dS/dA[h, cls, j] = g_h . v_hj``
(``g_h`` the score's gradient at the class token's attention output; the gradient reaches the scores
through the class token only, since the encoder pools it). The script reports, per region: the share of
(head, patch) pairs where that gradient is positive, the mean of its ReLU over heads (LeGrad's cell
before the sum over blocks and the min-max), and the class token's attention to the region's patches as
a multiple of a uniform share (1 = uniform). A patch is the object's where the object's T-F mask covers
more than half its bins; silence where no frame of its columns has the object or the other sound
heard; the other sound's where every frame of its columns has only the other sound heard; other
patches (mixed) are not counted. Needs non-overlapping patches (the world's ViT).

    python scripts/audio_relevance_by_region.py --root runs/world/heldout --limit 60
    python scripts/audio_relevance_by_region.py --root runs/world/val120 --audio-encoder runs/world/mix/checkpoints/final.pt
"""
import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere, installed or not

import numpy as np  # noqa: E402
import torch  # noqa: E402

REGIONS = ("object", "other sound", "silence")


def patch_regions(mask: np.ndarray, active: np.ndarray, other: np.ndarray, patch: tuple, grid: tuple) -> np.ndarray:
    """The region of each patch of a ``grid`` ``(gh, gw)`` of non-overlapping ``patch`` ``(bands, frames)``
    cells, as indices into :data:`REGIONS` (-1: mixed, or padding beyond the clip's frames).
    ``mask`` ``[F, T]`` the object's T-F mask; ``active`` / ``other`` ``[T]`` the frames where the
    object / the other sound is heard."""
    (pb, pf), (gh, gw) = patch, grid
    frames = active.shape[0]
    out = np.full((gh, gw), -1, dtype=np.int64)
    for c in range(gw):
        cols = slice(c * pf, min(frames, (c + 1) * pf))
        if c * pf >= frames:
            continue
        heard, other_only = active[cols], other[cols] & ~active[cols]
        for r in range(gh):
            if mask[r * pb:(r + 1) * pb, cols].mean() > 0.5:
                out[r, c] = 0
            elif other_only.all():
                out[r, c] = 1
            elif not heard.any() and not other[cols].any():
                out[r, c] = 2
    return out


def block_cells(explainer, waveform: torch.Tensor, target: torch.Tensor, block_index: int):
    """One block's raw LeGrad cells of one waveform ``[1, T]`` against a unit ``target`` ``[1, E]``:
    (``dS/dA`` at the class token's row ``[heads, gh, gw]``, the class token's attention to the patches
    ``[heads, gh, gw]``, the layout). The pieces are AudioLeGrad's own (its adapter)."""
    from avlegrad.explain.audio import attention_probs

    ad = explainer.adapter
    with torch.no_grad():
        specs, _, _ = ad.clips(waveform)
        if specs.shape[1] != 1:  # the regions are read on one window covering the clip
            raise ValueError(f"the encoder cuts this waveform into {specs.shape[1]} windows; the regions need one")
        x, layout = ad.embed(specs.flatten(0, 1))
        for block in ad.blocks[:block_index]:
            x = ad.block_forward(block, x)
    block = ad.blocks[block_index]
    with torch.enable_grad():
        q, k, v = ad.qkv(block, x)
        probs = attention_probs(q, k).detach().requires_grad_(True)
        out = ad.finish_block(block, x, probs @ v)
        emb = ad.combine(ad.clip_embedding(out).float()[:, None])
        score = torch.nn.functional.cosine_similarity(emb, target.to(emb)).sum()
        grad, = torch.autograd.grad(score, probs)
    gh, gw = layout.grid
    patches = slice(ad.prefix, ad.prefix + gh * gw)
    cells = grad[0, :, 0, patches].reshape(-1, gh, gw)
    attention = probs[0, :, 0, patches].detach().reshape(-1, gh, gw)
    return cells, attention, layout


def main(argv=None) -> int:
    from tqdm import tqdm

    from avlegrad.audio import create_audio_encoder
    from avlegrad.data.datasets import create_dataset
    from avlegrad.data.media import load_audio
    from avlegrad.data.synthetic import MIXTURE_DIR, audio_truth, ensure_audio_mixture
    from avlegrad.eval.audio import AUDIO_VIT_FILE
    from avlegrad.explain.adapters import image_embedding
    from avlegrad.explain.audio import AudioLeGrad
    from avlegrad.models import image_tensor
    from avlegrad.world_clip import WORLD_CHECKPOINTS, load_world_models

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default="datasets/synthetic", help="a synthetic set (its audio-mixture split is made if missing)")
    ap.add_argument("--audio-encoder", default=str(WORLD_CHECKPOINTS / AUDIO_VIT_FILE), help="an audio ViT checkpoint")
    ap.add_argument("--block", type=int, default=-1, help="the explained block (default -1: the last)")
    ap.add_argument("--limit", type=int, default=None, help="the first N clips")
    ap.add_argument("--out", default=None, help="write the figures here as JSON")
    a = ap.parse_args(argv)

    if a.limit is not None and a.limit < 1:
        raise SystemExit(f"--limit must be at least 1, got {a.limit}")
    try:
        enc = create_audio_encoder(a.audio_encoder).eval()
        explainer = AudioLeGrad(enc)
    except (ValueError, OSError) as e:  # a missing or foreign checkpoint, an encoder that is no audio ViT
        raise SystemExit(f"--audio-encoder {a.audio_encoder}: {e}") from None
    if explainer.adapter.patch_frames is None:
        raise SystemExit(f"{a.audio_encoder}: its patches overlap in time; regions need non-overlapping patches")
    root = ensure_audio_mixture(a.root)
    clip_model, preprocess_cfg, _ = load_world_models()
    blocks = explainer.adapter.num_layers
    if not -blocks <= a.block < blocks:
        raise SystemExit(f"--block {a.block}: this encoder has {blocks} blocks")
    dataset = create_dataset("synthetic", root, sample_rate=enc.sample_rate, limit=a.limit)
    gathered = {r: {"positive": [], "relu": [], "attention": []} for r in REGIONS}
    clips = 0
    for i in tqdm(range(len(dataset)), desc="relevance by region"):
        item = dataset[i]
        if not hasattr(item, "waveform"):
            print(f"skipped {item.clip_id}: {item.reason}")
            continue
        wave, _ = load_audio(Path(root) / MIXTURE_DIR / f"{item.clip_id}.wav", enc.sample_rate)
        mask, active, other = audio_truth(root, [item.clip_id], enc.frontend, split="audio-mixture",
                                          distractor=True)[item.clip_id]
        with torch.no_grad():
            target = torch.nn.functional.normalize(
                image_embedding(clip_model, image_tensor(item.frame, preprocess_cfg)[None]).float(), dim=-1)
        cells, attention, layout = block_cells(explainer, torch.from_numpy(np.ascontiguousarray(wave))[None],
                                               target, a.block % blocks)
        regions = patch_regions(mask, active, other, tuple(layout.kernel), tuple(layout.grid))
        patches = int(np.prod(layout.grid))
        for r, name in enumerate(REGIONS):
            where = torch.from_numpy(regions == r)
            if not where.any():
                continue
            c = cells[:, where]  # [heads, n]
            gathered[name]["positive"].append((c > 0).float().flatten().numpy())
            gathered[name]["relu"].append(c.clamp(min=0).mean(0).numpy())
            gathered[name]["attention"].append((attention[:, where] * patches).flatten().numpy())
        clips += 1
    summary = {"clips": clips, "block": a.block % blocks, "encoder": a.audio_encoder, "regions": {}}
    print(f"{clips} clips, block {a.block % blocks}; per region: patches, share of (head, patch) with dS/dA > 0, "
          f"mean ReLU(dS/dA) over heads (x1000), class-token attention (x uniform)")
    for name, g in gathered.items():
        if not g["relu"]:
            continue
        row = {"patches": int(sum(len(x) for x in g["relu"])),
               "positive_share": float(np.concatenate(g["positive"]).mean()),
               "mean_relu": float(np.concatenate(g["relu"]).mean()),
               "attention_x_uniform": float(np.concatenate(g["attention"]).mean())}
        summary["regions"][name] = row
        print(f"{name:12s} {row['patches']:7d} {row['positive_share']:8.2f} {1000 * row['mean_relu']:9.3f} "
              f"{row['attention_x_uniform']:8.2f}")
    if a.out:
        from avlegrad.fileio import write_text_atomic

        write_text_atomic(a.out, json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
