"""Env parity to the VM: the VM's app.env has every key of the release's .env.example.

Only keys cross the wire from the VM (a `sed` that prints names, never values). `fab env set KEY`
adds or replaces one key, its value read from stdin (never argv), app.env rewritten atomically
with mode 0600. `DEPLOY_*` keys are the tool's settings: they never go to the VM's app.env.
"""

from __future__ import annotations

import re
from pathlib import Path

from deploy.commands.vm import APP_ENV, env_keys, env_line, env_set, env_unset
from deploy.core import dotenvfile
from deploy.core.errors import DeployError
from deploy.core.settings import ENV_PREFIX
from deploy.vm import contract
from deploy.vm.vm import VmQueries

KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def app_env_keys() -> list[str]:
    """Print the keys (only) of the VM's app.env, one a line; nothing if it does not exist."""
    return env_keys(APP_ENV)


def set_key(key: str) -> list[str]:
    """Replace or add KEY in app.env with the line on stdin (`KEY='value'`, written by
    deploy.vm.contract.env_line so compose reads the value byte for byte); atomic, 0600."""
    return env_set(validate_key(key), APP_ENV)


def unset_key(key: str) -> list[str]:
    """Remove KEY from app.env (exit ENV_KEY_MISSING_EXIT if it is not there)."""
    return env_unset(validate_key(key), APP_ENV)


def key_line(key: str) -> list[str]:
    """Print KEY's line of app.env (exit ENV_KEY_MISSING_EXIT if it has none): only for
    `fab env get`, the one place a value leaves the VM on purpose."""
    return env_line(validate_key(key), APP_ENV)


def validate_key(key: str) -> str:
    if not KEY_RE.match(key):
        raise DeployError(f"{key!r} is not a variable name",
                          "use letters, digits and underscores, not starting with a digit")
    if key.startswith(ENV_PREFIX):
        raise DeployError(f"{key} is a setting of the deploy tool, not the app's",
                          "DEPLOY_* keys never go to the VM's app.env; keep them on the laptop")
    return key


def validate_value(value: str) -> str:
    """Any text but a NUL byte (an environment variable ends at one): line breaks, quotes,
    `$` and backslashes reach the app as given (deploy.vm.contract.env_line)."""
    if "\0" in value:
        raise DeployError("the value has a NUL byte, which no environment variable can hold",
                          "give the value without it")
    return value


def release_keys(example: Path) -> list[str]:
    """The keys a release needs on the VM: its .env.example's, minus the tool's DEPLOY_*."""
    if not example.exists():
        return []
    return [k for k in dotenvfile.dotenv_keys(example) if not k.startswith(ENV_PREFIX)]


def missing_keys(vm: VmQueries, example: Path) -> list[str]:
    """Keys of `example` that the VM's app.env lacks."""
    present = set(vm.facts.env_keys if vm.facts else
                  vm.run(app_env_keys(), quiet=True).stdout.split())
    return [k for k in release_keys(example) if k not in present]


def require_app_env(vm: VmQueries) -> None:
    """Refuse (before anything changes on the VM) a release whose .env.example names keys the
    VM's app.env lacks."""
    if vm.runner.dry_run:
        return
    settings = vm.settings
    missing = missing_keys(vm, settings.path(settings.env_example))
    if missing:
        raise DeployError(
            f"the VM's {APP_ENV} lacks {', '.join(missing)}, which {settings.env_example} of "
            "this release declares; nothing was changed on the VM",
            " ; ".join(f"fab env set {k} (the value on stdin)" for k in missing)
            + " ; or `fab setup` again to upload the whole .env",
        )


def values_for_app_env(path: Path) -> dict[str, str]:
    """The env file's values without DEPLOY_* keys (what `fab setup` writes as app.env)."""
    if not path.is_file():
        raise DeployError(f"{path} does not exist", f"create it (see {path.name}.example)")
    return {k: v for k, v in dotenvfile.read_env_file(path).items() if not k.startswith(ENV_PREFIX)}


def set_values(vm: VmQueries, values: dict[str, str]) -> None:
    """Add or replace each key in the VM's app.env (the value on stdin, as `fab env set`),
    then make the release files app.env plus the current release again."""
    vm.runner.secrets.extend(values.values())
    for key, value in values.items():
        line = contract.env_line(key, value, vm.compose_kind())  # compose reads it byte for byte
        vm.run(set_key(key), stdin=line.rstrip("\n"), hide=True,
               what=f"setting {key} in the VM's app.env failed", fix="see the message above")
    vm.write_release_files(vm.current_tag())
