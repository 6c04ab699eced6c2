"""What every command line shares: Ctrl-C ends it with one line, not a traceback; library errors
said in the command line's words (flags)."""
from __future__ import annotations

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
