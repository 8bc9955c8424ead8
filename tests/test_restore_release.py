"""`fab restore` puts back the data and the code that matches it: a backup on another schema
than the serving release's brings back the release that runs on that schema.

The decision (deploy/vm/matching.py) on plain history records; then the real thing on the
sandbox VM vm1: the SQLite example (example/) and the Postgres one (example-postgres/).
"""

from __future__ import annotations

import re
import subprocess
import time

import pytest
from conftest import assert_no_traceback
from test_postgres import pg_app, rows  # noqa: F401 (fixtures)
from test_roles import roles_app, served, three_vms  # noqa: F401 (fixtures)
from vmkit import App, Probe, output

from deploy.core.errors import DeployError
from deploy.vm.matching import Match, matching_release, schemas_of


def deploy(tag: str, revision: str, previous: str = "", backup: str = "") -> dict:
    return {"tag": tag, "revision": revision, "action": "deploy", "previous": previous,
            "digest": f"sha256:{tag}", **({"backup": backup} if backup else {})}


PRE_V2 = "20260101T000000Z-v2.sqlite3"
# v1 on 0001; v2 migrated to 0002 after backing up PRE_V2 (v1's data); v3 on 0002 too.
HISTORY = [deploy("v1", "0001"), deploy("v2", "0002", "v1", PRE_V2),
           deploy("v3", "0002", "v2", "20260102T000000Z-v3.sqlite3")]
MANIFEST = {"revision": "0001", "tag": "v2"}  # a deploy's backup names the tag it preceded


def refusal(history: list[dict], manifest: dict, current: str, tag: str = "",
            name: str = PRE_V2) -> DeployError:
    with pytest.raises(DeployError) as caught:
        matching_release(history, manifest, name, current, tag)
    assert "nothing was changed" in caught.value.message
    return caught.value


def test_the_release_on_the_backups_schema_is_the_one_put_back() -> None:
    # The backup taken before v2's migration: v1, which served then (v2's `previous`).
    match = matching_release(HISTORY, MANIFEST, PRE_V2, "v3")
    assert match.tag == "v1" and "served on schema 0001" in match.why
    # The same schema as the serving release: nothing else serves (today's restore).
    assert matching_release(HISTORY, {"revision": "0002", "tag": "v3"}, "x", "v3") == Match("v3")
    assert matching_release(HISTORY, {"revision": "0001"}, PRE_V2, "v1") == Match("v1")
    # No revision in the manifest (an unverified backup), or none recorded for the serving
    # release: nothing tells them apart, the restore is as it always was.
    assert matching_release(HISTORY, {}, PRE_V2, "v3") == Match("v3")
    bare = [{"tag": "v1", "action": "deploy"}, {"tag": "v2", "action": "deploy"}]
    assert matching_release(bare, MANIFEST, PRE_V2, "v2") == Match("v2")

    # The copy a restore saved (manifest: the release serving then), restored under v1.
    saved = {"revision": "0002", "tag": "v3"}
    match = matching_release(HISTORY, saved, "20260103T000000Z-v3-pre-restore.sqlite3", "v1")
    assert match.tag == "v3" and "manifest names it" in match.why
    # No record names the backup, its manifest names a release on another schema: the newest
    # release recorded on the backup's schema.
    assert matching_release(HISTORY, {"revision": "0002", "tag": "v9"}, "y", "v1").tag == "v3"
    # A release rolled back to on a newer schema (expand/contract) runs on that one too.
    rolled = [*HISTORY, {"tag": "v1", "revision": "0002", "action": "rollback"}]
    assert schemas_of(rolled, "v1") == ["0001", "0002"]
    assert matching_release(rolled, {"revision": "0002", "tag": "v3"}, "z", "v1") == Match("v1")
    # The serving release's newest record names no schema (a rollback whose older image
    # could not read the newer revision): unknown, the restore keeps it.
    blind = [*HISTORY, {"tag": "v1", "revision": "", "action": "rollback"}]
    assert matching_release(blind, {"revision": "0002", "tag": "v3"}, "z", "v1") == Match("v1")
    # Restore records are not releases: a restore's revision says nothing about its tag.
    restored = [*HISTORY, {"kind": "restore", "tag": "v3", "revision": "0001", "backup": "b"}]
    assert matching_release(restored, MANIFEST, PRE_V2, "v3").tag == "v1"


