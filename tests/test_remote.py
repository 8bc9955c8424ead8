"""The remote half end to end, against the real sandbox: sshd as the VM, the registry, the
Docker engine and the app's SQLite database on the VM.

`fab` and `inv` run as subprocesses in a git copy of the example app, as a user runs them.
Each test gets its own app directory on the VM (/srv/t-<random>), its own APP_PORT and compose
project; the images (v1, v2, a broken migration, an app that never turns healthy) are built and
pushed once per session under a unique name.
"""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REGISTRY, assert_no_traceback, child_env, git
from dotenv import dotenv_values
from vmkit import (
    delete_from_registry,
    docker,
    output,
    registry_tags,
    remove_local_images,
    unique,
)

from deploy.release import sequence
from deploy.vm import session, steps

HEALTH_TIMEOUT = {"DEPLOY_HEALTH_TIMEOUT": "15"}


# Fixtures (sandbox, images, sshd, make_app, app, live) live in conftest.py, shared with
# tests/test_faults.py.


def failed(proc: subprocess.CompletedProcess[str]) -> str:
    """The output of a command that must have failed cleanly (exit 1, no traceback)."""
    assert proc.returncode == 1, f"expected exit 1, got {proc.returncode}:\n{output(proc)}"
    assert_no_traceback(proc)
    return output(proc)


def current_line(releases_output: str) -> str:
    marked = [line for line in releases_output.splitlines() if line.startswith("* ")]
    assert len(marked) == 1, releases_output
    return marked[0]


# --------------------------------------------------------------------------- 1, 13: v1 -> v2


def test_v2_migrates_and_keeps_rows_written_under_v1_over_one_ssh_connection(
        live, images, sshd):
    live.post_item("written under v1")
    live.post_item("also v1")
    assert live.item_names() == ["written under v1", "also v1"]

    out, logins, lines = sshd.measure(lambda: live.deploy(images.v2), "logins", 1)
    assert logins == 1, "one fab deploy should log in to the VM once:\n" + "\n".join(lines)
    assert f"done: {images.ref(images.v2)} on " in out

    assert live.version() == {"version": "2", "revision": "0002"}
    items = live.get_json("/items")
    assert [i["name"] for i in items] == ["written under v1", "also v1"]
    assert all("note" in i and i["note"] is None for i in items)
    columns = [c["name"] for c in live.db("PRAGMA table_info(items)")]
    assert "note" in columns
    assert live.db_revision() == "0002"
    assert live.post_item("v2 item", note="with a note")["note"] == "with a note"

    history = live.history()
    assert [(e["tag"], e["action"], e["revision"]) for e in history][:2] == [
        (images.v1, "deploy", "0001"), (images.v2, "deploy", "0002")]
    assert history[1]["previous"] == images.v1
    assert history[1]["digest"].startswith("sha256:")
    assert live.release_env()["DEPLOY_TAG"] == images.v2
    assert live.serving_image() == images.ref(images.v2)


# --------------------------------------------------------------------------- 2: rollback


