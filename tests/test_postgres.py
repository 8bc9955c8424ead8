"""The Postgres example (example-postgres/: pgvector, the database a compose service with its
own volume) through deploy v1 -> v2 -> rollback -> restore on the sandbox VM, rows checked in
the database at each step; and what a failed restore leaves.

The database image is the sandbox's `pgvector/pgvector:pg17` (built from Debian 13 packages).
"""

from __future__ import annotations

import hashlib
import json
import re
import stat
from pathlib import Path

import pytest
from conftest import EXAMPLE_POSTGRES, assert_no_traceback, commit_all
from vmkit import (
    App,
    add_fabfile,
    make_example_repo,
    output,
)

PG_IMAGE = "pgvector/pgvector:pg17"
TRICKY = "pa$$word$HOME x${APP_SECRET}y #hash 'single' \"double\" a=b"


def pg_repo(dest: Path) -> Path:
    repo = make_example_repo(dest, source=EXAMPLE_POSTGRES)
    add_fabfile(repo)
    with open(repo / ".env", "a") as env:
        env.write(f"TRICKY_VALUE='{TRICKY.replace(chr(39), '')}'\n")
    commit_all(repo, "fabfile")
    return repo


@pytest.fixture
def pg_app(tmp_path, pg_images, sandbox):
    image = pg_images.image
    app = App.create(pg_repo(tmp_path / "app"), None, tmp_path / "xdg-cache", sandbox,
                     image=image)
    app.env["DEPLOY_HEALTH_TIMEOUT"] = "60"
    yield app
    app.tear_down()


def rows(app: App) -> list[list[str]]:
    return app.psql("SELECT id, name, embedding::text FROM items ORDER BY id")


def db_container(app: App) -> str:
    ids = app.vm_docker("ps", "-q", "--filter", f"label=com.docker.compose.project={app.project}",
                        "--filter", "label=com.docker.compose.service=db").stdout.split()
    assert len(ids) == 1, ids
    return app.vm_docker("inspect", "--format", "{{.Id}} {{.State.StartedAt}}",
                         ids[0]).stdout.strip()


def test_postgres_deploy_v2_rollback_and_restore_keep_every_row(pg_app, pg_images):
    app = pg_app
    v1, v2 = pg_images.v1, pg_images.v2
    app.fab_ok("setup")
    dot_env = app.vm(".env").read_bytes()

    # First deploy: the database service is started and waited for before the backup.
    out = app.deploy(v1)
    assert re.search(rf"^done: \S+:{v1} on ", out, re.M), out
    assert app.version() == {"version": "1", "revision": "0001"}
    assert app.psql("SELECT extname FROM pg_extension WHERE extname = 'vector'") == [["vector"]]
    app.post_item("first", embedding=[1, 2, 3])
    app.post_item("second", embedding=[0.5, 0, -1])
    before_v2 = rows(app)
    assert before_v2 == [["1", "first", "[1,2,3]"], ["2", "second", "[0.5,0,-1]"]]
    database = db_container(app)
    # The app sees its .env values byte for byte (compose expands nothing).
    assert TRICKY.replace("'", "") in \
        app.fab_ok("exec", "--cmd", "printenv TRICKY_VALUE").splitlines()

    # v2 migrates; the backup taken before it is a private custom-format dump.
    out = app.deploy(v2)
    assert app.version() == {"version": "2", "revision": "0002"}
    assert [r[:3] for r in app.psql("SELECT id, name, note FROM items ORDER BY id")] == [
        ["1", "first", ""], ["2", "second", ""]]
    backups = app.backups()
    assert len(backups) == 2 and all(b.endswith(".dump") for b in backups), backups
    pre_v2 = backups[-1]
    assert stat.S_IMODE(app.vm(f"backups/{pre_v2}").stat().st_mode) == 0o600
    assert stat.S_IMODE(app.vm("backups").stat().st_mode) == 0o700
    assert app.vm(f"backups/{pre_v2}").read_bytes()[:5] == b"PGDMP"
    history = app.history()
    assert [(e["tag"], e["revision"]) for e in history] == [(v1, "0001"), (v2, "0002")]
    assert history[-1]["backup"] == pre_v2 and history[-1]["migrated"] is True
    # The switch did not touch the database: same container, never restarted; .env unchanged.
    assert db_container(app) == database
    assert app.vm(".env").read_bytes() == dot_env

    # Rollback (the schema stays at 0002); then rows change.
    assert f"rolled back to {v1}" in app.fab_ok("rollback")
    assert app.version() == {"version": "1", "revision": "0002"}
    assert db_container(app) == database
    app.psql("DELETE FROM items WHERE name = 'first'")
    app.post_item("added after the backup")
    assert [r[1] for r in rows(app)] == ["second", "added after the backup"]

    # Restore: the database equals the backup taken before v2, exactly.
    out = app.fab_ok("restore", f"--backup={pre_v2}")
    assert f"restored {pre_v2}" in out
    assert rows(app) == before_v2
    assert app.psql("SELECT version_num FROM alembic_version") == [["0001"]]
    assert app.psql("SELECT count(*) FROM information_schema.columns WHERE table_name = "
                    "'items' AND column_name = 'note'") == [["0"]]
    assert app.wait_http("/health") == 200
    assert app.version() == {"version": "1", "revision": "0001"}
    assert not app.vm(".deploy/lock").exists()

    # The restore is in the history file on the VM, and `fab releases` shows it as one.
    record = app.history()[-1]
    assert {k: record[k] for k in ("kind", "backup", "tag", "revision", "healthy")} == {
        "kind": "restore", "backup": pre_v2, "tag": v1, "revision": "0001", "healthy": True}
    assert record["time"] and "@" in record["who"]
    listed = app.fab_ok("releases").splitlines()
    restore_lines = [line for line in listed if f"backup {pre_v2}" in line]
    assert len(restore_lines) == 1, listed
    assert re.search(rf"^  \S+Z  {v1}\s+restore\s+rev=0001\s+by \S+@\S+ backup ",
                     restore_lines[0]), restore_lines
    assert [line for line in listed if line.startswith("*")] == \
        [line for line in listed if "rollback" in line], listed  # still the current release

    # It is not a release: the next deploy migrates from the restored revision (and says so
    # in its record), and a rollback goes back to v1 as it was released, by digest.
    app.deploy(v2)
    releases = [e for e in app.history() if e.get("kind") != "restore"]
    assert (releases[-1]["tag"], releases[-1]["revision"], releases[-1]["migrated"]) == \
        (v2, "0002", True)
    out = app.fab_ok("rollback")
    assert f"pull {history[0]['digest'][:19]} (as recorded)" in out, out
    assert f"rolled back to {v1}" in out


