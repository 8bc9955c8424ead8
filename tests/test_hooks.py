"""Hooks: the app repo's executables in .deploy/hooks, run on the laptop around a release
(pre-build, pre-deploy, post-deploy, post-rollback, deploy-failed), told about the release in
RELEASE_* variables."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import stat
from pathlib import Path

from conftest import commit_all
from vmkit import docker, output

# A hook that writes its whole environment as JSON to $HOOK_OUT/<name>.json, says so, and
# exits with $HOOK_EXIT_<NAME> (default 0).
HOOK = """#!/bin/sh
name=$(basename "$0")
python3 -c 'import json, os, sys; json.dump(dict(os.environ), open(sys.argv[1], "w"))' \\
    "$HOOK_OUT/$name.json"
echo "hook $name says: tag=$RELEASE_TAG"
code=$(printenv "HOOK_EXIT_$(echo "$name" | tr 'a-z-' 'A-Z_')" || true)
exit "${code:-0}"
"""


def add_hooks(repo: Path, *names: str) -> None:
    directory = repo / ".deploy" / "hooks"
    directory.mkdir(parents=True, exist_ok=True)
    for name in names:
        path = directory / name
        path.write_text(HOOK)
        path.chmod(0o755)


def seen(out: Path, name: str) -> dict[str, str] | None:
    path = out / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def release_vars(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k.startswith("RELEASE_")}


def test_deploy_init_writes_samples_that_do_not_run(tmp_path: Path, example_repo: Path) -> None:
    from deploy.local import init

    for name in ("deploy.toml", "tasks.py"):
        (example_repo / name).unlink(missing_ok=True)
    init.run(example_repo)
    hooks = example_repo / ".deploy" / "hooks"
    samples = sorted(p.name for p in hooks.iterdir())
    assert samples == ["deploy-failed.sample", "post-deploy.sample", "post-rollback.sample",
                       "pre-build.sample", "pre-deploy.sample"]
    for path in hooks.iterdir():
        assert not path.stat().st_mode & (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        assert path.read_text().startswith("#!/bin/sh\n")
        assert "RELEASE_TAG" in path.read_text()


def test_a_failing_pre_build_hook_stops_inv_build_before_building(
        example_repo: Path, tmp_path: Path, inv) -> None:
    add_hooks(example_repo, "pre-build")
    image = f"127.0.0.1:5000/hooks-{os.getpid()}"
    env = {"HOOK_OUT": str(tmp_path), "HOOK_EXIT_PRE_BUILD": "7", "DEPLOY_IMAGE": image}
    proc = inv(example_repo, "build", "--version", "hk1", env=env)
    assert proc.returncode == 1, output(proc)
    assert "hook pre-build says: tag=hk1" in output(proc)
    assert "the pre-build hook exited 7" in proc.stderr
    assert "nothing was built" in proc.stderr
    assert docker("image", "inspect", f"{image}:hk1").returncode != 0
    env_seen = seen(tmp_path, "pre-build")
    assert env_seen is not None
    assert release_vars(env_seen)["RELEASE_TAG"] == "hk1"
    assert env_seen["RELEASE_IMAGE"] == image
    assert env_seen["RELEASE_ACTION"] == "build"


def test_a_hook_that_is_not_executable_is_refused(live, images, tmp_path: Path) -> None:
    add_hooks(live.repo, "pre-deploy")
    (live.repo / ".deploy" / "hooks" / "pre-deploy").chmod(0o644)
    before = live.snapshot()
    proc = live.fab("deploy", f"--tag={images.v2}", env={"HOOK_OUT": str(tmp_path)})
    assert proc.returncode == 1
    assert "pre-deploy hook" in proc.stderr and "not an executable file" in proc.stderr
    assert "chmod +x" in proc.stderr
    assert live.snapshot() == before


def test_fab_deploy_hooks_pre_deploy_fails_then_post_deploy_fails_then_post_rollback(
        live, images, tmp_path: Path) -> None:
    add_hooks(live.repo, "pre-deploy", "post-deploy", "post-rollback", "deploy-failed")
    v1, v2 = images.v1, images.v2
    v1_digest = live.history()[-1]["digest"]

    # pre-deploy fails: the deploy stops after the checks, the VM is as it was
    before = live.snapshot()
    env = {"HOOK_OUT": str(tmp_path), "HOOK_EXIT_PRE_DEPLOY": "4"}
    proc = live.fab("deploy", f"--tag={v2}", "--message", "try v2", env=env)
    assert proc.returncode == 1, output(proc)
    assert f"hook pre-deploy says: tag={v2}" in output(proc)
    assert "the pre-deploy hook exited 4" in proc.stderr
    assert "nothing was changed on any VM" in proc.stderr
    assert live.snapshot() == before  # history, .env, app.env, no lock, backups
    assert live.version()["version"] == "1"
    assert images.ref(v1) == live.serving_image()
    pre = release_vars(seen(tmp_path, "pre-deploy") or {})
    assert pre["RELEASE_HOOK"] == "pre-deploy"
    assert pre["RELEASE_ACTION"] == "deploy"
    assert pre["RELEASE_TAG"] == v2
    assert pre["RELEASE_IMAGE"] == images.image
    assert pre["RELEASE_PREVIOUS_TAG"] == v1
    assert pre["RELEASE_HOSTS"] == live.machine.address
    assert pre["RELEASE_MESSAGE"] == "try v2"
    assert "@" in pre["RELEASE_PERFORMER"]
    assert pre["RELEASE_DESTINATION"] == ""
    assert not any(k.startswith("DEPLOY_HOOK") for k in seen(tmp_path, "pre-deploy") or {})
    failed = release_vars(seen(tmp_path, "deploy-failed") or {})
    assert failed["RELEASE_TAG"] == v2
    assert "the pre-deploy hook exited 4" in failed["RELEASE_ERROR"]
    assert seen(tmp_path, "post-deploy") is None

    # pre-deploy passes, post-deploy fails: v2 stays, the failure is shown and recorded
    (tmp_path / "deploy-failed.json").unlink()
    env = {"HOOK_OUT": str(tmp_path), "HOOK_EXIT_POST_DEPLOY": "3"}
    proc = live.fab("deploy", f"--tag={v2}", env=env)
    assert proc.returncode == 0, output(proc)
    assert f"hook post-deploy says: tag={v2}" in output(proc)
    assert "warning: the post-deploy hook exited 3" in output(proc)
    assert "nothing was rolled back" in output(proc)
    assert live.version()["version"] == "2"
    post = release_vars(seen(tmp_path, "post-deploy") or {})
    release = [e for e in live.history() if e.get("kind") != "hook"][-1]
    assert post["RELEASE_TAG"] == v2 and post["RELEASE_PREVIOUS_TAG"] == v1
    assert post["RELEASE_DIGEST"] == release["digest"] != v1_digest
    assert post["RELEASE_REVISION"] == "0002"
    assert seen(tmp_path, "deploy-failed") is None
    hook_record = live.history()[-1]
    assert (hook_record["kind"], hook_record["hook"], hook_record["tag"]) == \
        ("hook", "post-deploy", v2)
    assert hook_record["message"] == "the post-deploy hook exited 3"
    releases = live.fab_ok("releases")
    assert "hook     the post-deploy hook exited 3" in releases
    current = [line for line in releases.splitlines() if line.startswith("* ")]
    assert len(current) == 1 and v2 in current[0], releases  # v2 is still the current release
    status = live.fab_ok("status")
    assert f"release:   {v2}" in status

    # a rollback ignores the hook record (picks v1) and runs post-rollback
    proc = live.fab("rollback", env={"HOOK_OUT": str(tmp_path)})
    assert proc.returncode == 0, output(proc)
    assert f"hook post-rollback says: tag={v1}" in output(proc)
    back = release_vars(seen(tmp_path, "post-rollback") or {})
    assert back["RELEASE_ACTION"] == "rollback"
    assert back["RELEASE_TAG"] == v1 and back["RELEASE_PREVIOUS_TAG"] == v2
    assert back["RELEASE_DIGEST"] == v1_digest
    assert live.version()["version"] == "1"


def test_inv_deploy_failing_pre_build_opens_no_ssh_connection(live, tmp_path: Path) -> None:
    """The VM's address is a listener of this test's own (the sandbox sshd's log is shared
    with other test runs): any connection attempt would be counted there."""
    add_hooks(live.repo, "pre-build")
    commit_all(live.repo, "hooks")  # the git-clean check comes first
    before = live.snapshot()
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.settimeout(0.2)
        env = {"HOOK_OUT": str(tmp_path), "HOOK_EXIT_PRE_BUILD": "2",
               "DEPLOY_HOST": "127.0.0.1", "DEPLOY_PORT": str(listener.getsockname()[1])}
        proc = live.inv("deploy", "--skip-tests", env=env)
        attempts = 0
        with contextlib.suppress(TimeoutError):
            while True:
                listener.accept()[0].close()
                attempts += 1
    assert proc.returncode == 1, output(proc)
    assert "the pre-build hook exited 2" in proc.stderr
    assert "no VM was contacted" in proc.stderr
    assert attempts == 0
    assert live.snapshot() == before
    pre = release_vars(seen(tmp_path, "pre-build") or {})
    assert pre["RELEASE_ACTION"] == "deploy"
    assert pre["RELEASE_HOSTS"] == "127.0.0.1"
    assert len(pre["RELEASE_GIT_SHA"]) == 40

    # the same deploy with the hook passing does connect there (the listener is no sshd)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        env.update({"HOOK_EXIT_PRE_BUILD": "0", "DEPLOY_PORT": str(listener.getsockname()[1]),
                    "DEPLOY_CONNECT_TIMEOUT": "3"})
        proc = live.inv("deploy", "--skip-tests", env=env)
        listener.settimeout(1)
        listener.accept()[0].close()
    assert proc.returncode == 1, output(proc)


def test_inv_deploy_failing_pre_deploy_changes_nothing_on_the_vm(live, images,
                                                                  tmp_path: Path) -> None:
    from deploy.core.registry import tag_digest

    add_hooks(live.repo, "pre-deploy", "deploy-failed")
    commit_all(live.repo, "hooks")  # the git-clean check comes first
    before = live.snapshot()
    env = {"HOOK_OUT": str(tmp_path), "HOOK_EXIT_PRE_DEPLOY": "5"}
    proc = live.inv("deploy", "--skip-tests", f"--version={images.v2}", env=env)
    assert proc.returncode == 1, output(proc)
    assert "already in the registry: skipping build" in output(proc)
    assert f"hook pre-deploy says: tag={images.v2}" in output(proc)
    assert "the pre-deploy hook exited 5" in proc.stderr
    assert live.snapshot() == before
    assert live.version()["version"] == "1"
    pre = release_vars(seen(tmp_path, "pre-deploy") or {})
    assert (pre["RELEASE_TAG"], pre["RELEASE_PREVIOUS_TAG"]) == (images.v2, images.v1)
    assert pre["RELEASE_DIGEST"] == tag_digest(images.image, images.v2)
    assert pre["RELEASE_HOSTS"] == live.machine.address
    failed = release_vars(seen(tmp_path, "deploy-failed") or {})
    assert "the pre-deploy hook exited 5" in failed["RELEASE_ERROR"]
