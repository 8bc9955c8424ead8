"""Invoke tasks (`inv ...`): thin wiring of the library's steps.

An app repo adopts them with a one-line tasks.py: `from deploy.cli.tasks import ns`. Each task
imports what it runs when it runs, so `inv --list` (and shell completion) loads this module only.
"""

from __future__ import annotations

import json as jsonlib
import shlex
import sys
from typing import TYPE_CHECKING

from invoke import Collection, Context, Exit, task

from deploy.core.errors import DeployError, friendly

if TYPE_CHECKING:  # for annotations only: importing them at start-up would slow `inv --list`
    from deploy.core.runner import Runner
    from deploy.core.settings import Settings


def setup(c: Context, dry_run: bool = False, verbose: bool = False) -> tuple[Settings, Runner]:
    """Settings for the app repo in the working directory, and a local runner."""
    from deploy.core.runner import Runner, set_verbose
    from deploy.core.settings import load_settings

    set_verbose(verbose, c)  # a task's --verbose, or `inv --echo`

    settings = load_settings()
    return settings, Runner(c, dry_run=dry_run, secrets=settings.secrets, echo=settings.verbose)


def version_for(settings: Settings, version: str, allow_dirty: bool) -> str:
    from deploy.local import git

    return git.resolve_version(settings.root, version or settings.tag, allow_dirty=allow_dirty)


@task(
    iterable=["upgrade_package"],
    help={
        "check": "only say whether the lock is fresh (offline); exit 1 if not",
        "upgrade": "re-resolve every pin to the newest allowed version",
        "upgrade-package": "re-resolve this package only (repeatable)",
    },
)
@friendly
def lock(c: Context, check: bool = False, upgrade: bool = False,
         upgrade_package: list[str] | None = None) -> None:
    """Lock the app's dependencies by its lock kind: requirements.txt into requirements.lock
    (hashed pins, no machine index options), `uv lock`, or `poetry lock`."""
    from deploy.local import lockkinds, pins

    settings, runner = setup(c)
    if check:
        state = pins.check_lock(settings)
        if not state.fresh:
            raise DeployError(state.reason, state.fix)
        lk = lockkinds.detect(settings)
        print(f"{lk.lock.relative_to(settings.root) if lk.lock else settings.lock_file} is fresh")
        return
    path = pins.write_lock(settings, runner, upgrade, tuple(upgrade_package or ()))
    print(f"wrote {path}")


@task(
    iterable=["only", "skip"],
    help={"json": "print results as JSON", "only": "run only this check", "skip": "skip it"},
)
@friendly
def check(c: Context, json: bool = False, only: list[str] | None = None,
          skip: list[str] | None = None) -> None:
    """Preflight: python-parity, lock-fresh, env-complete, build-context, migrations,
    migrate-at-start, git-clean."""
    from deploy.core.settings import load_settings, require_root
    from deploy.local.checks import format_results, run_checks

    results = run_checks(load_settings(require_root()), only=only or None, skip=skip or None)
    if json:
        print(jsonlib.dumps([r.as_dict() for r in results], indent=2))
    else:
        print(format_results(results))
    failures = [r.name for r in results if not r.ok]
    if failures:
        raise Exit("" if json else f"preflight failed: {', '.join(failures)}", code=1)


@task(help={"args": "extra arguments for the test command (or put them after --)",
            "db": "give the tests a throwaway database of the production kind (started, "
                  "migrated to head, removed afterwards; the default when the app has a "
                  "database) and refuse when the app's code never reads its variable"})
@friendly
def test(c: Context, args: str = "", db: bool = False) -> None:
    """Run the app's tests (test_command in test_dir, default: pytest with the app's Python)."""
    from deploy.local import apptests

    settings, runner = setup(c)
    extra = shlex.split(args)
    if "--" in sys.argv:
        extra += sys.argv[sys.argv.index("--") + 1 :]
    result = apptests.run(settings, runner, extra, db=db)
    if not result.ok:
        raise Exit(f"tests failed (exit {result.exited})", code=result.exited)


@task(help={"version": "image tag (default: the commit's short SHA)",
            "verbose": "print every command as it runs, secrets redacted (also: DEPLOY_VERBOSE=1)"})
