"""deploy.toml's `[aliases]`: a name -> a command run in the app container with a terminal
(`fab NAME`, `fab alias NAME`; deploy/vm/console.py runs it). A destination's
`[destinations.NAME.aliases]` goes over `[aliases]`. Names are lower-case words (letters,
digits, `-`), never a task's own name; commands are one line of text.

Read when the fabfile loads (a task per alias), so this imports nothing of the remote half:
`fab --list` stays fast.
"""

from __future__ import annotations

import re

from deploy.core.destinations import subtable
from deploy.core.errors import DeployError
from deploy.core.settings import SETTINGS_FILE, Settings
from deploy.core.settingsrules import CONTROL_RE

TABLE = "aliases"
NAME_RE = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
NAME_LIMIT = 40


def aliases(settings: Settings, taken: frozenset[str] = frozenset()) -> dict[str, str]:
    """NAME -> command of `[aliases]` (the destination's over the top level's), checked:
    each name a lower-case word that no task (`taken`) has, each command one line of text."""
    out: dict[str, str] = {}
    for name, command in subtable(settings.root, settings.destination, TABLE).items():
        where = f"alias '{name}' in [{TABLE}] of {SETTINGS_FILE}"
        if not (NAME_RE.match(name) and len(name) <= NAME_LIMIT):
            raise DeployError(f"{where} is not an alias name: lower-case letters and digits, "
                              f"words joined by `-`, at most {NAME_LIMIT} characters",
                              f"rename it, e.g. `console = \"...\"` ({name!r})")
        if name in taken:
            raise DeployError(f"{where} has the name of the task `fab {name}`, which it would "
                              "hide", f"give the alias another name (not one of: "
                              f"{', '.join(sorted(taken))})")
        if not isinstance(command, str) or not command.strip() or CONTROL_RE.search(command):
            raise DeployError(f"{where} must be a command: one line of text, got {command!r}",
                              f'write it as {name} = "python -m app.console"')
        out[name] = command
    return out
