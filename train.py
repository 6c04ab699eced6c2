"""``python train.py ...``: the ``avlegrad-train`` command (avlegrad/train/cli.py), run from a checkout."""
import sys

from avlegrad.train.cli import __doc__, cli, main  # noqa: F401  (tests and users call them here)

if __name__ == "__main__":
    sys.exit(cli())
