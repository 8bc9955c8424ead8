"""`fab deploy`, `fab promote` and `fab rollback` around their flows: the hooks
(deploy/local/hooks.py) on the laptop, before and after the hosts take the release.

Fabric calls a task once per `-H` host, so with `-H a,b` each host's run has its own hooks;
without `-H`, one run goes through every host of the settings (or the roles) and the hooks run
once, with every host in RELEASE_HOSTS.
Imports inside the tasks are on purpose: each task imports what it runs when it runs, so that
`fab --list` loads none of it."""

from __future__ import annotations

from typing import Any

from deploy.core.runner import Runner
from deploy.core.settings import Settings
from deploy.local import hooks


def local_runner(settings: Settings, dry_run: bool = False) -> Runner:
    """A runner on the laptop (a `fab` task's context may be a connection to the VM)."""
    from invoke import Context

    return Runner(Context(), dry_run=dry_run, secrets=settings.secrets, echo=settings.verbose)


def hosts_of(c: Any, settings: Settings) -> list[str]:
    from deploy.release import roles

    hosts = [c.original_host] if hasattr(c, "original_host") else None
    return [t.host for _, _, t in roles.targets(settings, hosts)]


def record_on_first_host(c: Any, settings: Settings, name: str, release: hooks.Release,
                         problem: str) -> None:
    """Append a post-hook's failure to the history of the first host (the lock's)."""
    from deploy.release import roles
    from deploy.vm.session import session

    if not problem:
        return
    hosts = [c.original_host] if hasattr(c, "original_host") else None
    _, each, target = roles.targets(settings, hosts)[0]
    with session(each, target) as vm:
        hooks.record_failure(vm, name, release, problem)


def deploy_tag(c: Any, settings: Settings, tag: str, *, message: str = "", dry_run: bool = False,
               digest: str = "", action: str = "deploy") -> list[dict]:
    """Deploy TAG (exactly the image `digest`, if given) on every host, host after host, the
    pre-deploy hook after the first host's checks, post-deploy after the last; the history
    entries."""
    from deploy.cli.fabhosts import one_host_after_another, release_kind_of
    from deploy.release import dbplace, sequence
    from deploy.vm import steps

    kind = release_kind_of(c, settings)
    dbplace.check(settings, use_roles=kind == "roles")  # before any VM is contacted
    hooks.check(settings)
    release = hooks.Release(action, image=settings.image, tag=tag, digest=digest,
                            message=message, destination=settings.destination,
                            hosts=hosts_of(c, settings))
    runner = local_runner(settings, dry_run)
    entries: list[dict] = []

    def before_change(previous: str) -> None:
        release.previous = previous
        hooks.pre(settings, runner, hooks.PRE_DEPLOY, release, "nothing was changed on any VM")

    with hooks.on_failure(settings, runner, release):
        if kind == "roles":  # one lock and the checks of every host happen inside
            from deploy.release import roles

            roles.deploy(settings, tag, message=message, dry_run=dry_run, digest=digest,
                         before_change=before_change)
        else:
            def step(vm: steps.Vm) -> None:  # a swarm manager too: its switch is the stack's
                entries.append(sequence.deploy_host(
                    vm, tag, message=message, digest=digest,
                    before_change=None if entries else before_change))

            one_host_after_another(c, tag, step, dry_run)
        if entries:
            release.digest = entries[-1].get("digest") or release.digest
            release.revision = entries[-1].get("revision", "")
        problem = hooks.post(settings, runner, hooks.POST_DEPLOY, release)
        if not dry_run:
            record_on_first_host(c, settings, hooks.POST_DEPLOY, release, problem)
    return entries


def after_rollback(c: Any, settings: Settings, entries: list[dict], dry_run: bool = False) -> None:
    """The post-rollback hook, once every host was put back."""
    last = entries[-1] if entries else {}
    release = hooks.Release("rollback", image=settings.image, tag=last.get("tag", ""),
                            digest=last.get("digest", ""), previous=last.get("previous", ""),
                            revision=last.get("revision", ""),
                            destination=settings.destination, hosts=hosts_of(c, settings))
    problem = hooks.post(settings, local_runner(settings, dry_run), hooks.POST_ROLLBACK, release)
    if not dry_run:
        record_on_first_host(c, settings, hooks.POST_ROLLBACK, release, problem)