def test_rollback_to_the_previous_release_warns_about_the_schema_and_keeps_data(live, images):
    live.post_item("from v1")
    live.deploy(images.v2)
    live.post_item("from v2", note="kept")

    out = live.fab_ok("rollback")  # no --tag: the release before the current one
    assert f"rolled back to {images.v1}" in out
    assert "warning" in out and "0001" in out and "0002" in out and "--downgrade" in out
    assert live.version() == {"version": "1", "revision": "0002"}  # v1 code, schema untouched
    assert [i["name"] for i in live.get_json("/items")] == ["from v1", "from v2"]
    # v1's own alembic cannot name 0002 (its migrations end at 0001): status still reads it
    status = live.fab_ok("status")
    assert re.search(r"^revision:\s+0002$", status, re.M) and "warning" not in status, status
    assert live.release_env()["DEPLOY_TAG"] == images.v1
    assert live.serving_image() == images.ref(images.v1)
    last = live.history()[-1]
    assert (last["tag"], last["action"], last["previous"]) == (images.v1, "rollback", images.v2)

    releases = live.fab_ok("releases")
    current = current_line(releases)
    assert images.v1 in current and "rollback" in current
    assert releases.strip().splitlines()[-1] == current  # the newest line is the current one

    live.fab_ok("rollback", f"--tag={images.v2}")  # forward again: the note is still there
    assert live.version() == {"version": "2", "revision": "0002"}
    assert [i.get("note") for i in live.get_json("/items")] == [None, "kept"]

    out = live.fab_ok("rollback", f"--tag={images.v1}")
    # v1 was deployed at schema 0001: an earlier rollback (which recorded the database's 0002)
    # must not make us forget it.
    assert "warning" in out and "0001" in out, out
    assert live.version() == {"version": "1", "revision": "0002"}
    assert current_line(live.fab_ok("releases")).split()[2] == images.v1

    # The data from before v2's migration, restored under v1 (which ran on it): v1 stays, and
    # the copy of the database it replaced names its schema, so undoing it keeps v1 too.
    before_v2 = next(b for b in live.backups() if images.v2 in b)
    out = live.fab_ok("restore", f"--backup={before_v2}")
    assert f"restored {before_v2}" in out and "serves now" not in out, out
    assert live.version() == {"version": "1", "revision": "0001"}
    status = live.fab_ok("status")
    assert re.search(r"^revision:\s+0001$", status, re.M) and "warning" not in status, status
    saved = re.search(r"the database it replaced is saved as (\S+)", out).group(1)
    assert re.search(rf"^{re.escape(saved)}\s+schema 0002,", live.fab_ok("backups"), re.M)
    out = live.fab_ok("restore", f"--backup={saved}")
    assert "serves now" not in out, out
    assert live.version() == {"version": "1", "revision": "0002"}
    assert [i["name"] for i in live.get_json("/items")] == ["from v1", "from v2"]


def test_rollback_with_downgrade_takes_the_schema_back(live, images):
    live.post_item("kept across the downgrade")
    live.deploy(images.v2)

    out = live.fab_ok("rollback", f"--tag={images.v1}", "--downgrade")
    assert "downgrading the schema 0002 -> 0001" in out
    assert "warning" not in out
    assert live.version() == {"version": "1", "revision": "0001"}
    assert live.db_revision() == "0001"
    assert "note" not in [c["name"] for c in live.db("PRAGMA table_info(items)")]
    assert live.item_names() == ["kept across the downgrade"]
    last = live.history()[-1]
    assert (last["tag"], last["action"], last["revision"]) == (images.v1, "rollback", "0001")


def test_data_restored_from_before_a_migration_is_named_and_a_redeploy_migrates_it(
        live, images):
    live.post_item("under v1")
    live.deploy(images.v2)
    (before,) = [n for n in live.backups() if n.endswith(".sqlite3")]  # taken at 0001
    # Without its manifest nothing says which schema the backup holds: v2 keeps serving
    # (a backup with one puts back the release on its schema: test_restore_release.py).
    os.remove(live.vm(f"backups/{before}.json"))
    live.fab_ok("restore", f"--backup={before}", "--force-unverified")
    assert live.db_revision() == "0001"  # v2's code on v1's schema
    status = live.fab_ok("status")
    assert f"warning: the database is at revision 0001, but {images.v2} was released on " \
        "0002" in status, status
    assert f"`fab rollback --tag={images.v1}`" in status

    live.deploy(images.v2)  # what the fix says: the migration runs over the restored data
    assert live.version() == {"version": "2", "revision": "0002"}
    assert live.item_names() == ["under v1"]
    assert "warning" not in live.fab_ok("status")


# --------------------------------------------------------------------------- 3: migration fails


def test_a_failing_migration_leaves_the_old_version_serving(live, images):
    live.post_item("before the broken release")
    before = live.snapshot()

    out = failed(live.fab("deploy", f"--tag={images.broken}"))
    assert f"migration with {images.broken} failed" in out
    assert "the previous version is still serving" in out
    assert "no_such_function" in out  # the migration's own error is shown

    assert live.version() == {"version": "1", "revision": "0001"}
    assert live.serving_image() == images.ref(images.v1)
    assert live.item_names() == ["before the broken release"]
    assert not live.vm(".deploy/lock").exists()
    after = live.snapshot()
    for name in (".env", ".deploy/history.jsonl", "lock"):
        assert after[name] == before[name], name
    assert len(live.backups()) == 1  # the backup taken just before the migration


