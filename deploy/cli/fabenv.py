"""`fab env set KEY`, `fab env get KEY`, `fab env unset KEY` and `fab env-keys`: the VM's
app.env, one key at a time (values never on argv; printed only by `fab env get KEY --show`).

Imports inside the tasks are on purpose: each task imports what it runs when it runs, so that
`fab --list` loads none of it."""

from __future__ import annotations

from fabric import task
from invoke import Context

from deploy.cli.fabhosts import each_vm
from deploy.cli.taskhelp import help_instead
from deploy.core.errors import friendly

ACTIONS = ("set", "get", "unset")


@task(name="env", positional=["action", "key"],
      help={"action": "`set`: the value is read from stdin; `get`: say whether KEY is set; "
                      "`unset`: remove KEY",
            "key": "the variable", "show": "get: print the value itself"})
def env_(c: Context, action: str, key: str, show: bool = False) -> None:
    """`fab env set KEY`: add or replace KEY in the VM's app.env, the value read from stdin
    (all of it, line breaks included, but for the one line end `echo`/`printf '%s\\n'` add),
    mode 0600. `fab env get KEY [--show]`: its length, or with --show the value.
    `fab env unset KEY`: remove KEY from app.env."""
    help_instead("env", action, key)
    env_action(c, action, key, show)  # (Invoke loses positional arguments through a wrapper)


@friendly
def env_action(c: Context, action: str, key: str, show: bool = False) -> None:
    from deploy.core.errors import DeployError

    if action not in ACTIONS:
        raise DeployError(f"unknown action {action!r}", "fab env set KEY (value on stdin); "
                          "fab env get KEY [--show]; fab env unset KEY; fab env-keys lists "
                          "the keys")
    if action == "get":
        env_get(c, key, show)
    elif action == "unset":
        env_unset(c, key)
    else:
        env_set(c, key)


def read_value(key: str) -> str:
    """The value on stdin: all of it, less one final line end; a terminal asks for one line."""
    import getpass
    import sys

    from deploy.core.errors import DeployError

    if sys.stdin.isatty():
        return getpass.getpass(f"{key}: ")
    data = sys.stdin.buffer.read()
    try:
        text = data.decode()
    except UnicodeDecodeError:
        raise DeployError("the value on stdin is not UTF-8 text", "give the value as UTF-8 "
                          "(base64-encode binary data)") from None
    return text[:-1] if text.endswith("\n") else text


def env_set(c: Context, key: str) -> None:
    from deploy.commands import vm as cmd
    from deploy.core.runner import MIN_REDACTED
    from deploy.vm import appenvfile

    appenvfile.validate_key(key)
    value = appenvfile.validate_value(read_value(key))
    for vm in each_vm(c):
        if len(value) < MIN_REDACTED:
            vm.runner.say(f"warning: the value of {key} is shorter than {MIN_REDACTED} "
                          "characters: the output never masks values that short (they would "
                          "match inside ordinary words)")
        appenvfile.set_values(vm, {key: value})
        vm.runner.say(f"{key} set in {vm.settings.app_dir}/{cmd.APP_ENV} ({len(value)} "
                      "characters); it takes effect at the next deploy (or `docker compose up "
                      "-d` on the VM)")


def env_unset(c: Context, key: str) -> None:
    from deploy.commands import vm as cmd
    from deploy.core.errors import DeployError
    from deploy.vm import appenvfile

    appenvfile.validate_key(key)
    for vm in each_vm(c):
        result = vm.run(appenvfile.unset_key(key), hide=True, check=False)
        if result.exited == cmd.ENV_KEY_MISSING_EXIT:
            raise DeployError(f"{key} is not set in {vm.settings.app_dir}/{cmd.APP_ENV} on "
                              f"{vm.runner.where}; nothing changed",
                              "fab env-keys lists the keys")
        if not result.ok:
            raise DeployError(f"removing {key} from the VM's {cmd.APP_ENV} failed: "
                              f"{result.output.strip()}", "see the message above")
        vm.write_release_files(vm.current_tag())
        vm.runner.say(f"{key} removed from {vm.settings.app_dir}/{cmd.APP_ENV}; it takes "
                      "effect at the next deploy (or `docker compose up -d` on the VM)")


def env_get(c: Context, key: str, show: bool) -> None:
    import sys

    from deploy.commands import vm as cmd
    from deploy.core.errors import DeployError
    from deploy.vm import appenvfile
    from deploy.vm.contract import parse_env_line

    appenvfile.validate_key(key)
    for vm in each_vm(c):
        result = vm.run(appenvfile.key_line(key), quiet=True, check=False)
        if result.exited == cmd.ENV_KEY_MISSING_EXIT:
            raise DeployError(f"{key} is not set in {vm.settings.app_dir}/{cmd.APP_ENV} on "
                              f"{vm.runner.where}",
                              f"fab env set {key} (the value on stdin); fab env-keys lists "
                              "the keys")
        if not result.ok:
            raise DeployError(f"reading {key} from the VM's {cmd.APP_ENV} failed: "
                              f"{result.stderr.strip() or f'exit {result.exited}'}",
                              "see the message above")
        value = parse_env_line(result.stdout)[1]
        if show:
            sys.stdout.write(value + "\n")
        else:
            print(f"{key} is set ({len(value)} characters; --show prints it)")
        sys.stdout.flush()


@task(name="env-keys")
@friendly
def env_keys(c: Context) -> None:
    """The keys (never the values) of the VM's app.env."""
    from deploy.vm import appenvfile

    for vm in each_vm(c):
        print(vm.run(appenvfile.app_env_keys(), quiet=True).stdout.strip())
