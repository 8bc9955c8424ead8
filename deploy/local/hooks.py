"""Hooks: the app repo's own executables, run on the laptop around a release.

`hooks_dir` (default `.deploy/hooks`) may hold executables named after the points below; a
missing one is skipped, one that is there but not executable is refused before anything runs
(a `.sample` file, as `deploy-init` writes them, is ignored, as git does).

    pre-build      `inv deploy` / `inv build`, before the image is built; before any SSH
                   connection (a failure: nothing was built, nothing touched a VM)
    pre-deploy     after the checks (local and on the VM), under the deploy lock, before
                   anything changes on a VM (a failure: the VM is as it was)
    post-deploy    after every host serves the release healthy and recorded it
    post-rollback  after `fab rollback` put a release back
    deploy-failed  a deploy, promote or rollback stopped with an error (RELEASE_ERROR says it)

A failing pre-hook stops the release. A failing post-hook (or deploy-failed hook) changes
nothing that happened: its output and exit status are shown, and its failure is appended to
the release history of the host that holds the lock (`fab releases` shows it).

The release is described to a hook in `RELEASE_*` variables, not `DEPLOY_*`: every
`DEPLOY_<KEY>` in the environment is read as a setting override, so a hook that runs `fab
status` or `inv config` itself would have its `DEPLOY_TAG` taken for the `tag` setting (and an
unknown `DEPLOY_HOSTS` refused). `RELEASE_*` can never be mistaken for a setting.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from deploy.commands import vm as cmd
from deploy.core.errors import DeployError
from deploy.core.runner import Runner
from deploy.core.settings import Settings
from deploy.core.stamp import stamp
from deploy.vm.steps import Vm

PRE_BUILD = "pre-build"
PRE_DEPLOY = "pre-deploy"
POST_DEPLOY = "post-deploy"
POST_ROLLBACK = "post-rollback"
DEPLOY_FAILED = "deploy-failed"
NAMES = (PRE_BUILD, PRE_DEPLOY, POST_DEPLOY, POST_ROLLBACK, DEPLOY_FAILED)
PREFIX = "RELEASE_"


def performer() -> str:
    """Who runs the release (as the history records it)."""
    return f"{getpass.getuser()}@{socket.gethostname()}"


@dataclass
class Release:
    """What a hook is told about the release, filled in as the release goes on."""

    action: str  # deploy, promote, rollback
    image: str = ""
    tag: str = ""
    digest: str = ""
    hosts: list[str] = field(default_factory=list)
    destination: str = ""
    message: str = ""
    previous: str = ""
    git_sha: str = ""
    revision: str = ""  # the database's Alembic revision after the release
    error: str = ""
    started: float = field(default_factory=time.monotonic)

    def env(self, hook: str) -> dict[str, str]:
        """The RELEASE_* variables for `hook`."""
        values = {
            "HOOK": hook,
            "ACTION": self.action,
            "IMAGE": self.image,
            "TAG": self.tag,
            "DIGEST": self.digest,
            "HOSTS": ",".join(self.hosts),
            "DESTINATION": self.destination,
            "PERFORMER": performer(),
            "MESSAGE": self.message,
            "PREVIOUS_TAG": self.previous,
            "GIT_SHA": self.git_sha,
            "REVISION": self.revision,
            "ERROR": self.error,
            "RUNTIME": f"{time.monotonic() - self.started:.1f}",
        }
        return {PREFIX + key: value for key, value in values.items()}


def hooks_dir(settings: Settings) -> Path:
    return settings.path(settings.hooks_dir)


def find(settings: Settings, name: str) -> Path | None:
    """The hook `name`, if the app has one; refused when it is there but cannot run."""
    path = hooks_dir(settings) / name
    if not path.exists():
        return None
    if not path.is_file() or not os.access(path, os.X_OK):
        raise DeployError(f"the {name} hook {path} is not an executable file",
                          f"chmod +x {path} (or remove it, or rename it {name}.sample)")
    return path


def check(settings: Settings) -> None:
    """Refuse, before a release starts, any hook that is there but would not run."""
    for name in NAMES:
        find(settings, name)


def run(settings: Settings, runner: Runner, name: str, release: Release) -> int:
    """Run hook `name` (if any) in the app repo with the release's variables, its output
    shown as it comes; its exit status (0 when there is none)."""
    path = find(settings, name)
    if path is None:
        return 0
    runner.say(f"hook {name}")
    env = {**os.environ, **release.env(name)}
    result = runner.run([str(path)], cwd=str(settings.root), env=env, check=False)
    return result.exited


def pre(settings: Settings, runner: Runner, name: str, release: Release,
        unchanged: str) -> None:
    """Run a pre-hook; a failure stops the release (`unchanged` says what was not touched)."""
    code = run(settings, runner, name, release)
    if code:
        raise DeployError(f"the {name} hook exited {code} (its output is above); {unchanged}",
                          f"fix what it says, or what it checks, and run the same command again "
                          f"({hooks_dir(settings) / name})")


def post(settings: Settings, runner: Runner, name: str, release: Release) -> str:
    """Run a post-hook; '' if it passed, else what failed (printed as a warning: nothing is
    rolled back for it)."""
    code = run(settings, runner, name, release)
    if not code:
        return ""
    problem = f"the {name} hook exited {code}"
    runner.say(f"warning: {problem} (its output is above); {release.tag or 'the release'} "
               "stays as it is, nothing was rolled back")
    return problem


def failure_record(name: str, release: Release, problem: str) -> dict:
    """A history record of a failed hook: not a release (rollback and retention skip it)."""
    return {"kind": "hook", "hook": name, "tag": release.tag, "action": release.action,
            "message": problem, **stamp()}


def record_failure(vm: Vm, name: str, release: Release, problem: str) -> None:
    """Append a hook's failure to the history of `vm` (a deploy.vm Vm) as a record of its
    own, after the release's record."""
    if not problem or vm.runner.dry_run:
        return
    entry = failure_record(name, release, problem)
    vm.run(cmd.append_history(json.dumps(entry, sort_keys=True)), quiet=True, check=False)


