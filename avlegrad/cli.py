"""What every command line shares: Ctrl-C ends it with one line, not a traceback."""
from __future__ import annotations

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


def ignore_interrupts() -> None:
    """Initializer of worker processes: Ctrl-C reaches the whole process group, and only the parent
    should answer it (it stops the pool; workers would each print a traceback)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
