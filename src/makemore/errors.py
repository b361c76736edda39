"""Errors a user can cause. The CLI prints these as one line and exits non-zero."""

import os
import sys


class UserError(Exception):
    """Bad input from the user: a missing file, a bad flag value, a broken run directory.

    Anything raised as UserError is reported as `makemore: error: <message>` with no
    traceback; every other exception is a bug in makemore and keeps its traceback.
    """



def quiet_interrupt_at_start() -> None:
    """Ctrl-C while the `makemore` command is still importing torch (its first second or so)
    comes before cli.main can catch it: print one line, as main does, instead of a traceback.
    The exit status stays the interpreter's for an interrupt. Only in the command's own process
    (its console script, or python -m makemore): a script or notebook that imports makemore keeps
    its tracebacks."""
    if not sys.argv or (os.path.basename(sys.argv[0]) != "makemore" and sys.argv[0] != "-m"):
        return
    default = sys.excepthook

    def hook(kind, value, tb):
        if issubclass(kind, KeyboardInterrupt):
            print("makemore: interrupted", file=sys.stderr)
        else:
            default(kind, value, tb)

    sys.excepthook = hook
