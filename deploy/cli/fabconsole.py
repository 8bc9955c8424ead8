"""`fab exec`, `fab shell`, `fab alias` and one task per alias of deploy.toml's `[aliases]`:
commands in the app container, with a terminal when asked (deploy/vm/console.py).

Imports inside the tasks are on purpose: each task imports what it runs when it runs, so that
`fab --list` loads none of it."""

from __future__ import annotations

import sys

from fabric import task
from fabric.tasks import Task
from invoke import Context, Exit

from deploy.cli.fabhosts import each_vm
from deploy.cli.taskhelp import help_instead
from deploy.core.errors import DeployError, friendly


@task(name="exec", positional=["cmd"],
      help={"cmd": "the command to run inside the app container",
            "interactive": "with a terminal (a console, a REPL): what you type goes to it, "
                           "Ctrl-C included"})
def exec_(c: Context, cmd: str, interactive: bool = False) -> None:
    """Run a command inside the running app container; its exit code is ours.

    `fab exec "CMD"` (or --cmd); `-i` gives it a terminal: `fab exec -i "python"`."""
    help_instead("exec", cmd)
    exec_command(c, cmd, interactive)  # (Invoke loses positional arguments through a wrapper)


@friendly
def exec_command(c: Context, cmd: str, interactive: bool) -> None:
    from deploy.vm import console

    if not cmd.strip():
        raise DeployError("no command given", 'fab exec "CMD" (-i for a terminal)')
    for vm in each_vm(c):
        if interactive:
            code = console.run_interactive(vm, cmd)
        else:
            code = vm.run(console.exec_argv(vm, cmd, tty=False), check=False).exited
        if code:
            raise Exit(f"command exited {code}", code=code)


@task
@friendly
def shell(c: Context) -> None:
    """An interactive shell in the app container (bash if the image has it, else sh)."""
    from deploy.vm import console

    for vm in each_vm(c):
        code = console.run_interactive(vm, console.SHELL)
        if code:
            raise Exit(code=code)


@task(name="alias", positional=["name"],
      help={"name": "an alias of deploy.toml's [aliases] (`fab --list` shows them)"})
def alias_(c: Context, name: str) -> None:
    """Run an alias of deploy.toml's [aliases] in the app container, with a terminal
    (`fab alias console`, or just `fab console`)."""
    help_instead("alias", name)
    run_alias(c, name)  # (Invoke loses positional arguments through a wrapper)


@friendly
def run_alias(c: Context, name: str) -> None:
    from deploy.core import aliases
    from deploy.core.settings import SETTINGS_FILE, load_settings
    from deploy.vm import console

    table = aliases.aliases(load_settings())
    if name not in table:
        raise DeployError(f"there is no alias {name!r} in [aliases] of {SETTINGS_FILE} "
                          f"(known: {', '.join(table) or 'none'})",
                          f'add it: [aliases] {name} = "python -m app.console"')
    for vm in each_vm(c):
        code = console.run_interactive(vm, table[name])
        if code:
            raise Exit(code=code)


def alias_tasks(taken: frozenset[str]) -> list[Task]:
    """A task per alias of the app's deploy.toml (none outside an app repo, or when its
    settings do not load: the task that runs then says why). A bad alias stops `fab` here,
    with its error and fix: a task with a bad name cannot be made, nor left out unsaid."""
    from deploy.core import aliases
    from deploy.core.settings import find_root, load_settings

    if find_root() is None:
        return []
    try:
        settings = load_settings()
    except DeployError:
        return []
    try:
        table = aliases.aliases(settings, taken)
    except DeployError as exc:
        print(f"error: {exc.message}" + (f"\n  fix: {exc.fix}" if exc.fix else ""),
              file=sys.stderr)
        raise SystemExit(1) from None
    return [alias_task(name, command) for name, command in table.items()]


def alias_task(name: str, command: str) -> Task:
    def body(c: Context) -> None:
        run_alias(c, name)

    body.__doc__ = f"`{command}` in the app container, with a terminal ([aliases] {name})"
    body.__name__ = name.replace("-", "_")
    made: Task = task(name=name)(body)
    return made
