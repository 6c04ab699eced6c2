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
    """Initializer of worker processes: Ctrl-C reaches the terminal's whole foreground process group,
    and only the parent should answer it (it stops the pool; workers would each print a traceback)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


IMPORT_HELP = ("import MODULE before anything else (repeatable; the current folder is searched first): an "
               "extension kept outside the package, whose decorators register its explainers, models, "
               "datasets, metrics or audio encoders (docs/extending.md)")


def add_import_flag(parser) -> None:
    """``--import MODULE`` (repeatable) on a command's parser; :func:`import_extensions` does the import,
    before the parser is built (its help and choices list the registries). An abbreviation argparse
    accepts (``--imp``) was not seen by that first pass: refused, asking for the full flag."""
    import argparse

    class Imported(argparse._AppendAction):
        def __call__(self, parser, namespace, values, option_string=None):
            if values not in sys.modules:
                parser.error(f"--import {values}: not imported (an abbreviation of --import is not read: "
                             f"write --import in full)")
            super().__call__(parser, namespace, values, option_string)

    parser.add_argument("--import", dest="extensions", action=Imported, default=[], metavar="MODULE",
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
                break  # argparse says that the flag needs a value
            names.append(argv[i + 1])
        elif arg.startswith("--import="):
            names.append(arg.split("=", 1)[1])
    if names and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    for name in names:
        if "/" in name or "\\" in name or name.endswith(".py"):
            return (f"--import {name}: give a module name (my_extension, or my_package.my_extension, found "
                    f"from the current folder or the installed packages), not a file path")
        try:
            importlib.import_module(name)
        except (ImportError, ValueError, TypeError) as e:  # ValueError: an empty name; TypeError: ".x"
            return f"--import {name}: cannot import it ({e})"
    return None
