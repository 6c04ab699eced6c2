"""Both directions on held-out world clips: the frame with the image-side LeGrad map of its sound, and
the log-mel with the audio-side LeGrad map of its frame, the object's T-F mask outlined and the
per-frame relevance beside the object's activity (docs/world.md, "LeGrad on the sound").

    python scripts/audio_legrad_figure.py --root runs/world/heldout --clips 3,5,21 --out docs/audio_legrad_example.png
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere, installed or not

import numpy as np  # noqa: E402
import torch  # noqa: E402


def main(argv=None) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from avlegrad.audio import create_audio_encoder
    from avlegrad.eval.audio import AUDIO_VIT_FILE
    from avlegrad.data.datasets import create_dataset
    from avlegrad.data.synthetic import audio_truth, ensure_synthetic
    from avlegrad.explain.audio import explain_both
    from avlegrad.models import image_tensor
    from avlegrad.visualize import draw_boxes, overlay
    from avlegrad.world_clip import WORLD_CHECKPOINTS, load_world_models

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default="datasets/synthetic")
    ap.add_argument("--clips", default="0,1,2", help="indices of the clips (rows), comma-separated")
    ap.add_argument("--out", default="docs/audio_legrad_example.png")
    a = ap.parse_args(argv)

    root = ensure_synthetic(a.root)
    clip, cfg, _ = load_world_models()
    enc = create_audio_encoder(str(WORLD_CHECKPOINTS / AUDIO_VIT_FILE)).eval()
    dataset = create_dataset("synthetic", root, sample_rate=enc.sample_rate)
    rows = [dataset[int(i)] for i in a.clips.split(",")]
    fig, axes = plt.subplots(len(rows), 3, figsize=(13, 3.0 * len(rows)), gridspec_kw={"width_ratios": [1, 2.4, 2.4]},
                             squeeze=False)
    for r, rec in enumerate(rows):
        image = image_tensor(rec.frame, cfg)[None]
        wave = torch.from_numpy(np.ascontiguousarray(rec.waveform))[None]
        image_maps, audio = explain_both(clip, enc, image, wave)
        mask, active = audio_truth(root, [rec.clip_id], enc.frontend)[rec.clip_id]
        h, w = rec.frame.shape[:2]
        heat = torch.nn.functional.interpolate(image_maps[:, None], size=(h, w), mode="bilinear")[0, 0].numpy()
        x0, y0, x1, y1 = rec.boxes[0]
        picture = draw_boxes(overlay(rec.frame, heat), [[x0 * w, y0 * h, x1 * w, y1 * h]])
        axes[r, 0].imshow(picture)
        axes[r, 0].set_title(f"{rec.label}: where is the sound?", fontsize=9)
        log_mel = enc.frontend(wave)[0, 0].numpy()
        t = audio.times.numpy()
        extent = (t[0], t[-1], 0, log_mel.shape[0])
        axes[r, 1].imshow(log_mel, origin="lower", aspect="auto", cmap="magma", extent=extent)
        axes[r, 1].contour(t, np.arange(mask.shape[0]) + 0.5, mask, levels=[0.5], colors="cyan", linewidths=0.6)
        axes[r, 1].set_title("log-mel; the object's T-F mask in cyan", fontsize=9)
        axes[r, 2].imshow(audio.maps[0].numpy(), origin="lower", aspect="auto", cmap="jet", extent=extent)
        axes[r, 2].contour(t, np.arange(mask.shape[0]) + 0.5, mask, levels=[0.5], colors="white", linewidths=0.6)
        twin = axes[r, 2].twinx()
        twin.plot(t, audio.curve[0].numpy(), color="white", linewidth=1.2)
        twin.fill_between(t, 0, active.astype(float) * 0.08, color="lime", step="mid")
        twin.set_ylim(0, 1.05)
        twin.set_yticks([])
        axes[r, 2].set_title("audio-side LeGrad of the frame (curve: per frame; green: object active)",
                             fontsize=9)
        for ax in axes[r, 1:]:
            ax.set_ylabel("mel band")
        axes[r, 0].axis("off")
    for ax in axes[-1, 1:]:
        ax.set_xlabel("seconds")
    fig.tight_layout()
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
