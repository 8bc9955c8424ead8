"""`fab deploy --help`: Invoke hands a help flag after a task's name to the task's positional
argument (the tag, the command) instead of showing the task's help; the tasks that take one
ask here first."""

from __future__ import annotations

import os
import sys

HELP_FLAGS = ("--help", "-h")


def help_instead(name: str, *values: str) -> None:
    """When one of `values` (a task's positional arguments) is a help flag, run the program
    again as `fab --help NAME`, which shows the task's help; else return."""
    if not any(value in HELP_FLAGS for value in values):
        return
    given = next((token for token in sys.argv[1:]
                  if token == name or token.endswith(f".{name}")), name)  # as the user named it
    program = sys.argv[0]  # the fab (inv) script, or fabric/__main__.py under `python -m`
    again = (["-m", os.path.basename(os.path.dirname(program))]
             if os.path.basename(program) == "__main__.py" else [program])
    sys.stdout.flush()
    os.execv(sys.executable, [sys.executable, *again, "--help", given])