# --------------------------------------------------------------------------- 4: health fails


def test_an_unhealthy_release_is_switched_back_automatically(live, images):
    out = failed(live.fab("deploy", f"--tag={images.unhealthy}", env=HEALTH_TIMEOUT))
    assert f"{images.unhealthy} did not turn healthy" in out
    assert f"switched back to {images.v1}" in out
    assert live.serving_image() == images.ref(images.v1)
    assert live.wait_http("/health") == 200
    assert live.version()["version"] == "1"
    assert not live.vm(".deploy/lock").exists()
    assert live.release_env()["DEPLOY_TAG"] == images.v1
    assert [e["tag"] for e in live.history()] == [images.v1]


def test_an_unhealthy_release_is_left_running_when_rollback_on_failure_is_off(live, images):
    env = {**HEALTH_TIMEOUT, "DEPLOY_ROLLBACK_ON_FAILURE": "false"}
    out = failed(live.fab("deploy", f"--tag={images.unhealthy}", env=env))
    assert f"{images.unhealthy} did not turn healthy" in out
    assert "no switch back (rollback_on_failure is off)" in out
    assert "switched back" not in out
    assert live.serving_image() == images.ref(images.unhealthy)
    assert live.get("/health")[0] == 503
    assert not live.vm(".deploy/lock").exists()

    # The fix the message gives puts v1 back.
    fix = next(line for line in out.splitlines() if "fix:" in line)
    command = re.search(r"`fab (rollback[^`]*)`", fix)
    assert command, fix
    live.fab_ok(*command.group(1).split())
    assert live.serving_image() == images.ref(images.v1)
    assert live.version()["version"] == "1"


# --------------------------------------------------------------------------- 5: the lock


def test_a_held_lock_refuses_a_deploy_until_unlocked(live, images):
    lock = live.vm(".deploy/lock")
    lock.mkdir()
    holder = {"holder": "alice@laptop", "time": "2030-01-01T00:00:00Z", "tag": "abc1234",
              "action": "deploy", "message": "big migration"}
    (lock / "holder.json").write_text(json.dumps(holder) + "\n")
    before = live.snapshot()

    out = failed(live.fab("deploy", f"--tag={images.v2}"))
    assert "locked by another deploy" in out
    assert "alice@laptop" in out and "deploy of abc1234" in out and "big migration" in out
    assert "fab unlock" in out
    assert live.snapshot() == before  # the other deploy's lock is left alone
    assert json.loads((lock / "holder.json").read_text()) == holder
    assert live.version()["version"] == "1"

    status = live.fab_ok("status")
    assert re.search(r"^lock:\s+alice@laptop", status, re.M), status

    out = live.fab_ok("unlock")
    assert "cleared the lock held by alice@laptop" in out
    assert not lock.exists()
    assert "the lock is free" in live.fab_ok("unlock")

    live.deploy(images.v2)
    assert live.version()["version"] == "2"


