"""Train the tiny CLIP of the procedural world (``avlegrad.world_clip``) on the CPU.

    python scripts/train_world_clip.py --out checkpoints/world          # the shipped tower
    python scripts/train_world_clip.py --out runs/world/clip --num-images 4000 --epochs 4   # a quick one

Writes OUT/clip.pt (state dict, fp16), OUT/clip_config.json (open_clip.CLIP arguments) and
OUT/clip_train.json (settings, timings, loss curve, held-out zero-shot accuracy).
See docs/world.md for the whole chain (CLIP -> train.py audio encoder -> eval.py).
"""
import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere, installed or not

from avlegrad.cli import run_command  # noqa: E402
from avlegrad.world_clip import train_world_clip  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--num-images", type=int, default=12000, help="training pictures (rendered once)")
    ap.add_argument("--epochs", type=float, default=6.0)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--warmup-steps", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--val-images", type=int, default=500)
    ap.add_argument("--workers", type=int, default=2, help="processes rendering the pictures")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--no-positions", action="store_true", help="captions name the objects only, not their places")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    report = train_world_clip(a.out, num_images=a.num_images, epochs=a.epochs, batch_size=a.batch_size, lr=a.lr,
                              weight_decay=a.weight_decay, warmup_steps=a.warmup_steps, seed=a.seed,
                              val_images=a.val_images, workers=a.workers, threads=a.threads,
                              positions=not a.no_positions)
    print(f"{a.out}: {report['steps']} steps, render {report['render_seconds']} s + train "
          f"{report['train_seconds']} s; held-out set accuracy {100 * report['val_set_accuracy']:.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main, name="train_world_clip.py",
                         interrupted="interrupted; the CLIP file is written only when training ends"))
