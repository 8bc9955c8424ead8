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

from conftest import assert_no_traceback
from faultkit import processes, start_fab, stop_all, wait_until
from test_postgres import pg_app, pg_images, rows  # noqa: F401 (fixtures)
from vmkit import App, output


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
    assert app.fab_ok("backups").split() == [taken]  # the manifest is no backup of its own

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
    assert saved in app.fab_ok("backups").split()
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