@pytest.mark.parametrize("moment", ["lock", "switch"])
def test_ctrl_c_during_a_deploy_releases_the_lock(live, images, moment):
    """Ctrl-C as soon as the deploy holds the lock, or once the new container exists: exit 130,
    the lock released, v1 serving."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "fabric", "deploy", f"--tag={images.v2}"], cwd=live.repo,
        env=child_env(live.env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lock = live.vm(".deploy/lock")
    new_container = ["ps", "-q", "--filter", f"label=com.docker.compose.project={live.project}",
                     "--filter", "label=com.docker.compose.oneoff=False",
                     "--filter", f"ancestor={images.ref(images.v2)}"]

    def reached() -> bool:
        if moment == "lock":
            return lock.exists()
        return bool(live.vm_docker(*new_container).stdout.strip())

    try:
        while not reached() and proc.poll() is None:
            time.sleep(0.005)
        proc.send_signal(signal.SIGINT)
        out = proc.communicate(timeout=180)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out
    assert "interrupted" in out and "Traceback" not in out, out
    assert not lock.exists(), out
    assert live.release_env()["DEPLOY_TAG"] == images.v1
    assert live.wait_http("/health") == 200
    assert live.version()["version"] == "1"
    assert [e["tag"] for e in live.history()] == [images.v1]
    if moment == "switch":
        assert f"switched back to {images.v1}" in out, out


def test_an_unexpected_exception_mid_deploy_releases_the_lock(live, images, monkeypatch):
    def boom(self, tag, previous="", **kwargs):
        assert live.vm(".deploy/lock/holder.json").exists()
        raise RuntimeError("a bug in the middle of the deploy")

    monkeypatch.setattr(steps.Vm, "backup", boom)
    settings = live.settings()
    with session.session(settings, session.targets(settings)[0]) as vm:
        with pytest.raises(RuntimeError):
            sequence.deploy_host(vm, images.v2)
    assert not live.vm(".deploy/lock").exists()
    assert live.release_env()["DEPLOY_TAG"] == images.v1
    assert live.version()["version"] == "1"


# --------------------------------------------------------------------------- 6: host keys


def test_an_unknown_host_key_is_refused_and_nothing_runs(app, images, sshd, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    env = {"DEPLOY_KNOWN_HOSTS": str(empty)}
    for args in (["setup"], ["deploy", f"--tag={images.v1}"], ["status"]):
        proc, logins, lines = sshd.measure(lambda args=args: app.fab(*args, env=env),
                                           "logins", 0)
        out = failed(proc)
        assert "is unknown" in out, out
        assert "refusing" in out
        target = app.settings()
        assert f"ssh-keyscan -p {target.port} {target.host} >> {empty}" in out
        assert logins == 0, "\n".join(lines)
    assert not app.vm().exists()


def test_a_changed_host_key_is_refused(app, images, sshd, tmp_path):
    key = tmp_path / "other_host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    keytype, blob = key.with_suffix(".pub").read_text().split()[:2]
    target = app.settings()
    name = target.host if target.port == 22 else f"[{target.host}]:{target.port}"
    known = tmp_path / "known_hosts"
    known.write_text(f"{name} {keytype} {blob}\n")

    proc, logins, lines = sshd.measure(
        lambda: app.fab("deploy", f"--tag={images.v1}", env={"DEPLOY_KNOWN_HOSTS": str(known)}),
        "logins", 0)
    out = failed(proc)
    assert "CHANGED" in out and "refusing" in out
    assert str(known) in out  # where to remove the old line
    assert logins == 0, "\n".join(lines)
    assert not app.vm().exists()


# --------------------------------------------------------------------------- 7, 8: bad tags


@pytest.mark.parametrize("task", ["deploy", "rollback"])
@pytest.mark.parametrize("template", [
    "x;touch {marker}", "$(touch {marker})", "`touch {marker}`", "a b", "x&&touch {marker}",
    "x|touch {marker}", "x\ntouch {marker}",
])
def test_a_tag_with_shell_metacharacters_is_refused_before_ssh(app, sshd, task, template):
    marker = Path(f"/tmp/pwned-{unique('')}")
    tag = template.format(marker=marker)
    proc, connections, lines = sshd.measure(lambda: app.fab(task, f"--tag={tag}"),
                                            "connections", 0)
    out = failed(proc)
    assert "is not a valid Docker tag" in out
    assert connections == 0, "\n".join(lines)
    assert not marker.exists()
    assert not app.vm().exists()


def test_a_tag_missing_from_the_registry_is_refused_before_the_vm_changes(live, images, sshd):
    before = live.snapshot()
    missing = unique("missing-")
    proc, connections, lines = sshd.measure(lambda: live.fab("deploy", f"--tag={missing}"),
                                            "connections", 0)
    out = failed(proc)
    assert f"{images.image}:{missing} is not in the registry" in out
    assert "push it first" in out
    assert connections == 0, "\n".join(lines)
    assert live.snapshot() == before
    assert live.serving_image() == images.ref(images.v1)


# --------------------------------------------------------------------------- 9: dry runs

REMOTE_STEPS = [
    ("lock", "lock-acquire"),
    ("pull", "docker pull"),
    ("backup", "backup-sqlite"),
    ("migrate", "alembic upgrade head"),
    ("up", " up -d"),
    ("health", "health-state"),
]


def step_order(out: str, steps: list[tuple[str, str]]) -> list[str]:
    """The steps in the order their first command appears in `out`."""
    lines = out.splitlines()
    found = {}
    for name, needle in steps:
        hits = [i for i, line in enumerate(lines) if needle in line]
        assert hits, f"no {name} step ({needle!r}) in:\n{out}"
        found[name] = hits[0]
    return sorted(found, key=found.get)


def test_fab_deploy_dry_run_prints_the_remote_steps_and_touches_nothing(live, images, sshd):
    before = live.snapshot()
    proc, connections, lines = sshd.measure(
        lambda: live.fab("deploy", f"--tag={images.v2}", "--dry-run"), "connections", 0)
    out = output(proc)
    assert proc.returncode == 0, out
    assert step_order(out, REMOTE_STEPS) == [name for name, _ in REMOTE_STEPS]
    assert f"DEPLOY_TAG={images.v2}" in out
    # the shell enters app_dir once; no command carries a `cd ... &&` prefix
    assert out.count(f"$ cd {live.app_dir}") == 1 and f"cd {live.app_dir} &&" not in out
    assert connections == 0, "\n".join(lines)
    assert live.snapshot() == before
    assert live.serving_image() == images.ref(images.v1)


def test_inv_deploy_dry_run_prints_every_step_and_pushes_nothing(live, images, sshd):
    tag = git(live.repo, "rev-parse", "--short=7", "HEAD")
    tags_before = registry_tags(images.name)
    before = live.snapshot()
    proc, connections, lines = sshd.measure(lambda: live.inv("deploy", "--dry-run"),
                                            "connections", 0)
    out = output(proc)
    assert proc.returncode == 0, out
    # The VM's lock is taken right after the checks and held through build and push.
    steps = [("check", "== check"), REMOTE_STEPS[0], ("test", "-m pytest"),
             ("build", "buildx build"), ("smoke", "docker run"), ("push", "docker push"),
             *REMOTE_STEPS[1:]]
    assert step_order(out, steps) == [name for name, _ in steps]
    assert f"{images.image}:{tag}" in out
    assert connections == 0, "\n".join(lines)
    assert live.snapshot() == before
    assert registry_tags(images.name) == tags_before
    assert docker("image", "inspect", f"{images.image}:{tag}").returncode != 0  # nothing built


# --------------------------------------------------------------------------- round trips

# What a redeploy of the serving release sends, in order (a poll repeated back to back counted
# once): one question for the checks, one write-and-render, one record. A command added to
# this path, or one asked twice, shows here.
REDEPLOY_COMMANDS = [
    "install-helper", "lock-acquire", "lock-log-unseen", "restore-state",
    "facts",  # the check phase's questions and the room for the image, side by side
    "release-files",  # the release files written if changed, the compose file rendered
    "docker pull", "docker image inspect",  # pull
    "lock-check", "disk-free", "file-size",  # room for the backup (the database's size)
    "backup-sqlite", "write-file",  # backup (its manifest)
    "lock-check", "compose run",  # migrate
    "lock-check", "compose up", "health-state-wait", "http-status",  # switch
    "lock-check", "record", "list-backups",  # record, old backups pruned
    "prune-containers",  # the prune phase: no image can go (the facts' list says), none asked
    "lock-release-if",
]
POLLS = {"http-status"}


def command_kind(command: str) -> str:
    """A short name for a command `fab -v` printed: the helper's subcommand, else its verb."""
    words = command.split()
    if words[:2] == ["sh", "-c"]:
        return "install-helper"
    if len(words) > 3 and words[0] == "sh" and "/helper-" in words[1] and words[2] == "to-end":
        return command_kind(" ".join(words[3:]))  # the command it runs to its end
    if len(words) > 2 and words[0] == "sh" and "/helper-" in words[1]:
        return words[2]
    if words[0] == "docker" and words[1] != "compose":
        return " ".join(words[:3] if words[1] == "image" else words[:2])
    verb = next((w for w in words if w in ("run", "up", "config", "exec", "ps")), words[0])
    return f"compose {verb}"


