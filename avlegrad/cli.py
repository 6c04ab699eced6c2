"""What every command line shares: Ctrl-C ends it with one line, not a traceback; library errors
said in the command line's words (flags); ``--import MODULE`` for extensions kept outside the package."""
from __future__ import annotations

import importlib
import os
import re
import signal
import sys


def run_command(main, argv=None, name: str | None = None,
                interrupted: str = "interrupted; work finished so far is kept") -> int:
    """``main(argv)``; Ctrl-C (KeyboardInterrupt) prints ``<name>: <interrupted>`` on stderr and
    returns 130 (the shell's code for SIGINT). A KeyboardInterrupt carrying a message (e.g.
    ``train.py``'s, naming the checkpoint it saved) prints that message instead."""
    try:
        return main(argv)
    except KeyboardInterrupt as e:
        print(f"{name or sys.argv[0]}: {e if str(e) else interrupted}", file=sys.stderr)
        return 130


def flag_wording(message: str, flags: dict[str, str]) -> str:
    """A library error in a command line's words. The library names its options and arguments in
    backquotes (```audio_encoder```, ```target=text```), never as flags; each name in ``flags``
    (``{name: "--flag"}``) becomes its flag (``--audio-encoder``, ``--target text``). Other text
    is left as it is."""
    def flag(match: re.Match) -> str:
        name, value = match.group(1), match.group(2)
        if name not in flags:
            return match.group(0)
        return flags[name] + (f" {value}" if value is not None else "")

    return re.sub(r"`([a-z_]+)(?:=([^`]*))?`", flag, message)


def parser_flags(parser) -> dict[str, str]:
    """``{dest: "--long-flag"}`` for every long option of an ``argparse`` parser: the names its
    parsed arguments carry, which are those the library's calls take."""
    flags = {}
    for action in parser._actions:
        long = [s for s in action.option_strings if s.startswith("--")]
        if long:
            flags[action.dest] = long[0]
    return flags


def ignore_interrupts() -> None:
    """Initializer of worker processes: Ctrl-C reaches the whole process group, and only the parent
    should answer it (it stops the pool; workers would each print a traceback)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


IMPORT_HELP = ("import MODULE before anything else (repeatable; the current folder is searched too): an "
               "extension kept outside the package, whose decorators register its explainers, models, "
               "datasets, metrics or audio encoders (docs/extending.md)")


def add_import_flag(parser) -> None:
    """``--import MODULE`` (repeatable) on a command's parser; :func:`import_extensions` does the import,
    before the parser is built (its help and choices list the registries)."""
    parser.add_argument("--import", dest="extensions", action="append", default=[], metavar="MODULE",
                        help=IMPORT_HELP)


def import_extensions(argv=None) -> str | None:
    """Import the modules named by ``--import MODULE`` / ``--import=MODULE`` in ``argv`` (default
    ``sys.argv[1:]``), in order, with the current folder on the module path (as ``python -m`` has it).
    Returns None, or the one-line problem naming the module that could not be imported (a module
    that raises anything else while importing is the extension's own bug: its traceback is kept)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    names = []
    for i, arg in enumerate(argv):
        if arg == "--":
            break
        if arg == "--import":
            if i + 1 >= len(argv):
                return None  # argparse says that the flag needs a value
            names.append(argv[i + 1])
        elif arg.startswith("--import="):
            names.append(arg.split("=", 1)[1])
    if names and os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    for name in names:
        try:
            importlib.import_module(name)
        except (ImportError, ValueError) as e:  # ValueError: an empty name
            return f"--import {name}: cannot import it ({e})"
    return None