@contextlib.contextmanager
def on_failure(settings: Settings, runner: Runner, release: Release) -> Iterator[None]:
    """Run the deploy-failed hook when the block stops with an error (then let it go on)."""
    try:
        yield
    except (DeployError, KeyboardInterrupt) as exc:
        release.error = exc.message if isinstance(exc, DeployError) else "interrupted"
        with contextlib.suppress(DeployError):  # the release's error is the one to show
            post(settings, runner, DEPLOY_FAILED, release)
        raise


SAMPLE_WHEN = {
    PRE_BUILD: "before `inv deploy`/`inv build` builds the image, before any SSH connection; "
               "a non-zero exit stops it",
    PRE_DEPLOY: "after the checks, under the deploy lock, before anything changes on a VM; "
                "a non-zero exit stops the deploy with the VMs as they were",
    POST_DEPLOY: "after every host serves the release healthy; a non-zero exit is reported "
                 "and recorded in the release history, nothing is rolled back",
    POST_ROLLBACK: "after `fab rollback` put a release back (reported and recorded if it fails)",
    DEPLOY_FAILED: "when a deploy or promote stopped with an error (RELEASE_ERROR)",
}


def sample(name: str) -> str:
    """A commented sample of hook `name`, as `deploy-init` writes it (`NAME.sample`, not
    executable: rename it to NAME and `chmod +x` it to use it)."""
    return (
        "#!/bin/sh\n"
        f"# The {name} hook: runs on the laptop, in the app repo, {SAMPLE_WHEN[name]}.\n"
        f"# To use it: mv {name}.sample {name} && chmod +x {name}\n"
        "# What it is told (RELEASE_*, never DEPLOY_*: those are the settings' overrides):\n"
        "#   RELEASE_ACTION (deploy, promote, rollback, build), RELEASE_IMAGE, RELEASE_TAG,\n"
        "#   RELEASE_DIGEST, RELEASE_HOSTS (comma-separated), RELEASE_DESTINATION,\n"
        "#   RELEASE_PERFORMER (user@laptop), RELEASE_MESSAGE, RELEASE_PREVIOUS_TAG,\n"
        "#   RELEASE_GIT_SHA, RELEASE_REVISION (Alembic, after), RELEASE_ERROR, RELEASE_RUNTIME\n"
        "set -eu\n"
        f'# echo "{name}: $RELEASE_TAG to $RELEASE_HOSTS by $RELEASE_PERFORMER"\n'
    )


def write_samples(root: Path, relative: str = Settings.hooks_dir) -> list[Path]:
    """Write NAME.sample for each hook that has neither a sample nor a hook yet."""
    directory = root / relative
    written = []
    for name in NAMES:
        path = directory / f"{name}.sample"
        if path.exists() or (directory / name).exists():
            continue
        directory.mkdir(parents=True, exist_ok=True)
        path.write_text(sample(name))
        path.chmod(0o644)
        written.append(path)
    return written