def test_a_redeploy_sends_each_question_once(live, images):
    out = live.fab_ok("deploy", "-v", f"--tag={images.v1}")
    sent = [command_kind(m.group(1)) for m in re.finditer(r"^\[[^]]+\] \$ (.+)$", out, re.M)]
    collapsed = [k for i, k in enumerate(sent) if not (k in POLLS and sent[i - 1] == k)]
    assert collapsed == REDEPLOY_COMMANDS, "\n".join(sent)
    assert "cat app.env" not in out  # app.env's values stay on the VM


# --------------------------------------------------------------------------- 10: inspection


def test_status_releases_logs_and_exec(live, images):
    status = live.fab_ok("status")
    assert re.search(rf"^release:\s+{images.v1}$", status, re.M), status
    assert re.search(r"^health:\s+healthy$", status, re.M), status
    assert re.search(r"^revision:\s+0001$", status, re.M), status
    assert re.search(r"^lock:\s+free$", status, re.M), status
    assert f"{live.project}-app-1" in status  # compose ps

    releases = live.fab_ok("releases")
    assert images.v1 in current_line(releases) and "rev=0001" in releases

    live.get_json("/version")  # a request, so that the log has an access line
    logs = live.fab_ok("logs", "--tail", "5")
    plain = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", logs)  # compose v2 erases lines even so
    app_lines = [line for line in plain.splitlines() if re.match(r"\S*app[-_]1\s+\|", line)]
    assert 1 <= len(app_lines) <= 5, logs
    assert any("GET /" in line for line in app_lines), logs

    assert "app.db" in live.fab_ok("exec", "--cmd", "ls /data")
    proc = live.fab("exec", "--cmd", "exit 3")
    assert proc.returncode == 3, output(proc)
    assert_no_traceback(proc)


