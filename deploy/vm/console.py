"""Commands in the app container: one-shot (`fab exec CMD`) or with a terminal (`fab exec -i
CMD`, `fab shell`, and the aliases of deploy.toml's `[aliases]` table, e.g. a console).

```toml
[aliases]                                  # `fab console`, `fab alias console`
console = "python -m app.console"
dbshell = "python -m app.dbshell"
```

An alias (deploy/core/aliases.py) runs its command in the app's running container with a terminal,
as `fab exec -i` does. Behind the proxy the command runs in the container the proxy sends
requests to (compose's `exec` picks a container by its index, which a blue/green switch moves
on); otherwise in the service's container, as compose picks it.
"""

from __future__ import annotations

from deploy.commands import vm as cmd
from deploy.release import bluegreen
from deploy.vm.signals import terminations_exit
from deploy.vm.steps import Vm

# bash if the image has it, else sh: a line of the user's kind, run by `sh -c` in the container
SHELL = "if command -v bash >/dev/null 2>&1; then exec bash; else exec sh; fi"
# Before a command with a terminal: Ctrl-C there sends SIGINT to the whole foreground group,
# the `sh -c` around the command included, which would die of it (exit 130, ending the
# session under a REPL that only printed KeyboardInterrupt). A trap that does nothing keeps
# the shell; the command gets SIGINT as usual (exec resets a trapped signal to its default).
KEEP_SHELL_ON_CTRL_C = "trap : INT; "


def exec_argv(vm: Vm, command: str, tty: bool) -> list[str]:
    """`command` in the app's serving container (behind the proxy: the one it sends requests
    to), on a terminal with `tty`."""
    if tty:
        command = KEEP_SHELL_ON_CTRL_C + command
    if vm.settings.proxy and not vm.runner.dry_run:
        upstream = bluegreen.serving_upstream(vm)
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
