"""`fab restore` takes back only what the tool made for this app, saves the live database
first (so a restore is undone by another), and says what a signal or a kill left: the
restore findings of the "nothing lost, nothing hijacked" campaign, on the sandbox VM vm1.

SQLite runs on the embedded example (example/), Postgres on example-postgres/.
"""

from __future__ import annotations

import json
import os
import re
import signal
import stat

import pytest
from conftest import assert_no_traceback
from faultkit import on_vm, processes, start_fab, stop_all, wait_until
from test_postgres import db_container, pg_app, rows  # noqa: F401 (fixtures)
from vmkit import App, output

SLOW = {"DEPLOY_HEALTH_TIMEOUT": "180"}  # the machine is shared: health may take a while


@pytest.fixture
def live(make_app, images):
    """conftest's `live` (v1 deployed), with a patient health check."""
    app = make_app()
    app.env.update(SLOW)
    app.fab_ok("setup")
    app.deploy(images.v1)
    return app


def restores(app: App) -> list[dict]:
    return [e for e in app.history() if e.get("kind") == "restore"]


def refused(app: App, *args: str) -> str:
    """`fab restore ARGS` exits 1 with error and fix, and the app kept serving its data."""
    names, backups, done = app.item_names(), app.backups(), restores(app)
    proc = app.fab("restore", *args)
    out = output(proc)
    assert proc.returncode == 1, out
    assert_no_traceback(proc)
    assert re.search(r"^error: refusing to restore backups/\S+: .*nothing was changed", out,
                     re.M), out
    assert re.search(r"^  fix: ", out, re.M), out
    assert " stop " not in out and "· stop" not in out, out  # refused before the app stopped
    assert app.wait_http("/health", timeout=5) == 200
    assert app.item_names() == names
    assert app.backups() == backups  # nothing saved, nothing removed
    assert restores(app) == done
    assert not app.vm(".deploy/lock").exists()
    return out


def manifest(app: App, name: str) -> dict:
    return json.loads(app.vm(f"backups/{name}.json").read_text())


def test_sqlite_restore_takes_back_only_its_own_backups_and_saves_the_live_database_first(
        live, images):
    app = live
    app.post_item("before v2")
    app.deploy(images.v2)
    [taken] = [n for n in app.backups() if n.endswith(".sqlite3")]
    app.post_item("after the backup")

    # The backup's manifest: this app, its kind, the revision and tag, size and checksum.
    info = manifest(app, taken)
    data = app.vm(f"backups/{taken}").read_bytes()
    assert (info["project"], info["database"], info["revision"], info["tag"], info["size"]) \
        == (app.project, "sqlite", "0001", images.v2, len(data)), info
    assert re.fullmatch(r"[0-9a-f]{64}", info["sha256"]), info
    assert stat.S_IMODE(os.stat(app.vm(f"backups/{taken}.json")).st_mode) == 0o600
    # the manifest is no backup of its own
    assert [line.split()[0] for line in app.fab_ok("backups").splitlines()] == [taken]

    # 20 KB of random bytes: no manifest; not even --force-unverified takes it.
    app.vm("backups/20990101T000000Z-random.sqlite3").write_bytes(os.urandom(20_000))
    out = refused(app, "--backup=20990101T000000Z-random.sqlite3")
    assert "it has no manifest" in out and "--force-unverified" in out, out
    out = refused(app, "--backup=20990101T000000Z-random.sqlite3", "--force-unverified")
    assert "it is not an SQLite database" in out, out

    # A Postgres dump renamed .sqlite3.
    app.vm("backups/20990101T000001Z-pg.sqlite3").write_bytes(b"PGDMP" + os.urandom(2000))
    out = refused(app, "--backup=20990101T000001Z-pg.sqlite3", "--force-unverified")
    assert "it is not an SQLite database" in out, out

    # Another app's backup, its manifest with it.
    other = "20990101T000002Z-other.sqlite3"
    app.vm(f"backups/{other}").write_bytes(data)
    app.vm(f"backups/{other}.json").write_text(json.dumps({**info, "project": "other-app"}))
    out = refused(app, f"--backup={other}")
    assert f"it was made for the app 'other-app', not this one ('{app.project}')" in out, out

    # A manifest of another database kind.
    app.vm(f"backups/{other}.json").write_text(json.dumps({**info, "database": "postgres"}))
    out = refused(app, f"--backup={other}")
    assert "it is a postgres backup; this app's database is sqlite" in out, out

    # The file changed since it was made.
    app.vm(f"backups/{other}").write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    app.vm(f"backups/{other}.json").write_text(json.dumps(info))
    out = refused(app, f"--backup={other}")
    assert "it changed since it was made" in out, out

    # The real one: the live database is saved first, as a backup with its manifest.
    before = set(app.backups())
    out = app.fab_ok("restore", f"--backup={taken}")
    [saved] = [n for n in set(app.backups()) - before if not n.endswith(".json")]
    assert saved.endswith(f"-{images.v2}-pre-restore.sqlite3"), app.backups()
    assert f"save backups/{saved}" in out, out
    assert f"restored {taken}; the database it replaced is saved as {saved}" in out, out
    assert app.item_names() == ["before v2"]
    assert manifest(app, saved)["revision"] == "0002"
    assert f"{saved}  schema 0002, the database `fab restore --backup={taken}` replaced" \
        in app.fab_ok("backups")
    assert restores(app)[-1]["saved"] == saved

    # The restore is undone by restoring that copy: the row written after the backup is back.
    out = app.fab_ok("restore", f"--backup={saved}")
    assert app.item_names() == ["before v2", "after the backup"]
    assert app.wait_http("/health") == 200

    # A backup of a version before manifests: refused, unless --force-unverified.
    os.remove(app.vm(f"backups/{taken}.json"))
    out = refused(app, f"--backup={taken}")
    assert "it has no manifest" in out, out
    out = app.fab_ok("restore", f"--backup={taken}", "--force-unverified")
    assert f"restored {taken}" in out
    assert app.item_names() == ["before v2"]


