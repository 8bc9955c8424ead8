"""`inv deploy`: check -> test -> build -> smoke -> push -> remote deploy, each step timed."""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable
from typing import Any

from invoke import Context

from deploy.core import refs, registry
from deploy.core.errors import DeployError
from deploy.core.runner import Runner
from deploy.core.settings import Settings
from deploy.local import apptests, git, hooks, imagebuild
from deploy.local.checks import format_results, run_checks
from deploy.local.checks import registry as check_registry
from deploy.release import dbplace, roles, sequence
from deploy.release.target import release_kind
from deploy.vm import appenvfile, session, steps
from deploy.vm.flows import left_alone

NO_TESTS_COLLECTED = 5


def timed(runner: Runner, name: str, step: Callable[[], object]) -> object:
    """One local phase: its name as it starts, its time when it ends (the name again if the
    step printed something in between; a heading first with -v)."""
    if runner.echo or runner.dry_run:
        runner.say(f"== {name}")
    runner.start_part(name)
    started = time.monotonic()
    outcome = "failed"
    try:
        result = step()
        outcome = f"{time.monotonic() - started:.1f}s"
    finally:
        runner.end_part(name, outcome)
        runner.end_line()
    return result


def preflight(settings: Settings, runner: Runner, allow_dirty: bool,
              waived: list[str] | None = None) -> None:
    skip = (["git-clean"] if allow_dirty else []) + list(waived or [])
    for name in waived or []:
        runner.say(f"check {name} waived (--skip-check {name}); recorded with the release")
    if runner.dry_run:
        runner.say("would run the preflight checks" + (" (not git-clean)" if skip else ""))
        return
    results = run_checks(settings, skip=skip)
    runner.end_line()
    print(format_results(results), flush=True)
    failures = [r.name for r in results if not r.ok]
    if failures:
        raise DeployError(f"preflight failed: {', '.join(failures)}", "fix what the checks say")


def run_tests(settings: Settings, runner: Runner) -> None:
    extra = [] if settings.test_command else ["-q"]
    result = apptests.run(settings, runner, extra)
    if result.exited == NO_TESTS_COLLECTED:
        runner.say("no tests were collected; going on")
    elif not result.ok:
        raise DeployError(f"the tests failed (pytest exit {result.exited})",
                          "fix them, or deploy with --skip-tests if you really must")


def full_deploy(settings: Settings, ctx: Any, **options: Any) -> str:
    """The whole flow from the laptop (`deploy_release`), with the deploy-failed hook."""
    release = hooks.Release("deploy", destination=settings.destination,
                            message=options.get("message", ""))
    runner = Runner(ctx, dry_run=options.get("dry_run", False), secrets=settings.secrets,
                    echo=settings.verbose)
    with hooks.on_failure(settings, runner, release):
        return deploy_release(settings, ctx, release=release, **options)


