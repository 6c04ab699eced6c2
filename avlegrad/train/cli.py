#!/usr/bin/env python
"""Train an audio encoder into a frozen CLIP image space (``train.py``, the ``avlegrad-train`` command).

    python train.py --config configs/tiny_cpu.yaml
    python train.py --config configs/audio_resnet18_vggsound.yaml --set train.lr=5e-4 --set data.num_workers=16
    python train.py --config configs/audio_resnet18_vggsound.yaml --resume     # continue from checkpoints/last.pt
    torchrun --nproc_per_node 4 train.py --config configs/audio_resnet18_vggsound.yaml

The config keys and their meaning: avlegrad/train/config.py (DEFAULTS) and docs/training.md.
"""
import argparse
import logging
import os
import sys

from ..cli import add_import_flag, flag_wording, import_extensions, parser_flags
from ..download import DownloadError
from ..models import WeightsUnavailableError
from .model import NonFiniteError
from .trainer import StoppedWithRank0, TrainingInterrupted, run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML run config (see configs/)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set train.epochs=5 (repeatable)")
    parser.add_argument("--resume", nargs="?", const="auto", default=None, metavar="CHECKPOINT",
                        help="continue a run: from CHECKPOINT, or without a value from "
                             "<output_dir>/checkpoints/last.pt (a new run if there is none); the checkpoint's "
                             "config is used, --set still applies")
    parser.add_argument("--overwrite", action="store_true",
                        help="start a new run in an output_dir that holds another one, deleting its checkpoints "
                             "and logs (without it, such a folder is refused)")
    add_import_flag(parser)
    return parser


def flags() -> dict[str, str]:
    """The library's argument names (``run``'s) and their flags; ``overrides`` is ``--set``."""
    return {**parser_flags(build_parser()), "overrides": "--set"}


class _FlagWording(logging.Filter):
    """Library log lines (e.g. "`resume`: no checkpoint ...") in the command line's words."""

    def __init__(self):
        super().__init__()
        self.flags = flags()

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = flag_wording(record.getMessage(), self.flags)
        record.args = None
        return True


def main(argv=None):
    problem = import_extensions(argv)  # e.g. the module registering the config's audio encoder
    if problem:
        raise ValueError(problem)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.config is None and args.resume in (None, "auto"):
        parser.error("give --config FILE (or --resume CHECKPOINT)")
    wording = _FlagWording()
    log = logging.getLogger("avlegrad.train.trainer")  # where run's warnings are logged (a filter is per logger)
    log.addFilter(wording)
    try:
        summary = run(args.config, args.set, args.resume, overwrite=args.overwrite)
    finally:
        log.removeFilter(wording)
    if summary["rank"] == 0:
        print(f"step {summary['step']}: checkpoint {summary['checkpoint']}")
    return summary


def cli(argv=None) -> int:
    """``main`` with one-line errors and exit codes: 0 done, 2 a user error, 1 training diverged
    (non-finite loss), 130 interrupted (Ctrl-C; a resumable checkpoint is written first)."""
    log = logging.getLogger("avlegrad")
    said = flags()
    try:
        main(argv)
    except (ValueError, FileNotFoundError, WeightsUnavailableError, DownloadError) as e:  # user errors: no traceback
        log.error("%s", flag_wording(str(e), said))
        return 2
    except StoppedWithRank0:  # under torchrun: rank 0's validation failed, and rank 0 says why
        return 1
    except NonFiniteError as e:
        log.error("%s", flag_wording(str(e), said))
        return 1
    except KeyboardInterrupt as e:
        if os.environ.get("RANK", "0") == "0":  # under torchrun every process stops: rank 0 says it
            log.error("%s", flag_wording(str(e), said) if isinstance(e, TrainingInterrupted) else "interrupted")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(cli())
