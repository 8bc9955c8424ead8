"""Which VMs a `fab` task acts on: Fabric's own connections verify host keys too, one verified
session per host (every role's hosts when deploy.toml has roles and no -H is given), and a
release taken host after host, saying where it stopped.

What loading the fabfile does not need (the remote half, the runner) is imported when a
task runs: `fab --list` stays fast.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from invoke import Context

from deploy.core.errors import DeployError
from deploy.core.hostkeys import DEFAULT_KNOWN_HOSTS, verify_fabric_connections
from deploy.core.settings import load_settings

if TYPE_CHECKING:  # annotations only (see above)
    from deploy.core.settings import Settings
    from deploy.release.target import Kind
    from deploy.vm.steps import Vm


def _verify_host_keys() -> None:
    """Connections Fabric makes itself while this fabfile is loaded check host keys too.

    (A bare `fab -H vm -- cmd` loads no fabfile, so Fabric alone handles it: `fab run` is the
    verified way.)
    """
    files = [DEFAULT_KNOWN_HOSTS]
    try:
        known_hosts = load_settings().known_hosts
    except DeployError:
        known_hosts = ""
    verify_fabric_connections([known_hosts, *files] if known_hosts else files)


_verify_host_keys()


def each_vm(c: Context, dry_run: bool = False) -> Iterator[Vm]:
    """Yield a Vm per host (from -H, else the settings), one SSH connection each."""
    from deploy.core.runner import set_verbose
    from deploy.release import roles  # with [roles.*] and no -H, every role's hosts
    from deploy.vm.session import session

    set_verbose(False, c)  # `fab --echo`
    settings = load_settings()
    hosts = [c.original_host] if hasattr(c, "original_host") else None
    for role, each, target in roles.targets(settings, hosts):
        if role:
            print(f"== {target.host} (role {role})")
        with session(each, target, dry_run=dry_run) as vm:
            yield vm


def release_kind_of(c: Context, settings: Settings | None = None) -> Kind:
    """The kind of release a task makes (deploy/release/target.py): `-H` hosts are hosts."""
    from deploy.release.target import release_kind

    return release_kind(settings or load_settings(), not hasattr(c, "original_host"))


def with_roles(c: Context) -> bool:
    """whether this task acts on the roles of deploy.toml (there are some, no -H)."""
    return release_kind_of(c) == "roles"


# Hosts that took the new release in this `fab` run: Fabric calls a task once per -H host, so
# the list outlives one call.
CHANGED: list[str] = []


def one_host_after_another(c: Context, tag: str, step: Callable[[Vm], object],
                           dry_run: bool = False) -> None:
    """Run `step(vm)` host after host; at the first failure, stop and say, before the error,
    which hosts have TAG and which were not touched."""
    from deploy.vm.session import session, targets

    settings = load_settings()
    on_command_line = hasattr(c, "original_host")
    todo = targets(settings, [c.original_host] if on_command_line else None)
    for i, target in enumerate(todo):
        try:
            with session(settings, target, dry_run=dry_run) as vm:
                step(vm)
        except (DeployError, KeyboardInterrupt):
            if CHANGED or len(todo) > 1:
                rest = ", ".join(t.host for t in todo[i + 1:]) or (
                    "any later -H host" if on_command_line else "none")
                print(f"{tag} stopped at {target.host}: now on {tag}: "
                      f"{', '.join(CHANGED) or 'no host'}; {target.host}: see the error below; "
                      f"not attempted (kept their release): {rest}", file=sys.stderr)
            raise
        CHANGED.append(target.host)


def last_of(history: list[dict], tag: str) -> dict | None:
    return next((e for e in reversed(history) if e["tag"] == tag), None)