def test_a_migration_the_database_already_ran_is_said_so_and_a_running_one_is_named(
        live, images):
    app = live
    # The database migrated by hand (or by a deploy cut short whose migration went on): the
    # history still says 0001, the database is at 0002.
    migrated = app.vm_run("env", f"DEPLOY_TAG={images.v2}", "docker", "compose",
                          "--project-name", app.project, "run", "--rm", "-T", "app",
                          "alembic", "upgrade", "head")
    assert migrated.returncode == 0, migrated.stderr
    assert app.db_revision() == "0002"
    out = app.deploy(images.v2)
    assert "migrate already at 0002" in out, out
    assert "0001→0002" not in out, out
    assert manifest(app, app.backups()[0])["revision"] == "0002"  # read from the database
    assert app.history()[-1]["migrated"] is False

    # A one-off container of the app (what a deploy's migration runs in) is named by status.
    started = app.vm_compose("run", "-d", "app", "sleep", "60")
    assert started.returncode == 0, started.stderr
    oneoff = started.stdout.strip()[:12]
    try:
        status = app.fab_ok("status")
        assert re.search(rf"^revision: .*a migration is running in {oneoff}", status, re.M), \
            status
    finally:
        app.vm_docker("rm", "-f", started.stdout.strip())


def test_a_busy_sqlite_database_is_named_not_blamed_on_the_migration(live, images):
    app = live
    [container] = app.containers(service="app")
    hold = ("import sqlite3, time; c = sqlite3.connect('/data/app.db', isolation_level=None); "
            "c.execute('BEGIN EXCLUSIVE'); print('locked', flush=True); time.sleep(60)")
    app.vm_docker("exec", "-d", container, "python", "-c", hold)
    wait_until(lambda: processes("BEGIN EXCLUSIVE"), 30, 0.2, "the writer")
    try:
        proc = app.fab("deploy", f"--tag={images.v2}")
        out = output(proc)
        assert proc.returncode == 1, out
        assert_no_traceback(proc)
        assert "the SQLite database data/app.db was busy (`database is locked`" in out, out
        assert "fix the migration" not in out, out
        assert re.search(r"^  fix: stop the process writing to it", out, re.M), out
        assert "database is locked" in out.split("was busy", 1)[1]  # its own error, shown
    finally:
        for pid in processes("BEGIN EXCLUSIVE"):
            os.kill(pid, signal.SIGKILL)
    assert app.version() == {"version": "1", "revision": "0001"}


