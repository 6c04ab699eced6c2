"""Package an audio-encoder checkpoint so it travels with its CLIP file (docs/world.md).

    python scripts/package_world_audio.py runs/world/audio/checkpoints/final.pt checkpoints/world/audio.pt
    python scripts/package_world_audio.py --untrained configs/world_audio.yaml runs/world/untrained.pt

The first form copies a train.py checkpoint as an encoder-only file whose stored CLIP weights path
is relative to the file's own folder ("clip.pt" beside checkpoints/world/audio.pt), which eval.py
resolves there: the pair works on any clone, from any directory. --untrained writes, in the same
form, the encoder of a train.py config at its initialisation (the control: a run's step 0).
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere, installed or not

from avlegrad.cli import run_command  # noqa: E402
from avlegrad.world_clip import package_audio_checkpoint, save_untrained_audio_encoder  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("source", help="a train.py checkpoint (final.pt, best.pt, last.pt); with --untrained, its config")
    ap.add_argument("dest", help="the packaged checkpoint to write")
    ap.add_argument("--clip", help="the CLIP weights file as it lies now (default: the path stored in the checkpoint)")
    ap.add_argument("--untrained", action="store_true", help="SOURCE is a train.py config: package its initial encoder")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="with --untrained: config overrides")
    a = ap.parse_args(argv)
    if a.untrained:
        dest = save_untrained_audio_encoder(a.source, a.dest, a.set, clip_file=a.clip)
    else:
        dest = package_audio_checkpoint(a.source, a.dest, a.clip)
    print(f"wrote {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main, name="package_world_audio.py", interrupted="interrupted; nothing was written"))