@friendly
def build(c: Context, version: str = "", verbose: bool = False) -> None:
    """Build IMAGE:VERSION with docker buildx --load (OCI labels: revision, created, source)."""
    from deploy.local import imagebuild

    settings, runner = setup(c, verbose=verbose)
    tag = version_for(settings, version, allow_dirty=True)
    from deploy.local import hooks

    hooks.pre(settings, runner, hooks.PRE_BUILD, hooks.Release(
        "build", image=settings.image, tag=tag, destination=settings.destination),
        "nothing was built")
    imagebuild.build(settings, runner, tag)


@task(help={"version": "image tag (default: the one `inv build` last built from this commit, "
                       "else the commit's short SHA)",
            "boot": "also start it and wait for the health URL",
            "verbose": "print every command as it runs, secrets redacted (also: DEPLOY_VERBOSE=1)"})
@friendly
def smoke(c: Context, version: str = "", boot: bool = False, verbose: bool = False) -> None:
    """Run the smoke command inside the built image (and with --boot, its health check)."""
    from deploy.local import imagebuild

    settings, runner = setup(c, verbose=verbose)
    version = version or settings.tag or imagebuild.last_built(settings)
    imagebuild.smoke(settings, runner, version_for(settings, version, allow_dirty=True), boot=boot)


@task(help={"version": "image tag (default: as for `inv smoke`)",
            "allow-dirty": "push an image built from a dirty tree",
            "password-stdin": "read the registry password from stdin (else "
                              "DEPLOY_REGISTRY_PASSWORD)",
            "verbose": "print every command as it runs, secrets redacted (also: DEPLOY_VERBOSE=1)"})
@friendly
def push(c: Context, version: str = "", allow_dirty: bool = False, password_stdin: bool = False,
         verbose: bool = False) -> None:
    """Push IMAGE:VERSION and IMAGE:latest; only an image that passed `inv smoke`."""
    import dataclasses

    from deploy.local import imagebuild

    settings, runner = setup(c, verbose=verbose)
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
        settings = dataclasses.replace(settings, registry_password=password)
        runner.secrets.append(password)
    built = imagebuild.last_built(settings)
    version = version or settings.tag or ("" if "-dirty-" in built and not allow_dirty else built)
    imagebuild.push(settings, runner, version_for(settings, version, allow_dirty=allow_dirty))


@task
@friendly
def config(c: Context) -> None:
    """Print the effective settings (secrets redacted)."""
    from deploy.core.settings import SETTINGS_FILE, load_settings, require_root

    root = require_root()
    settings = load_settings(root)
    print(f"# {root / SETTINGS_FILE}" + (f", [destinations.{settings.destination}] merged "
                                         "over it" if settings.destination else ""))
    for key, value in settings.redacted().items():
        print(f"{key} = {value!r}")


@task(
    help={
        "version": "image tag (default: the commit's short SHA)",
        "allow-dirty": "deploy uncommitted changes (tag <sha>-dirty-<hash>)",
        "skip-tests": "do not run pytest (must be said explicitly)",
        "dry-run": "print every local and remote command in order; run none, no SSH",
        "message": "a note kept in the deploy lock and the release history",
        "skip-check": "waive this preflight check knowingly (repeatable); printed and kept in "
                      "the release record",
        "verbose": "print every command as it runs, secrets redacted (also: DEPLOY_VERBOSE=1)",
    },
    iterable=["skip_check"],
)
@friendly
def deploy(c: Context, version: str = "", allow_dirty: bool = False, skip_tests: bool = False,
           dry_run: bool = False, message: str = "", skip_check: list[str] | None = None,
           verbose: bool = False) -> None:
    """The whole deploy: check, test, build, smoke, push, then the VM's pull-migrate-switch."""
    from deploy.core.runner import set_verbose
    from deploy.core.settings import load_settings, require_root
    from deploy.local.pipeline import full_deploy

    set_verbose(verbose, c)
    full_deploy(load_settings(require_root()), c, version=version, allow_dirty=allow_dirty,
                skip_tests=skip_tests, dry_run=dry_run, message=message,
                skip_checks=list(skip_check or []))


@task(help={"force": "overwrite deploy.toml, tasks.py and fabfile/__init__.py if they exist"})
@friendly
def init(c: Context, force: bool = False) -> None:
    """Adopt the app in this directory: detect it, write deploy.toml, tasks.py, fabfile."""
    from deploy.local import init as adopt

    adopt.run(force=force)


ns = Collection(init, lock, check, test, build, smoke, push, config, deploy)