def test_a_tag_is_taken_only_when_it_runs_on_the_backups_schema() -> None:
    match = matching_release(HISTORY, MANIFEST, PRE_V2, "v3", "v1")
    assert match.tag == "v1" and match.why == "--tag=v1 runs on the backup's schema 0001"
    assert matching_release(HISTORY, {"revision": "0002"}, "x", "v3", "v3") == Match("v3")
    assert matching_release(HISTORY, {"revision": "0002"}, "x", "v1", "v2").tag == "v2"

    wrong = refusal(HISTORY, MANIFEST, "v3", "v2")
    assert wrong.message.startswith("--tag=v2 runs on schema 0002, not on the backup's 0001")
    assert "--tag=v1" in wrong.fix and "releases on it: v1" in wrong.fix
    unknown = refusal(HISTORY, MANIFEST, "v3", "v7")
    assert "--tag=v7 is not a recorded release" in unknown.message
    assert "v1 (schema 0001), v2 (schema 0002), v3 (schema 0002)" in unknown.fix
    # a backup without a schema: nothing says the tag matches it
    blind = refusal(HISTORY, {}, "v3", "v1")
    assert "records no schema" in blind.message and "without --tag" in blind.fix
    with pytest.raises(DeployError, match="is not a valid Docker tag"):
        matching_release(HISTORY, MANIFEST, PRE_V2, "v3", "bad tag;rm")


def test_no_release_on_the_backups_schema_is_refused_naming_tag_and_the_candidates() -> None:
    error = refusal(HISTORY, {"revision": "0000", "tag": "v1"}, "v3")
    assert re.match(r"the backup \S+ holds schema 0000, but v3 runs on 0002 and no recorded "
                    r"release runs on 0000", error.message), error.message
    assert "--tag=T" in error.fix and "v1 (schema 0001)" in error.fix, error.fix
    # a tag on a schema the backup is not on, when no release is on the backup's
    other = refusal(HISTORY, {"revision": "0000"}, "v3", "v1")
    assert "no recorded release runs on 0000" in other.fix, other.fix


# -- on the sandbox VM ----------------------------------------------------------------------
SLOW = {"DEPLOY_HEALTH_TIMEOUT": "180"}  # the machine is shared: health may take a while
DB_ERRORS = re.compile(r"OperationalError|ProgrammingError|UndefinedColumn|no such column")


def unchanged(app: App, proc: subprocess.CompletedProcess[str], before: dict) -> str:
    """A refused restore: exit 1, error and fix, refused before the app stopped; the app
    serves as before, nothing saved, nothing recorded, no lock left."""
    out = output(proc)
    assert proc.returncode == 1, out
    assert_no_traceback(proc)
    assert re.search(r"^  fix: ", out, re.M), out
    assert "· stop" not in out and " stop " not in out, out
    assert state(app) == before, out
    return out


def state(app: App) -> dict:
    """What a refused restore must leave as it was."""
    return {"version": app.version(), "items": app.get_json("/items"),
            "backups": app.backups(), "history": app.history(),
            "release": app.release_env(".deploy/release.env"),
            "lock": app.vm(".deploy/lock").exists()}


def serves_cleanly(app: App, names: list[str], since: str) -> None:
    """/items answers 200 with `names`, 50 times in a row, and the app container logged no
    database error since `since` (the restore's start, as the VM's clock says)."""
    with Probe(app, "/items", rate=25, limit=2) as probe:
        time.sleep(2.5)
    assert probe.hits and probe.failed == [], probe.summary()
    assert [i["name"] for i in app.get_json("/items")] == names  # type: ignore[union-attr]
    logs = "".join(output(app.vm_docker("logs", "--since", since, c))
                   for c in app.containers())
    assert not DB_ERRORS.search(logs), logs[-3000:]


def vm_now(app: App) -> str:
    return app.vm_run("date", "-u", "+%Y-%m-%dT%H:%M:%SZ").stdout.strip()


def restore_before_v2(app: App, v1: str, v2: str, pre_v2: str, names: list[str],
                      suffix: str) -> None:
    """v2 serves on 0002; `pre_v2` (taken before v2's migration) holds `names` on 0001.
    A --tag on the wrong schema is refused; the restore puts back v1, which serves them."""
    assert app.version() == {"version": "2", "revision": "0002"}
    before = state(app)
    out = unchanged(app, app.fab("restore", f"--backup={pre_v2}", f"--tag={v2}"), before)
    assert f"error: --tag={v2} runs on schema 0002, not on the backup's 0001; nothing was " \
        "changed" in out, out
    assert f"fix: name a release on 0001: --tag={v1}" in out, out
    out = unchanged(app, app.fab("restore", f"--backup={pre_v2}", "--tag=nope"), before)
    assert "error: --tag=nope is not a recorded release on this VM; nothing was changed" in out
    assert f"{v1} (schema 0001), {v2} (schema 0002)" in out, out

    since = vm_now(app)
    out = app.fab_ok("restore", f"--backup={pre_v2}")
    assert f"the backup {pre_v2} holds schema 0001, which {v2} does not run on: {v1} is put " \
        f"back with it (it served on schema 0001 when the backup was taken)" in out, out
    assert f"{v1} serves now, in place of {v2}" in out, out
    assert app.version() == {"version": "1", "revision": "0001"}
    serves_cleanly(app, names, since)
    [record] = [e for e in app.history() if e.get("kind") == "restore"]
    assert (record["backup"], record["tag"], record["previous"], record["revision"],
            record["healthy"]) == (pre_v2, v1, v2, "0001", True), record
    assert record["saved"].endswith(f"-{v2}-pre-restore{suffix}"), record
    assert app.release_env(".deploy/release.env")["DEPLOY_TAG"] == v1
    status = app.fab_ok("status")
    assert re.search(rf"^release:\s+{re.escape(v1)}$", status, re.M), status
    assert re.search(r"^revision:\s+0001", status, re.M), status
    assert "warning" not in status, status
    releases = app.fab_ok("releases")
    assert re.search(rf"^  \S+Z  {re.escape(v1)}\s+restore\s+rev=0001 .* backup {pre_v2}",
                     releases, re.M), releases
    assert re.search(rf"^\* \S+Z  {re.escape(v1)}\s+deploy", releases, re.M), releases