def test_rollback_with_downgrade_backs_up_first_and_a_broken_restore_leaves_the_app_stopped(
        pg_app, pg_images):
    app = pg_app
    v1, v2 = pg_images.v1, pg_images.v2
    app.fab_ok("setup")
    app.deploy(v1)
    app.post_item("kept", embedding=[1, 1, 1])
    app.deploy(v2)
    before = app.backups()

    out = app.fab_ok("rollback", f"--tag={v1}", "--downgrade")
    assert "downgrading the schema 0002 -> 0001" in out
    taken = sorted(set(app.backups()) - set(before))
    assert len(taken) == 1, app.backups()  # the backup before the downgrade
    assert app.psql("SELECT version_num FROM alembic_version") == [["0001"]]
    assert [r[1] for r in rows(app)] == ["kept"]
    assert app.history()[-1]["revision"] == "0001"

    # A damaged backup (its manifest made to match, as if damaged when it was written):
    # pg_restore's own error, exit 1, the app left stopped (and said so).
    broken = taken[0].replace(".dump", "-broken.dump")
    data = app.vm(f"backups/{taken[0]}").read_bytes()
    data = data[: len(data) // 2]
    app.vm(f"backups/{broken}").write_bytes(data)
    made = json.loads(app.vm(f"backups/{taken[0]}.json").read_text())
    app.vm(f"backups/{broken}.json").write_text(json.dumps(
        {**made, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}))
    proc = app.fab("restore", f"--backup={broken}")
    out = output(proc)
    assert proc.returncode == 1, out
    assert_no_traceback(proc)
    assert f"restoring {broken} failed; app is left stopped" in out, out
    assert "pg_restore" in out
    services = [app.vm_docker("inspect", "--format",
                              '{{index .Config.Labels "com.docker.compose.service"}}', c)
                .stdout.strip() for c in app.containers()]
    assert services == ["db"], services  # the app is stopped, the database runs
    assert [r[1] for r in rows(app)] == ["kept"]  # nothing half-restored: one transaction
    assert not app.vm(".deploy/lock").exists()
    # the database did not change: no restore is recorded
    assert [e for e in app.history() if e.get("kind") == "restore"] == []