def test_postgres_restore_survives_sigterm_and_sigkill(pg_app, pg_images):  # noqa: F811
    app = pg_app
    app.env.update(SLOW)
    v1, v2 = pg_images.v1, pg_images.v2
    app.fab_ok("setup")
    app.deploy(v1)
    app.post_item("first", embedding=[1, 2, 3])
    app.deploy(v2)
    [pre_v2] = [n for n in app.backups() if n.endswith(f"-{v2}.dump")]
    app.post_item("second", embedding=[0, 0, 1])
    both = [r[1] for r in rows(app)]
    assert both == ["first", "second"]
    try:
        # SIGTERM while the live database is saved: nothing changed, the app is started again.
        run = start_fab(app, "restore", f"--backup={pre_v2}")
        run.when(lambda: on_vm(app.machine, "-pre-restore.dump", app.app_dir),
                 lambda: run.signal(signal.SIGTERM), "the save of the live database",
                 interval=0.005)
        code, out = run.wait()
        assert code == 143, out
        assert re.search(r"^error: interrupted \(SIGTERM\)\nthe restore of \S+ stopped before "
                         r"the database changed: it is as it was; app was started again", out,
                         re.M), out
        assert re.search(r"^  fix: run `fab restore --backup=", out, re.M), out
        assert app.wait_http("/health", timeout=60) == 200
        assert [r[1] for r in rows(app)] == both
        assert restores(app) == []

        # SIGTERM during the data step: it is finished and recorded, the app started again.
        run = start_fab(app, "restore", f"--backup={pre_v2}")
        run.when(lambda: on_vm(app.machine, "restore-postgres", app.app_dir),
                 lambda: run.signal(signal.SIGTERM), "the data step", interval=0.005)
        code, out = run.wait()
        assert code == 143, out
        assert f"error: interrupted (SIGTERM) during the restore of {pre_v2}: it was finished " \
            "and recorded; app was started again" in out, out
        assert re.search(r"^  fix: `fab status` shows it; `fab restore --backup=\S+-pre-restore"
                         r"\.dump` puts back the database it replaced", out, re.M), out
        assert [r[1] for r in rows(app)] == ["first"]
        [record] = restores(app)
        assert (record["backup"], record["cut_short"]) == (pre_v2, True), record
        assert app.wait_http("/health", timeout=60) == 200
        assert not app.vm(".deploy/lock").exists()

        # SIGKILL during the data step (of the undo: the copy saved before that restore): the
        # helper on the VM finishes it; the next command finds it and records it.
        saved = record["saved"]
        run = start_fab(app, "restore", f"--backup={saved}")
        run.when(lambda: app.vm(".deploy/restore.pid").exists(),  # the helper's data step
                 lambda: run.signal(signal.SIGKILL), "the data step", interval=0.005)
        run.wait()
        wait_until(lambda: not processes("restore-postgres", app.app_dir), 60, 0.2,
                   "the restore on the VM to end")
        assert len(restores(app)) == 1
        status = app.fab_ok("status")
        assert re.search(rf"warning: `fab restore --backup={saved}` of \S+ by \S+ was cut off "
                         rf"after the database was replaced by {saved}: recorded now", status), \
            status
        assert f"`fab rollback --tag={v2}` starts it" in status, status
        assert [r[1] for r in rows(app)] == both
        assert len(restores(app)) == 2 and restores(app)[-1]["cut_off"] is True
        assert restores(app)[-1]["backup"] == saved
        assert "cut off" not in app.fab_ok("status")  # recorded once
    finally:
        stop_all()


def test_a_deploy_that_fails_at_migrate_leaves_the_postgres_container_alone(
        pg_app, pg_images):  # noqa: F811
    """The app's env changed since the database container was made (`.env` is its env_file
    too): a deploy whose migration fails must neither restart nor recreate the database under
    the release that keeps serving."""
    app = pg_app
    app.env.update(SLOW)
    v1, v2 = pg_images.v1, pg_images.v2
    app.fab_ok("setup")
    app.deploy(v1)
    app.post_item("kept", embedding=[1, 1, 1])
    before = db_container(app)
    with open(app.repo / ".env", "a") as env:
        env.write("EXTRA_NOTE=changed\n")
    app.fab_ok("setup")
    proc = app.fab("deploy", f"--tag={v2}",
                   env={"DEPLOY_MIGRATE_COMMAND": "echo the migration fails >&2; exit 3"})
    out = output(proc)
    assert proc.returncode == 1, out
    assert "the migration fails" in out, out
    assert db_container(app) == before, out  # same container, not restarted
    assert app.version()["version"] == "1"
    assert [r[1] for r in rows(app)] == ["kept"]
