"""Both directions in a heatmap video, on a held-out world clip: the contact sheet of
``python -m avlegrad.localize CLIP --audio-encoder checkpoints/world/audio_vit.pt --audio-map --contact-sheet``
(each frame with the image-side LeGrad map of its sound, and under it the scrolling log-mel strip with
the audio-side LeGrad map of its window against the frame; README, "LeGrad on the sound").

    python scripts/localize_audio_map_figure.py --root runs/world/heldout --clip 3 \
        --out docs/localize_audio_map_example.png
"""
import argparse
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere, installed or not


def main(argv=None) -> int:
    from avlegrad import localize
    from avlegrad.eval.audio import AUDIO_VIT_FILE
    from avlegrad.data.datasets import create_dataset
    from avlegrad.data.synthetic import generate_synthetic
    from avlegrad.world_clip import WORLD_CHECKPOINTS

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default="runs/world/heldout",
                    help="the world's held-out clips (generated there with seed 0 and 500 clips if missing)")
    ap.add_argument("--clip", type=int, default=3, help="index of the clip in the dataset")
    ap.add_argument("--out", default="docs/localize_audio_map_example.png")
    a = ap.parse_args(argv)

    root = Path(a.root)
    if not (root / "synthetic.json").is_file():
        generate_synthetic(root, num_clips=500, seed=0)
    rec = create_dataset("synthetic", root, sample_rate=16000)[a.clip]
    video = root / "videos" / f"{rec.clip_id}.mp4"
    with tempfile.TemporaryDirectory() as tmp:
        code = localize.main([str(video), "-o", tmp, "--quiet", "--audio-encoder",
                              str(WORLD_CHECKPOINTS / AUDIO_VIT_FILE), "--audio-map", "--contact-sheet"])
        if code:
            return code
        out = Path(a.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(tmp) / f"{rec.clip_id}{localize.OUTPUT_SUFFIX}_sheet.png", out)
    print(f"wrote {out} ({rec.label}, {video.name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
