"""Commands in the app container: one-shot (`fab exec CMD`) or with a terminal (`fab exec -i
CMD`, `fab shell`, and the aliases of deploy.toml's `[aliases]` table, e.g. a console).

```toml
[aliases]                                  # `fab console`, `fab alias console`
console = "python -m app.console"
dbshell = "python -m app.dbshell"
```

An alias runs its command in the app's running container with a terminal, as `fab exec -i`
does; a destination's `[destinations.NAME.aliases]` goes over `[aliases]`. Names are lower-case
words (letters, digits, `-`), never a task's own name. Behind the proxy the command runs in the
container the proxy sends requests to (compose's `exec` picks a container by its index, which a
blue/green switch moves on); otherwise in the service's container, as compose picks it.
"""

from __future__ import annotations

import re

from deploy.commands import vm as cmd
from deploy.destinations import subtable
from deploy.errors import DeployError
from deploy.remote.signals import terminations_exit
from deploy.remote.steps import Vm
from deploy.settings import SETTINGS_FILE, Settings
from deploy.settingsrules import CONTROL_RE

TABLE = "aliases"
NAME_RE = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
NAME_LIMIT = 40
# bash if the image has it, else sh: a line of the user's kind, run by `sh -c` in the container
SHELL = "if command -v bash >/dev/null 2>&1; then exec bash; else exec sh; fi"


def aliases(settings: Settings, taken: frozenset[str] = frozenset()) -> dict[str, str]:
    """NAME -> command of `[aliases]` (the destination's over the top level's), checked:
    each name a lower-case word that no task (`taken`) has, each command one line of text."""
    out: dict[str, str] = {}
    for name, command in subtable(settings, TABLE).items():
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


def exec_argv(vm: Vm, command: str, tty: bool) -> list[str]:
    """`command` in the app's serving container (behind the proxy: the one it sends requests
    to), on a terminal with `tty`."""
    if vm.settings.proxy and not vm.runner.dry_run:
        from deploy import proxy

        upstream = proxy.serving_upstream(vm)
        if upstream:
            return cmd.exec_in_container(upstream.rpartition(":")[0], command, tty)
    return cmd.exec_in_service(vm.compose(), vm.settings.service, command, tty)


def run_interactive(vm: Vm, command: str) -> int:
    """Run `command` in the app container with a terminal; its exit code. Ctrl-C goes to the
    command (a REPL's KeyboardInterrupt); SIGTERM or SIGHUP (the terminal closed) end it."""
    argv = exec_argv(vm, command, tty=True)
    connection = getattr(vm.runner.target, "connection", None)
    with terminations_exit(connection.close if connection else lambda: None):
        return vm.runner.interactive(argv, cwd=vm.settings.app_dir)
