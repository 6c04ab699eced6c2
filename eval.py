"""``python eval.py ...``: the ``avlegrad-eval`` command (avlegrad/eval_cli.py), run from a checkout."""
import sys

from avlegrad.eval_cli import __doc__, main, parse_args  # noqa: F401  (tests and users call them here)
from avlegrad.eval.run import DEFAULT_AUDIO_ENCODER  # noqa: F401

if __name__ == "__main__":
    sys.exit(main())