def deploy_release(
    settings: Settings,
    ctx: Context,
    *,
    release: hooks.Release | None = None,
    version: str = "",
    allow_dirty: bool = False,
    skip_tests: bool = False,
    dry_run: bool = False,
    message: str = "",
    hosts: list[str] | None = None,
    skip_checks: list[str] | None = None,
) -> str:
    """The whole flow from the laptop, one SSH connection per host. Returns the deployed tag.

    What has not changed is skipped: a tag already in the registry is not built or pushed again,
    and a VM already serving it healthy is left alone.
    """
    runner = Runner(ctx, dry_run=dry_run, secrets=settings.secrets, echo=settings.verbose)
    started = time.monotonic()
    tag = git.resolve_version(settings.root, version or settings.tag, allow_dirty=allow_dirty)
    image = refs.validate_image(settings.require("image"))
    kind = release_kind(settings, use_roles=not hosts)
    # with [roles.*] (and no -H), every role's hosts, each with its role's settings.
    per_host = roles.targets(settings, hosts)
    vm_targets = [t for _, _, t in per_host]
    git_sha = git.head_sha(settings.root, short=False) if git.is_repo(settings.root) else ""
    runner.say(f"deploying {image}:{tag} to {', '.join(t.host for t in vm_targets)}")
    if skip_checks:
        unknown = [n for n in skip_checks if n not in check_registry()]
        if unknown:
            raise DeployError(f"no check named '{unknown[0]}'",
                              f"known checks: {', '.join(check_registry())}")
        waived = f"waived checks: {', '.join(skip_checks)}"
        message = f"{message} ({waived})" if message else waived
    dbplace.check(settings, use_roles=kind == "roles")  # before any VM is contacted
    hooks.check(settings)
    release = release or hooks.Release("deploy", destination=settings.destination)
    release.image, release.tag, release.git_sha, release.message = image, tag, git_sha, message
    release.hosts = [t.host for t in vm_targets]
    timed(runner, "check", lambda: preflight(settings, runner, allow_dirty, skip_checks))
    pushed = not dry_run and registry.tag_digest(
        image, tag, settings.registry_user, settings.registry_password) is not None
    if not pushed:  # before any SSH connection
        hooks.pre(settings, runner, hooks.PRE_BUILD, release,
                  "nothing was built and no VM was contacted")
    with contextlib.ExitStack() as stack:
        vms = [stack.enter_context(session.session(each, t, dry_run=dry_run))
               for _, each, t in per_host]
        # Held through build and push: two deploys at once, exactly one goes on. With roles,
        # one lock, on the primary role's first host (the first of the plan).
        for vm in vms[:1] if kind == "roles" else vms:
            stack.enter_context(vm.locked(tag, message))
        for vm in vms:  # a key the release needs and the VM lacks: refuse before building
            appenvfile.require_app_env(vm)
        # hosts serving `tag` healthy already are left alone, as by every deploy
        stale = [vm for vm in vms if not (pushed and left_alone(vm, tag))]
        if not stale:
            runner.say(f"{image}:{tag} is already in the registry and serving healthy on every "
                       "host: nothing to do (skipped test, build, push, pull, migrate, switch)")
            return tag
        if pushed:
            runner.say(f"{image}:{tag} is already in the registry: skipping build, smoke, push")
        if skip_tests:
            runner.say("== test skipped (--skip-tests)")
        else:
            timed(runner, "test", lambda: run_tests(settings, runner))
        if not pushed:
            timed(runner, "build", lambda: imagebuild.build(settings, runner, tag))
            timed(runner, "smoke", lambda: imagebuild.smoke(settings, runner, tag))
            timed(runner, "push", lambda: imagebuild.push(settings, runner, tag))
            if not dry_run:
                registry.require_tag(image, tag, settings.registry_user,
                                     settings.registry_password)
        release.previous = vms[0].current_tag()
        if not dry_run:
            release.digest = registry.tag_digest(image, tag, settings.registry_user,
                                                 settings.registry_password) or ""
        hooks.pre(settings, runner, hooks.PRE_DEPLOY, release, "nothing was changed on any VM")
        if kind == "roles":  # roles switch in batches after one migration
            slots = dict(zip(roles.plan_of(settings).slots, vms, strict=True))
            timed(runner, "remote deploy over roles",
                  lambda: roles.deploy(settings, tag, git_sha=git_sha, message=message,
                                       dry_run=dry_run, vms=slots))
            stale = []

        def deploy_on(vm: steps.Vm) -> None:  # a swarm manager too: its switch is the stack's
            sequence.deploy_host(vm, tag, git_sha=git_sha, message=message, lock=False,
                                 announce=False)

        for vm in stale:
            timed(runner, f"remote deploy on {vm.runner.where}", functools.partial(deploy_on, vm))
        if hooks.find(settings, hooks.POST_DEPLOY):
            release.revision = vms[0].revision()
        problem = hooks.post(settings, runner, hooks.POST_DEPLOY, release)
        hooks.record_failure(vms[0], hooks.POST_DEPLOY, release, problem)
    where = ", ".join(t.host for t in vm_targets)
    print(f"done: {image}:{tag} on {where} in {time.monotonic() - started:.1f}s", flush=True)
    return tag