# --------------------------------------------------------------------------- 11: setup, .env


def test_setup_uploads_a_private_env_and_a_plain_compose_up_brings_the_release_back(
        app, images):
    out = app.fab_ok("setup")
    assert f"ready: {app.app_dir}" in out
    app_env = app.vm("app.env")
    assert stat.S_IMODE(app_env.stat().st_mode) == 0o600
    assert app.release_env("app.env") == dotenv_values(app.repo / ".env", interpolate=False)
    assert app.vm("compose.yaml").read_text() == (app.repo / "compose.yaml").read_text()
    assert "DEPLOY_TAG" not in app.release_env()

    app.deploy(images.v1)
    app.post_item("survives a plain compose restart")
    app.deploy(images.v2)
    env = app.release_env()
    assert stat.S_IMODE(app.vm(".env").stat().st_mode) == 0o600
    assert (env["DEPLOY_IMAGE"], env["DEPLOY_TAG"]) == (images.image, images.v2)
    assert env["APP_SECRET"] == "test-secret" and env["APP_PORT"] == str(app.port)

    # What a reboot or an admin does: compose alone, no DEPLOY_* in the environment.
    plain = ["env", "-i", f"PATH={os.environ['PATH']}", "HOME=/root"]
    for args in (["down"], ["up", "-d"]):
        proc = app.vm_run(*plain, "docker", "compose", "--project-name", app.project, *args)
        assert proc.returncode == 0, output(proc)
    assert app.wait_http("/health") == 200
    assert app.version() == {"version": "2", "revision": "0002"}
    assert app.serving_image() == images.ref(images.v2)
    assert app.item_names() == ["survives a plain compose restart"]


# --------------------------------------------------------------------------- 12: compose v1


def test_the_same_deploy_works_with_compose_v1(app, images):
    env = {"DEPLOY_COMPOSE_COMMAND": "v1"}
    app.fab_ok("setup", env=env)
    out = app.fab_ok("deploy", f"--tag={images.v1}", "--verbose", env=env)  # the commands
    assert "docker-compose --file compose.yaml" in out
    assert "docker compose " not in out
    app.post_item("under compose v1")
    out = app.deploy(images.v2, env=env)
    assert "--wait" not in out
    assert app.version() == {"version": "2", "revision": "0002"}
    assert app.item_names() == ["under compose v1"]
    names = app.vm_docker("ps", "--format", "{{.Names}}", "--filter",
                   f"label=com.docker.compose.project={app.project}").stdout.split()
    assert names == [f"{app.project}_app_1"]  # compose v1 naming: it was docker-compose's doing
    status = app.fab_ok("status", env=env)
    assert re.search(r"^health:\s+healthy$", status, re.M), status
    assert f"rolled back to {images.v1}" in app.fab_ok("rollback", env=env)
    assert app.version() == {"version": "1", "revision": "0002"}


