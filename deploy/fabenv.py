"""`fab env set KEY` and `fab env-keys`: the VM's app.env, one key at a time (values never
on argv, never printed)."""

from __future__ import annotations

from fabric import task
from invoke import Context

from deploy.errors import friendly
from deploy.fabhosts import each_vm


@task(name="env", positional=["action", "key"],
      help={"action": "`set`: the value is read from stdin", "key": "the variable to set"})
def env_(c: Context, action: str, key: str) -> None:
    """`fab env set KEY`: add or replace KEY in the VM's app.env (value from stdin, mode 0600)."""
    env_set(c, action, key)  # (Invoke loses positional arguments through a wrapper)


@friendly
def env_set(c: Context, action: str, key: str) -> None:
    import getpass
    import sys

    from deploy import envcheck
    from deploy.commands import vm as cmd
    from deploy.errors import DeployError
    from deploy.remote.contract import env_line

    if action != "set":
        raise DeployError(f"unknown action {action!r}", "fab env set KEY (value on stdin); "
                          "fab env-keys lists the keys")
    envcheck.validate_key(key)
    value = (getpass.getpass(f"{key}: ") if sys.stdin.isatty()
             else sys.stdin.readline().rstrip("\n"))
    envcheck.validate_value(value)
    for vm in each_vm(c):
        vm.runner.secrets.append(value)
        line = env_line(key, value, vm.compose_kind())  # compose reads it byte for byte
        vm.run(envcheck.set_key(key), stdin=line.rstrip("\n"), hide=True,
               what=f"setting {key} in the VM's app.env failed", fix="see the message above")
        vm.write_release_files(vm.current_tag())
        vm.runner.say(f"{key} set in {vm.settings.app_dir}/{cmd.APP_ENV}; it takes effect "
                      "at the next deploy (or `docker compose up -d` on the VM)")


@task(name="env-keys")
@friendly
def env_keys(c: Context) -> None:
    """The keys (never the values) of the VM's app.env."""
    from deploy import envcheck

    for vm in each_vm(c):
        print(vm.run(envcheck.app_env_keys(), quiet=True).stdout.strip())