def test_sqlite_restore_from_before_a_migration_puts_back_the_release_on_its_schema(
        make_app, images):
    app = make_app()
    app.env.update(SLOW)
    app.fab_ok("setup")
    v1, v2 = images.v1, images.v2
    app.deploy(v1)
    app.post_item("under v1")
    app.deploy(v2)
    [pre_v2] = [n for n in app.backups() if n.endswith(f"-{v2}.sqlite3")]
    app.post_item("under v2", note="v2 only")
    restore_before_v2(app, v1, v2, pre_v2, ["under v1"], ".sqlite3")

    # The copy the restore saved (v2's data, on 0002) puts v2 back with it: the undo.
    saved = [e for e in app.history() if e.get("kind") == "restore"][-1]["saved"]
    since = vm_now(app)
    out = app.fab_ok("restore", f"--backup={saved}")
    assert f"{v2} serves now, in place of {v1}: the backup's manifest names it" in out, out
    assert app.version() == {"version": "2", "revision": "0002"}
    serves_cleanly(app, ["under v1", "under v2"], since)
    assert re.search(rf"^release:\s+{re.escape(v2)}$", app.fab_ok("status"), re.M)


def test_postgres_restore_from_before_a_migration_puts_back_the_release_on_its_schema(
        pg_app, pg_images):  # noqa: F811
    app = pg_app
    app.env.update(SLOW)
    app.fab_ok("setup")
    v1, v2 = pg_images.v1, pg_images.v2
    app.deploy(v1)
    app.post_item("first", embedding=[1, 2, 3])
    app.deploy(v2)
    [pre_v2] = [n for n in app.backups() if n.endswith(f"-{v2}.dump")]
    app.post_item("second", embedding=[0, 0, 1], note="v2 only")
    restore_before_v2(app, v1, v2, pre_v2, ["first"], ".dump")
    assert [r[1] for r in rows(app)] == ["first"]


def test_roles_restore_from_before_a_migration_puts_back_the_release_on_every_host(
        roles_app, images):  # noqa: F811
    web1, web2, worker = roles_app
    v1, v2 = images.v1, images.v2
    hosts = [v.machine.address for v in roles_app]
    web1.env.update(SLOW)
    web1.fab_ok("setup")
    web1.fab_ok("deploy", f"--tag={v1}")
    web1.post_item("under v1")
    web1.fab_ok("deploy", f"--tag={v2}")
    pre_v2 = web1.history()[-1]["backup"]  # on the primary, where the database is
    web1.post_item("under v2", note="v2 only")
    assert [served(web1), served(web2), served(worker, "worker")] == [v2, v2, v2]

    since = vm_now(web1)
    out = web1.fab_ok("restore", f"--backup={pre_v2}")
    assert f"{v1} is put back with it (it served on schema 0001 when the backup was taken)" \
        in out, out
    assert f"{hosts[1]} (web): started again, healthy, on {v1}" in out, out
    assert f"{hosts[2]} (worker): started again, healthy, on {v1}" in out, out
    assert [served(web1), served(web2), served(worker, "worker")] == [v1, v1, v1]
    assert [v.release_env(".deploy/release.env")["DEPLOY_TAG"] for v in roles_app] == [v1] * 3
    assert web1.version() == {"version": "1", "revision": "0001"}
    assert web2.version()["version"] == "1"
    serves_cleanly(web1, ["under v1"], since)
    for view in roles_app:  # each host's history says what it serves since the restore
        last = view.history()[-1]
        assert (last["kind"], last["tag"], last["previous"]) == ("restore", v1, v2), last
    assert web1.history()[-1]["backup"] == pre_v2
    assert web1.fab_ok("status").count(f"release:   {v1}\n") == 3