# --------------------------------------------------------------------------- 14: inv deploy


def test_inv_deploy_end_to_end(make_app, sshd):
    image = f"{REGISTRY}/{unique('rt-inv-')}"
    app = make_app(image=image)
    try:
        app.fab_ok("setup")
        proc = app.inv("deploy")
        out = output(proc)
        assert proc.returncode == 0, out
        assert_no_traceback(proc)
        tag = git(app.repo, "rev-parse", "--short=7", "HEAD")
        host = app.settings().host
        for step in ("check", "test", "build", "smoke", "push", f"remote deploy on {host}"):
            assert re.search(rf"^\[local\] {step} \d+\.\ds$", out, re.M), \
                f"step {step} missing:\n{out}"
        assert f"done: {image}:{tag} on {host} in " in out
        assert not re.search(r"^\[[^]]+\] \$ ", out, re.M), out  # no command lines by default
        assert sorted(registry_tags(image.split("/", 1)[1])) == sorted([tag, "latest"])
        assert app.version() == {"version": "1", "revision": "0001"}
        entry = app.history()[-1]
        assert entry["tag"] == tag and entry["action"] == "deploy"
        assert entry["git_sha"] == git(app.repo, "rev-parse", "HEAD")
        assert app.release_env()["DEPLOY_TAG"] == tag
        assert app.serving_image() == f"{image}:{tag}"

        # Again: the tag is pushed and serving healthy, so nothing is rebuilt or switched.
        proc, logins, lines = sshd.measure(lambda: app.inv("deploy"), "logins", 1)
        out = output(proc)
        assert proc.returncode == 0, out
        assert "nothing to do" in out and "== build" not in out
        assert logins == 1, "\n".join(lines)
        assert len(app.history()) == 1
    finally:
        remove_local_images(image)
        delete_from_registry(image.split("/", 1)[1])


# --------------------------------------------------------------------------- 15: backups


def test_backups_are_taken_listed_pruned_and_restored(live, images):
    keep = {"DEPLOY_KEEP_BACKUPS": "2"}
    assert live.backups() == []  # the first deploy had no database to back up
    assert "no backups yet" in live.fab_ok("backups")
    live.post_item("before the backups")

    taken = []
    for _ in range(4):  # the first migrates to 0002; the others find nothing to migrate
        live.deploy(images.v2, env=keep)
        names = [n for n in live.backups() if n.endswith(".sqlite3")]
        new = sorted(set(names) - set(taken))
        assert len(new) == 1 and new[0].endswith(f"-{images.v2}.sqlite3"), names
        taken += new
        # The newest two, and the one taken before the migration to 0002 (the first).
        assert names == sorted({taken[0], *taken[-2:]}), names
    # The newest two are kept, however old the database file they copied.
    assert live.backups() == [taken[0], *taken[-2:]]
    listed = live.fab_ok("backups").splitlines()
    assert [line.split()[0] for line in listed] == [taken[-1], taken[-2], taken[0]]  # newest
    # each with the schema it holds and the release it was taken before
    assert f"{taken[0]}  schema 0001, before deploying {images.v2}, " in listed[2]
    assert f"{taken[-1]}  schema 0002, before deploying {images.v2}, " in listed[0]

    live.post_item("after the last backup")
    assert live.item_names() == ["before the backups", "after the last backup"]
    out = live.fab_ok("restore", f"--backup={taken[-1]}")
    assert f"restored {taken[-1]}" in out
    assert live.item_names() == ["before the backups"]
    assert live.wait_http("/health") == 200
    assert [i["name"] for i in live.get_json("/items")] == ["before the backups"]
    assert not live.vm(".deploy/lock").exists()
    status = live.fab_ok("status")
    assert re.search(r"^health:\s+healthy$", status, re.M), status

    out = failed(live.fab("restore", "--backup=../data/app.db"))
    assert "is not a backup name" in out
