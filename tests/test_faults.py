"""The fault campaign: break a deploy in each phase, feed it bad input, and check nothing is lost.

Each fault runs against the sandbox (sshd as the VM, the registry, the Docker engine) with a
probe asking the app's /version every 50 ms through the whole deploy. Every fault asserts: a
good version serves at the end, no row written before is lost, the lock is free (or names its
holder after a SIGKILL), the exit code is non-zero and the message says what happened and what
to do. `pytest tests/test_faults.py -q` ends with the campaign's table (conftest.py prints it;
FAULTS_REPORT=path also writes it as Markdown).

The campaign runs on both examples, one app each for the module, put back before each fault
to what a fresh app has (v1 serving on revision 0001, the campaign's rows, the lock free):
`example/` (SQLite, a file on the VM's disk, on vm3) and `example-postgres/` (pgvector, the
database a compose service, on vm8). Every fault meets every phase, and each example every
phase: a fault whose path differs by example (the backup, the migration, the disk, the engine,
.env) runs on both; one whose path is the same on either runs on one of them, alternating
(SSH_CUTS and KILLS say which and why). Faults that never touch the app's data (the registry,
bad input, secrets, two deploys at once) run once, on the SQLite example.

The faults hit sandbox VMs of their own (conftest.FAULT_VMS): their Docker engine restarts and
crashes disturb nothing else on this machine. The registry is the laptop's, shared.
"""

from __future__ import annotations

import json
import re
import secrets
import signal
import sqlite3
from pathlib import Path

import pytest
from _pytest.mark import ParameterSet
from conftest import EXAMPLE_POSTGRES, REGISTRY, commit_all, git
from faultkit import (
    RESULTS,
    Fault,
    PsSampler,
    RegistryDoor,
    Row,
    build_fault_images,
    cut_ssh,
    first_message,
    forget_locally,
    full_tmpfs,
    kill_engine,
    lock_state,
    phases,
    restore_engine,
    row_count,
    running_containers,
    served,
    start_fab,
    start_inv,
    wait_until,
)
from vmkit import (
    App,
    apply_v2,
    delete_from_registry,
    make_app_repo,
    output,
    remove_local_images,
    unique,
)

# A shell without job control starts a background job with Ctrl-C ignored, and a child
# inherits that: `fab` would then never see the campaign's SIGINT. A handler of ours is not
# inherited (exec resets it), so the tool starts with Python's own.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

SLOW_MIGRATION = {"DEPLOY_MIGRATE_COMMAND": "sleep 2 && alembic upgrade head"}
HEALTH_TIMEOUT = {"DEPLOY_HEALTH_TIMEOUT": "10"}
ROWS = ("first row", "second row", "third row")
BALLAST_MB = 320  # makes the SQLite backup (a cp) last long enough to be caught
# The Postgres faults run on a VM of their own, beside the SQLite ones (another xdist worker).
PG_GROUP = pytest.mark.xdist_group("faults-postgres")
BOTH = pytest.mark.parametrize("example", [
    "sqlite", pytest.param("postgres", marks=PG_GROUP)])


def on(example: str, *values: object) -> ParameterSet:
    """One case of a fault on one example (its id: the values, then the example)."""
    ids = [v.name if isinstance(v, signal.Signals) else str(v) for v in values]
    return pytest.param(*values, example, marks=[PG_GROUP] if example == "postgres" else [],
                        id="-".join([*ids, example]))


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def example() -> str:
    """The example a fault runs on; the faults marked BOTH run on each."""
    return "sqlite"


@pytest.fixture(scope="session")
def sqlite_fault_images(images, tmp_path_factory):
    return build_fault_images(tmp_path_factory.mktemp("fault-images"), images)


@pytest.fixture(scope="session")
def pg_fault_images(pg_images, tmp_path_factory):
    return build_fault_images(tmp_path_factory.mktemp("pg-fault-images"), pg_images,
                              EXAMPLE_POSTGRES)


@pytest.fixture
def fault_images(example, request):
    """The fault variants (crash, half migration, big) of the example's images."""
    return request.getfixturevalue("pg_fault_images" if example == "postgres"
                                   else "sqlite_fault_images")


def fast_healthcheck(app) -> None:
    """The example's app service healthchecks twice a second instead of every 2 s: each switch
    turns healthy sooner (the campaign has a time budget). The database's check (Postgres,
    after the app in compose.yaml) keeps its 2 s: only its start waits for it, and each check
    is an exec in the container for the whole module's run."""
    compose = app.repo / "compose.yaml"
    compose.write_text(compose.read_text().replace("interval: 2s", "interval: 500ms", 1))
    commit_all(app.repo, "healthcheck twice a second")


@pytest.fixture(scope="session")
def sshd(fault_vms):
    """The log of the fault VM's sshd (overrides conftest's vm1)."""
    from vmkit import SshdLog

    return SshdLog(fault_vms[0].log("sshd"))


@pytest.fixture(scope="module")
def pg_app(pg_images, sandbox, pg_fault_vm, tmp_path_factory):
    """The Postgres example on its fault VM, serving v1 with the campaign's rows: one for the
    module (a new database per fault would cost its start every time)."""
    root = tmp_path_factory.mktemp("pg-fault-app")
    repo = make_app_repo(root / "app", EXAMPLE_POSTGRES)
    app = App.create(repo, pg_images, root / "xdg-cache", sandbox, vm=pg_fault_vm)
    fast_healthcheck(app)
    try:
        app.fab_ok("setup")
        app.deploy(pg_images.v1)
        for name in ROWS:
            app.post_item(name)
        yield app
    finally:
        app.tear_down()


def reset_postgres(app) -> None:
    """Put the module's Postgres app back where every fault starts: v1 serving on schema
    0001, the lock free, no migration left running, the campaign's rows (and any a fault
    kept) in place, a history of release records. v2's migration is undone in SQL (the rows
    stay): quicker than a `rollback --downgrade`, which its own tests cover."""
    if app.vm(".deploy/lock").exists():
        app.fab_ok("unlock", "--force", "--yes")
    wait_until(lambda: not leftover_migrations(app), 120, 0.5, "a migration left running")
    clean_history(app)
    app.wait_http("/health", timeout=60)
    app.psql("DROP TABLE IF EXISTS ballast, half_done; "
             "ALTER TABLE items DROP COLUMN IF EXISTS note, DROP COLUMN IF EXISTS half; "
             "UPDATE alembic_version SET version_num = '0001'")
    if served(app) != "1" or app.release_env(".deploy/release.env").get("DEPLOY_TAG") != \
            app.images.v1:
        app.fab_ok("rollback", f"--tag={app.images.v1}")
    assert app.wait_http("/health", timeout=60) == 200 and served(app) == "1"
    assert app.item_names()[: len(ROWS)] == list(ROWS)


FRESH_SHAPES: dict[str, dict[str, list[tuple]]] = {}


@pytest.fixture(scope="module")
def sqlite_app(images, sandbox, fault_vms, tmp_path_factory):
    """The SQLite example on its fault VM, serving v1 with the campaign's rows: one for the
    module, put back by `reset_sqlite` before each fault (a new app per fault cost its
    set-up, a first deploy and its rows every time)."""
    root = tmp_path_factory.mktemp("sqlite-fault-app")
    app = App.create(make_app_repo(root / "app"), images, root / "xdg-cache", sandbox,
                     vm=fault_vms[0])
    fast_healthcheck(app)
    try:
        app.fab_ok("setup")
        app.deploy(images.v1)
        for name in ROWS:
            app.post_item(name)
        FRESH_SHAPES[app.app_dir] = sqlite_shape(app)  # what reset_sqlite puts back
        yield app
    finally:
        app.tear_down()


def sqlite_shape(app) -> dict[str, list[tuple]]:
    """Each table of the app's SQLite database with its columns (name, type, not null,
    default, primary key) and indexes: what a migration or a fault can change."""
    tables = app.first_column("SELECT name FROM sqlite_master WHERE type = 'table' "
                              "AND name NOT LIKE 'sqlite_%' ORDER BY name")
    return {t: [tuple(c.values())[1:] for c in app.db(f"PRAGMA table_info('{t}')")]
            + [("index", i["name"], i["unique"]) for i in app.db(f"PRAGMA index_list('{t}')")]
            for t in tables}


def clean_history(app) -> None:
    """Drop the lines of .deploy/history.jsonl that are no release record (a state-file fault
    writes some; the tool skips them with a warning; a fresh app has none)."""
    path = app.vm(".deploy/history.jsonl")
    if not path.exists():
        return
    kept = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and "tag" in record:
            kept.append(line)
    path.write_text("".join(f"{line}\n" for line in kept))


def reset_sqlite(app) -> None:
    """Put the module's SQLite app back where a fresh one starts: v1 serving and recorded, the
    lock free, no migration left running, the database on revision 0001 with the tables and
    columns it had after the first deploy (v2's column, a half migration's table and column,
    the ballast gone, the file shrunk again), the campaign's rows (and any a fault kept) in
    place, a history of release records. v1 goes back first: it never reads v2's column."""
    if app.vm(".deploy/lock").exists():
        app.fab_ok("unlock", "--force", "--yes")
    wait_until(lambda: not leftover_migrations(app), 120, 0.5, "a migration left running")
    clean_history(app)
    app.wait_http("/health", timeout=60)
    if served(app) != "1" or app.release_env(".deploy/release.env").get("DEPLOY_TAG") != \
            app.images.v1:
        app.fab_ok("rollback", f"--tag={app.images.v1}")
    conn = sqlite3.connect(app.vm("data/app.db"), timeout=30)
    try:
        columns = {c[1] for c in conn.execute("PRAGMA table_info('items')")}
        for column in ("note", "half"):
            if column in columns:
                conn.execute(f"ALTER TABLE items DROP COLUMN {column}")
        conn.execute("DROP TABLE IF EXISTS ballast")
        conn.execute("DROP TABLE IF EXISTS half_done")
        conn.execute("UPDATE alembic_version SET version_num = '0001'")
        conn.commit()
        conn.execute("VACUUM")  # the ballast's pages: a backup copies the whole file
    finally:
        conn.close()
    assert sqlite_shape(app) == FRESH_SHAPES[app.app_dir], sqlite_shape(app)
    assert app.wait_http("/health", timeout=60) == 200 and served(app) == "1"
    assert app.item_names()[: len(ROWS)] == list(ROWS)
    assert lock_state(app) == "free" and not leftover_migrations(app)


@pytest.fixture
def rows(example, fault_vms, request):
    """An app serving v1 on a fault VM, with rows written before any fault: the module's app
    of the example, put back to that state."""
    if example == "postgres":
        app = request.getfixturevalue("pg_app")
        reset_postgres(app)
        return app
    app = request.getfixturevalue("sqlite_app")
    reset_sqlite(app)
    return app


@pytest.fixture
def fresh_rows(make_app, images, fault_vms):
    """A new SQLite app serving v1 with the campaign's rows, for a fault that changes its repo
    or counts its whole history."""
    return serving_v1_with_rows(make_app(vm=fault_vms[0]), images)


def serving_v1_with_rows(app, images):
    """`app` set up, serving v1 (checked twice a second) with the campaign's rows."""
    fast_healthcheck(app)
    app.fab_ok("setup")
    app.deploy(images.v1)
    for name in ROWS:
        app.post_item(name)
    return app


def clean_failure(out: str, code: int, expected: int = 1) -> None:
    assert code == expected, f"expected exit {expected}, got {code}:\n{out}"
    assert "Traceback" not in out, out
    assert re.search(r"^\s*fix: \S", out, re.M), f"no fix line:\n{out}"


def serving_good(app, versions=("1",)) -> str:
    """A good version answers at the end: healthy, and one of `versions`."""
    assert app.wait_http("/health", timeout=60) == 200
    version = served(app)
    assert version in versions, f"serving {version}, expected one of {versions}"
    return version


def leftover_migrations(app) -> list[str]:
    return app.vm_docker("ps", "-q", "--filter", f"label=com.docker.compose.project={app.project}",
                  "--filter", "label=com.docker.compose.oneoff=True").stdout.split()


def rerun(app, fault: Fault, tag: str, env: dict | None = None, what: str = "re-run",
          version: str = "2") -> None:
    """The same deploy again completes: exit 0, the new version serving, rows intact. A
    migration the cut-short deploy left running on the VM is waited for, never run twice."""
    leftover = leftover_migrations(app)
    proc = app.fab("deploy", f"--tag={tag}", env=env)
    out = output(proc)
    assert proc.returncode == 0, out
    # A migration still running when the deploy looks is waited for (it may have ended in the
    # moment between our look and the deploy's: then there is nothing to wait for).
    if leftover and "left running by an interrupted deploy" in out:
        what += " (waited for the migration left running)"
    assert served(app) == version
    fault.rows_intact()
    assert lock_state(app) == "free"
    fault.then(f"{what}: exit 0, serves {version}, {row_count(app)} rows")


def add_ballast(app, megabytes: int = BALLAST_MB) -> None:
    """A big table in the app's database (no rows in `items`): the backup takes a while. SQLite:
    random bytes for its cp; Postgres: ~40 MB of text for pg_dump to read and compress."""
    if app.postgres:
        app.psql("CREATE TABLE ballast AS SELECT g, md5(g::text) || md5((g * 7)::text) AS b "
                 "FROM generate_series(1, 500000) AS g")
        return
    conn = sqlite3.connect(app.vm("data/app.db"), timeout=30)
    try:
        conn.execute("CREATE TABLE ballast (b BLOB)")
        conn.execute("INSERT INTO ballast VALUES (randomblob(?))", (megabytes * 1024 * 1024,))
        conn.commit()
    finally:
        conn.close()


def setup_for(phase: str, app, fault_images) -> tuple[str, dict]:
    """The tag and settings that make `phase` last long enough to be caught in the act."""
    images = app.images
    if phase == "pull":  # layers the VM does not have yet
        forget_locally(images.ref(fault_images.big), app.machine)
        return fault_images.big, {}
    if phase == "backup":
        add_ballast(app)
    if phase == "migrate":
        return images.v2, SLOW_MIGRATION
    return images.v2, {}


# --------------------------------------------------------------------------- 1: SSH cut


# Which example each (fault, phase) runs on. The backup (SQLite: a cp of the file; Postgres:
# pg_dump through `compose exec`) and the migration (a file vs a server, DDL outside vs inside
# the transaction) take a different path per example: every fault runs there on both. The pull
# (`docker pull` of the image), the switch (`compose up` of the app service) and the health
# wait run the same commands on either example and touch no data: each fault runs there on
# one of them, alternating, so that each example still meets each of those phases. Ctrl-C and
# SIGTERM go through one handler (deploy/vm/signals.py) and differ in nothing but the exit
# code and the name shown: per phase one runs on SQLite and the other on Postgres.
SSH_CUTS = [
    on("sqlite", "pull"), on("sqlite", "backup"), on("postgres", "backup"),
    on("sqlite", "migrate"), on("postgres", "migrate"), on("postgres", "up"),
]
KILLS = [
    on("sqlite", "pull", signal.SIGINT), on("postgres", "pull", signal.SIGTERM),
    on("postgres", "pull", signal.SIGKILL),
    on("sqlite", "backup", signal.SIGINT), on("postgres", "backup", signal.SIGTERM),
    on("sqlite", "backup", signal.SIGKILL), on("postgres", "backup", signal.SIGKILL),
    on("postgres", "migrate", signal.SIGINT), on("sqlite", "migrate", signal.SIGTERM),
    on("sqlite", "migrate", signal.SIGKILL), on("postgres", "migrate", signal.SIGKILL),
    on("postgres", "up", signal.SIGINT), on("sqlite", "up", signal.SIGTERM),
    on("sqlite", "up", signal.SIGKILL),
    on("sqlite", "health", signal.SIGINT), on("postgres", "health", signal.SIGTERM),
    on("postgres", "health", signal.SIGKILL),
]


@pytest.mark.parametrize(("phase", "example"), SSH_CUTS)
def test_ssh_connection_cut(rows, fault_images, phase):
    """The VM-side sshd process of our connection is killed in the middle of a phase."""
    app = rows
    tag, env = setup_for(phase, app, fault_images)
    watch = phases(app, tag)[phase]
    with Fault(app, f"SSH cut during {phase}") as fault:
        run = start_fab(app, "deploy", f"--tag={tag}", env=env)
        run.when(lambda: watch.running(app), lambda: cut_ssh(run.pid, app.machine),
                 f"the {phase} phase")
        code, out = run.wait()
        fault.done(code, out)
        clean_failure(out, code)
        assert f"SSH connection to {app.settings().host} was lost" in out
        assert "run the same deploy again" in out
        if phase == "up":
            assert "switched back to" in out
        else:
            # a pull of layers the VM finds in its cache can end before the cut lands: then
            # it lands in the backup that follows, which must fail as cleanly
            cut = [phase, "backup"] if phase == "pull" else [phase]
            assert any(f"during {p} of {tag}" in out for p in cut) and "is still serving" in out
        serving_good(app)
        fault.rows_intact()
        assert lock_state(app) == "free"  # released over a new connection
        rerun(app, fault, tag, env)


# --------------------------------------------------------------------------- 2: local kill


@pytest.mark.parametrize(("phase", "sig", "example"), KILLS)
def test_local_process_killed(rows, fault_images, phase, sig):
    """`fab deploy` gets Ctrl-C (SIGINT), SIGTERM or SIGKILL while the VM runs a phase."""
    app = rows
    tag, env = setup_for(phase, app, fault_images)
    watch = phases(app, tag)[phase]
    with Fault(app, f"{sig.name} to fab during {phase}") as fault:
        run = start_fab(app, "deploy", f"--tag={tag}", env=env)
        run.when(lambda: watch.running(app), lambda: run.signal(sig), f"the {phase} phase")
        code, out = run.wait()
        fault.done(code, out)
        assert "Traceback" not in out, out
        if sig != signal.SIGKILL:  # Ctrl-C, or SIGTERM (a `kill`, a service stop)
            clean_failure(out, code, expected=128 + sig)
            assert "interrupted" in out and "run the same deploy again" in out
            assert lock_state(app) == "free"
            serving_good(app)
            if phase in ("up", "health"):
                assert "switched back to" in out, out
        else:
            assert code == -signal.SIGKILL
            holder = json.loads(app.vm(".deploy/lock/holder.json").read_text())
            assert (holder["tag"], holder["action"]) == (tag, "deploy")
            assert holder["holder"] and holder["time"]
            # The next deploy is refused, naming the holder and the way out.
            proc = app.fab("deploy", f"--tag={tag}", env=env)
            refused = output(proc)
            clean_failure(refused, proc.returncode)
            assert "locked by another deploy" in refused and f"deploy of {tag}" in refused
            assert "fab unlock" in refused
            fault.row.message = first_message(refused)
            status = app.fab_ok("status")
            assert re.search(rf"^lock:\s+{re.escape(holder['holder'])} since .* deploy of "
                             rf"{re.escape(tag)}", status, re.M), status
            assert "cleared the lock held by" in app.fab_ok("unlock")
            assert lock_state(app) == "free"
            # What serves meanwhile is good: the old version, or the new one if the switch
            # went on without us (the kill landed as `compose up` began: it ends on the VM
            # after the status above); then status says the container is not the recorded
            # release.
            if serving_good(app, ("1", "2")) == "2":
                status = app.fab_ok("status")
                assert f"warning: the app container runs {tag}, not the recorded release" \
                    in status, status
                assert f"fab deploy --tag={tag}" in status
        fault.rows_intact()
        rerun(app, fault, tag, env, what="unlock, re-run" if sig == signal.SIGKILL
              else "re-run")


# --------------------------------------------------------------------------- 3: registry down


@pytest.fixture
def door(fault_vms, tmp_path):
    """A registry address of the test's own (the laptop's registry through a forwarder here
    and on the fault VM): closing it takes the registry away from this test only."""
    door = RegistryDoor(fault_vms[0], tmp_path)
    yield door
    door.remove()


@pytest.fixture
def door_rows(make_app, images, fault_vms, door):
    """A new SQLite app serving v1 with the campaign's rows, its image named through `door`."""
    app = serving_v1_with_rows(make_app(image=f"{door.address}/{images.name}",
                                        vm=fault_vms[0]), images)
    yield app
    # the names under the door's address: `inv build`'s here, the pulls' on the VM
    remove_local_images(app.env["DEPLOY_IMAGE"])
    remove_local_images(app.env["DEPLOY_IMAGE"], fault_vms[0])


def test_registry_down_at_push(door_rows, door, images, sshd):
    app = door_rows
    for step in ("build", "smoke"):
        proc = app.inv(step)
        assert proc.returncode == 0, output(proc)
    before = app.snapshot()
    with Fault(app, "registry down at inv push") as fault, door.closed():
        proc = app.inv("push")
        out = output(proc)
        fault.done(proc.returncode, out)
        clean_failure(out, proc.returncode)
        assert "pushing" in out and "failed" in out and "registry" in out
        assert "is up" in out  # what to do: check the registry
        fault.then("nothing changed on the VM")
    with Fault(app, "registry down at inv deploy") as fault, door.closed():
        mark = sshd.mark()
        proc = app.inv("deploy", "--skip-tests")
        out = output(proc)
        fault.done(proc.returncode, out)
        clean_failure(out, proc.returncode)
        assert f"cannot reach the registry {door.address}" in out
        assert sshd.connections(mark) == 0  # stopped before any SSH connection
        fault.then("nothing changed on the VM")
    assert app.snapshot() == before
    assert served(app) == "1"
    fault.rows_intact()


def test_registry_down_at_pull(door_rows, door, images, sshd):
    """The registry answers the tool's check, then dies before the VM pulls."""
    app = door_rows
    mark = sshd.mark()
    with Fault(app, "registry down at pull") as fault:
        run = start_fab(app, "deploy", f"--tag={images.v2}")
        try:
            # Frozen as soon as it connects to the VM (its registry check has passed).
            run.when(lambda: sshd.connections(mark), lambda: run.signal(signal.SIGSTOP),
                     "the SSH connection", interval=0.002)
            door.close()
            run.signal(signal.SIGCONT)
            code, out = run.wait()
        finally:
            run.signal(signal.SIGCONT)
            door.open()
        fault.done(code, out)
        clean_failure(out, code)
        assert f"the VM could not pull {app.env['DEPLOY_IMAGE']}:{images.v2}" in out
        # Docker's own words: the VM reaches the registry through its forwarder, which accepts
        # and then drops the connection ("reset", or an "EOF" when it closes before any
        # answer); a VM without one is "refused"
        assert re.search(r"connection (refused|reset by peer)|/v2/\": eof", out.lower()), out
        assert "registry" in out.split("fix:")[-1]
        serving_good(app)
        assert lock_state(app) == "free"
        fault.rows_intact()
        rerun(app, fault, images.v2, what="registry back, re-run")


# --------------------------------------------------------------------------- 5: half migration


def schema(app) -> list[tuple]:
    """The app's tables and columns, as its database describes them."""
    if app.postgres:
        return [tuple(r) for r in app.psql(
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'public' ORDER BY table_name, ordinal_position")]
    return [tuple(r.values()) for r in app.db(
        "SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY name")]


def items(app) -> list:
    """Every row of `items`, every column."""
    if app.postgres:
        return app.psql("SELECT * FROM items ORDER BY id")
    return app.db("SELECT * FROM items ORDER BY id")


@BOTH
def test_a_migration_that_fails_halfway(rows, fault_images):
    """SQLite keeps the DDL that ran before the failure: `fab restore` undoes it. Postgres
    runs the migration in one transaction: nothing is left, no restore is needed."""
    app = rows
    schema_before, items_before = schema(app), items(app)
    with Fault(app, "migration fails halfway") as fault:
        proc = app.fab("deploy", f"--tag={fault_images.half}")
        out = output(proc)
        fault.done(proc.returncode, out)
        clean_failure(out, proc.returncode)
        assert f"migration with {fault_images.half} failed" in out
        assert "migration 0002 failed halfway" in out  # the migration's own error
        serving_good(app)
        assert lock_state(app) == "free"
        assert app.db_revision() == "0001"
        ext = ".dump" if app.postgres else ".sqlite3"
        backups = [n for n in app.backups() if n.endswith(f"-{fault_images.half}{ext}")]
        assert len(backups) == 1, app.backups()
        # the fix names the backup, for a migration that changed the database before failing
        assert f"fab restore --backup={backups[0]}" in out
        if app.postgres:
            # Alembic ran it in one transaction: the failure rolled the table and column back
            assert schema(app) == schema_before
            assert items(app) == items_before
            fault.then(f"nothing to undo (one transaction): schema as before, "
                       f"{row_count(app)} rows; no restore needed")
            return
        # SQLite ran the DDL outside the transaction: the half-done change is there.
        half = schema(app)
        assert any(name == "half_done" for _, name, _ in half), half
        restored = app.fab_ok("restore", f"--backup={backups[0]}")
        assert f"restored {backups[0]}" in restored
        assert schema(app) == schema_before
        assert items(app) == items_before
        assert app.wait_http("/health") == 200 and served(app) == "1"
        status = app.fab_ok("status")
        assert re.search(r"^health:\s+healthy$", status, re.M), status
        fault.then(f"fab restore --backup=…: schema as before, {row_count(app)} rows")


# --------------------------------------------------------------------------- 6: bad images


# Both images fail the same health wait and the same switch back, on either example: each
# example gets one of them.
@pytest.mark.parametrize(("kind", "example"), [on("sqlite", "unhealthy"),
                                               on("postgres", "crash")])
def test_a_release_that_never_turns_healthy_is_switched_back(rows, fault_images, kind):
    app = rows
    images = app.images
    history = app.history()
    tag = fault_images.crash if kind == "crash" else images.unhealthy
    name = "crashes at start" if kind == "crash" else "never turns healthy"
    with Fault(app, f"image {name}") as fault:
        proc = app.fab("deploy", f"--tag={tag}", env=HEALTH_TIMEOUT)
        out = output(proc)
        fault.done(proc.returncode, out)
        clean_failure(out, proc.returncode)
        assert f"{tag} did not turn healthy" in out
        assert f"switched back to {images.v1}" in out
        serving_good(app)
        assert app.serving_image() == images.ref(images.v1)
        assert app.release_env(".deploy/release.env")["DEPLOY_TAG"] == images.v1
        assert app.history() == history
        assert lock_state(app) == "free"
        fault.rows_intact()
        fault.then("history unchanged")


# --------------------------------------------------------------------------- 7: state files


def corrupt(app, what: str) -> None:
    history, env = app.vm(".deploy/history.jsonl"), app.vm(".env")
    if what == "history: garbage lines":
        lines = history.read_text().splitlines()
        history.write_text("\n".join([lines[0], "not json at all", '{"half": "a record"',
                                      *lines[1:], "\x00\x01garbage"]) + "\n")
    elif what == "history: deleted":
        history.unlink()
    elif what == ".env: garbage lines":
        env.write_text(env.read_text() + "garbage without equals\n===\n")
    elif what == ".env: release line removed":
        # the line that names the release: DEPLOY_TAG, or (Postgres: its database service
        # reads .env, which then never changes) COMPOSE_FILE naming .deploy/release.yaml
        line = "COMPOSE_FILE=" if app.postgres else "DEPLOY_TAG="
        text = env.read_text()
        assert line in text, text
        env.write_text("".join(x for x in text.splitlines(keepends=True)
                               if not x.startswith(line)))
    elif what == ".env: deleted":
        env.unlink()


# .deploy/history.jsonl is read the same way whatever the database: each of its two faults on
# one example. .env differs (the Postgres example's services read it, and its release line is
# COMPOSE_FILE): its three faults on both.
@pytest.mark.parametrize(("what", "example"), [
    on("sqlite", "history: garbage lines"), on("postgres", "history: deleted"),
    *(on(example, what) for what in (".env: garbage lines", ".env: release line removed",
                                     ".env: deleted") for example in ("sqlite", "postgres"))])
def test_a_corrupted_or_deleted_state_file(rows, what):
    """`fab status` and `fab rollback` still work, or say exactly what to repair."""
    app = rows
    images = app.images
    app.deploy(images.v2)
    corrupt(app, what)
    with Fault(app, f"VM {what}") as fault:
        status = app.fab("status")
        out = output(status)
        assert status.returncode == 0, out
        assert "Traceback" not in out
        release = re.search(r"^release:\s+(\S+)", out, re.M).group(1)
        assert release == images.v2, out
        if what == ".env: garbage lines":  # compose refuses the file: status says what to do
            assert "warning: docker compose cannot read the app" in out, out
            assert ".env: line" in out and "`fab setup` rewrites" in out, out
        elif what == ".env: deleted" and app.postgres:
            # its services read .env (env_file): compose refuses to run without it, and status
            # shows compose's error, not the warning before it (POSTGRES_PASSWORD is not set)
            assert re.search(r"^warning: docker compose cannot read the app: env file "
                             r"\S+/\.env not found", out, re.M), out
            assert "`fab setup` rewrites" in out, out
        else:
            assert re.search(r"^health:\s+healthy$", out, re.M), out
        proc = app.fab("rollback")
        rolled = output(proc)
        fault.done(proc.returncode, out + rolled)
        fault.row.exit = f"status {status.returncode}, rollback {proc.returncode}"
        assert "Traceback" not in rolled
        if what == "history: deleted":
            # Nothing says which release came before: the tool says how to name one.
            clean_failure(rolled, proc.returncode)
            assert "no earlier release" in rolled and "--tag=" in rolled
            fault.row.message = first_message(rolled)
            proc = app.fab("rollback", f"--tag={images.v1}")
            rolled = output(proc)
        assert proc.returncode == 0, rolled
        assert f"rolled back to {images.v1}" in rolled
        warned = [line for line in (out + rolled).splitlines() if "warning" in line]
        if what != "history: deleted":
            assert warned, out + rolled
            fault.row.message = shorten_warning(warned[0])
        assert served(app) == "1"
        assert app.release_env(".deploy/release.env")["DEPLOY_TAG"] == images.v1
        assert "garbage" not in app.vm(".env").read_text()
        fault.rows_intact()
        assert lock_state(app) == "free"
        fault.settle()
        fault.then(f"rollback: serves 1, .env repaired, {row_count(app)} rows")


def shorten_warning(line: str) -> str:
    return first_message(line.split("] ", 1)[-1])


# --------------------------------------------------------------------------- 8: disk full


@BOTH
def test_the_backup_disk_full_stops_the_deploy_before_migrating(rows):
    """backups/ on a full tmpfs: the free-disk check refuses before the backup starts (SQLite:
    the file's size; Postgres: pg_database_size), with the figures. (A disk that fills during
    the backup: test_vm_commands' cp that fails halfway.)"""
    app = rows
    images = app.images
    schema_before = schema(app)
    with Fault(app, "backup disk full") as fault, full_tmpfs(app, "backups"):
        proc = app.fab("deploy", f"--tag={images.v2}")
        out = output(proc)
        fault.done(proc.returncode, out)
        clean_failure(out, proc.returncode)
        assert "to back up the database: 0 B free on " in out  # df's own figure
        assert "the database's size, plus disk_headroom_mb 256 MB); nothing was changed" in out
        assert "free disk space" in out
        assert not [n for n in app.backups() if n.endswith(".part")]  # no partial copy left
        assert schema(app) == schema_before and app.db_revision() == "0001"
        serving_good(app)
        assert lock_state(app) == "free"
        fault.rows_intact()
    rerun(app, fault, images.v2, what="space freed, re-run")


# --------------------------------------------------------------------------- 9: two at once


def test_two_inv_deploys_at_the_same_moment(fresh_rows, images):
    app = fresh_rows  # its repo gets v2's commit; its history is counted from the first
    apply_v2(app.repo)
    tag = git(app.repo, "rev-parse", "--short=7", "HEAD")
    with Fault(app, "two inv deploy at once") as fault:
        runs = [start_inv(app, "deploy", "--skip-tests") for _ in range(2)]
        results = [run.wait(timeout=300) for run in runs]
        codes = sorted(code for code, _ in results)
        loser = next(out for code, out in results if code != 0)
        fault.done(codes[-1], loser)
        fault.row.exit = " and ".join(str(c) for c in codes)
        assert codes == [0, 1], results
        assert "locked by another deploy" in loser and f"deploy of {tag}" in loser
        assert "wait for it to finish" in loser and "Traceback" not in loser
        # refused before its test and build steps (neither printed anything)
        assert not re.search(r"^\[local\] (test|build) |^#\d+ | passed in ", loser, re.M)
        assert [e["tag"] for e in app.history()] == [images.v1, tag]
        assert served(app) == "2"
        assert lock_state(app) == "free"
        fault.rows_intact()
        fault.then("exactly one deployed")


# --------------------------------------------------------------------------- bad input


def write(path: Path, text: str):
    old = path.read_text()
    path.write_text(text)
    return lambda: path.write_text(old)


def bad_input_cases(app, images, tmp_path):
    """(name, argv, env, prepare -> undo, expected text, 'connections' or 'logins')."""
    marker = tmp_path / "pwned"
    empty_known = tmp_path / "known_hosts_empty"
    empty_known.write_text("")
    other_key = tmp_path / "other_host_key"
    import subprocess

    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other_key)],
                   check=True)
    keytype, blob = other_key.with_suffix(".pub").read_text().split()[:2]
    changed_known = tmp_path / "known_hosts_changed"
    target = app.settings()
    name = target.host if target.port == 22 else f"[{target.host}]:{target.port}"
    changed_known.write_text(f"{name} {keytype} {blob}\n")
    not_a_key = tmp_path / "not_a_key"
    not_a_key.write_text("this is not a key\n")
    repo = app.repo
    never = unique("never-")
    v2 = f"--tag={images.v2}"
    nothing = None
    return [
        ("tag with ;", ["deploy", f"--tag=x;touch {marker}"], {}, nothing,
         "is not a valid Docker tag", "connections"),
        ("tag with $( )", ["rollback", f"--tag=$(touch {marker})"], {}, nothing,
         "is not a valid Docker tag", "connections"),
        ("tag with a space", ["deploy", "--tag=a b"], {}, nothing,
         "is not a valid Docker tag", "connections"),
        ("tag of 129 chars", ["deploy", "--tag=" + "a" * 129], {}, nothing,
         "is not a valid Docker tag", "connections"),
        ("upper-case tag", ["deploy", f"--tag={images.v2}-RC1"], {}, nothing,
         "requires lower-case tags", "connections"),
        ("upper-case tag (rollback)", ["rollback", "--tag=V1"], {}, nothing,
         "requires lower-case tags", "connections"),
        ("unknown host", ["deploy", v2], {"DEPLOY_HOST": "no-such-host.invalid"}, nothing,
         "unknown host 'no-such-host.invalid'", "connections"),
        ("unknown host key", ["deploy", v2], {"DEPLOY_KNOWN_HOSTS": str(empty_known)},
         nothing, "is unknown: refusing", "logins"),
        ("changed host key", ["deploy", v2], {"DEPLOY_KNOWN_HOSTS": str(changed_known)},
         nothing, "CHANGED since it was trusted", "logins"),
        ("missing SSH key", ["deploy", v2], {"DEPLOY_KEY_FILE": str(tmp_path / "nokey")},
         nothing, "does not exist", "connections"),
        ("SSH key is a directory", ["deploy", v2], {"DEPLOY_KEY_FILE": str(tmp_path)},
         nothing, "is not a file", "connections"),
        ("SSH key is not a key", ["deploy", v2], {"DEPLOY_KEY_FILE": str(not_a_key)},
         nothing, "is not an SSH private key", "connections"),
        ("unknown setting", ["deploy", v2], {},
         lambda: write(repo / "deploy.toml", (repo / "deploy.toml").read_text()
                       + 'colour = "blue"\n'), "unknown setting 'colour'", "connections"),
        ("setting of a wrong type", ["deploy", v2], {"DEPLOY_PORT": "twenty-two"}, nothing,
         "must be a whole number", "connections"),
        ("no image name", ["deploy", v2], {"DEPLOY_IMAGE": ""}, nothing,
         "setting 'image' is not set", "connections"),
        ("malformed .env", ["deploy", v2], {},
         lambda: write(repo / ".env", (repo / ".env").read_text() + "NOT A VALID LINE\n"),
         ".env line", "connections"),
        ("compose file does not parse (fab setup)", ["setup"], {},
         lambda: write(repo / "compose.yaml", "services: [app\n  image: x\n"),
         "does not parse as YAML", "connections"),
        ("compose file does not parse (inv check)", ["inv", "check"], {},
         lambda: write(repo / "compose.yaml", "services: [app\n  image: x\n"),
         "does not parse as YAML", "connections"),
        ("deploy a tag never pushed", ["deploy", f"--tag={never}"], {}, nothing,
         "is not in the registry", "connections"),
        ("rollback to a tag never released", ["rollback", f"--tag={never}"], {}, nothing,
         "is not in the registry", "connections"),
    ]


def test_bad_input_is_refused_before_anything_changes(rows, images, sshd, tmp_path):
    """Each is refused with a one-line message, no traceback, no SSH login, nothing changed."""
    app = rows
    failures = []
    for name, argv, env, prepare, expected, kind in bad_input_cases(app, images, tmp_path):
        undo = prepare() if prepare else None
        before = app.snapshot()
        row = Row(f"bad input: {name}", before=served(app), rows_before=str(row_count(app)))
        try:
            if argv[0] == "inv":
                action = lambda argv=argv, env=env: app.inv(*argv[1:], env=env)  # noqa: E731
            else:
                action = lambda argv=argv, env=env: app.fab(*argv, env=env)  # noqa: E731
            proc, count, lines = sshd.measure(action, kind, 0)
        finally:
            if undo:
                undo()
        out = output(proc)
        row.exit, row.message = str(proc.returncode), first_message(out)
        row.after, row.rows_after, row.lock = served(app), str(row_count(app)), lock_state(app)
        row.during = "-"
        row.then = f"no SSH {'login' if kind == 'logins' else 'connection'}, VM unchanged"
        problems = []
        if proc.returncode != 1:
            problems.append(f"exit {proc.returncode}")
        if "Traceback" in out:
            problems.append("traceback")
        if expected not in out:
            problems.append(f"no {expected!r}")
        if count:
            problems.append(f"{count} SSH {kind}")
        if app.snapshot() != before:
            problems.append("VM files changed")
        errors = [line for line in out.splitlines() if line.startswith("error:")]
        if argv[0] != "inv" and len(errors) != 1:
            problems.append(f"{len(errors)} error lines")
        row.result = "ok" if not problems else "FAILED"
        RESULTS.append(row)
        if problems:
            failures.append(f"{name}: {', '.join(problems)}\n{out}")
    assert not (tmp_path / "pwned").exists()
    assert not failures, "\n\n".join(failures)


# --------------------------------------------------------------------------- secrets


def test_secrets_never_show_in_output_history_or_command_lines(make_app, images):
    image = f"{REGISTRY}/{unique('rt-secret-')}"
    app = make_app(image=image)
    password, app_secret = secrets.token_hex(16), secrets.token_hex(16)
    env_file = app.repo / ".env"
    env_file.write_text("".join(f"APP_SECRET={app_secret}\n" if line.startswith("APP_SECRET=")
                                else line for line in
                                env_file.read_text().splitlines(keepends=True)))
    # verbose: every command is printed, so secrets must be redacted from all of them
    creds = {"DEPLOY_REGISTRY_USER": "ci", "DEPLOY_REGISTRY_PASSWORD": password,
             "DEPLOY_VERBOSE": "1"}
    docker_config = Path.home() / ".docker" / "config.json"
    saved = docker_config.read_bytes() if docker_config.exists() else None
    row = Row("secrets during inv deploy")
    try:
        with PsSampler() as ps:
            outputs = [app.fab("setup", env=creds), app.inv("deploy", env=creds),
                       app.fab("status", env=creds), app.fab("releases", env=creds)]
        texts = [output(p) for p in outputs]
        for proc, text in zip(outputs, texts, strict=True):
            assert proc.returncode == 0, text
        assert "--password-stdin" in texts[0]  # the VM logged in to the registry
        assert "--password-stdin" in texts[1]  # and so did the local push
        assert app.wait_http("/health") == 200  # the app got its secret
        history = app.vm(".deploy/history.jsonl").read_text()
        places = {"output": "\n".join(texts), "history": history,
                  "command lines": "\n".join(ps.lines)}
        assert ps.samples > 50, ps.samples
        for secret in (password, app_secret):
            for where, text in places.items():
                assert secret not in text, f"a secret shows in the {where}"
        row.before, row.during, row.after = "-", f"{ps.samples} ps samples", served(app)
        row.exit, row.message = "0", "password and APP_SECRET in no output, history, ps"
        row.lock, row.result = lock_state(app), "ok"
    finally:
        RESULTS.append(row)
        if saved is None:
            docker_config.unlink(missing_ok=True)
        else:
            docker_config.write_bytes(saved)
        remove_local_images(image)
        delete_from_registry(image.split("/", 1)[1])


# --------------------------------------------------------------------------- 4: engine restart
# Last: it restarts every container on this machine.


@BOTH
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["restart", "crash"])
def test_the_docker_engine_goes_down_during_the_health_wait(rows, sig):
    """dockerd stopped (SIGTERM, as `systemctl restart docker` does) or crashed (SIGKILL)
    while the deploy waits for health, then started again."""
    app = rows
    images = app.images
    watch = phases(app, images.v2)["health"]
    env = {"DEPLOY_HEALTH_TIMEOUT": "40" if sig == signal.SIGTERM else "12"}
    others = running_containers(app.machine)
    name = "restarted" if sig == signal.SIGTERM else "crashed (SIGKILL), started again"
    with Fault(app, f"Docker engine {name} during health wait") as fault:
        run = start_fab(app, "deploy", f"--tag={images.v2}", env=env)
        try:
            run.when(lambda: watch.running(app), lambda: kill_engine(app.machine, sig),
                     "the health wait")
        finally:  # after a crash, restart policies bring nothing back: no use waiting
            restore_engine(app.machine, others, wait=30 if sig == signal.SIGTERM else 0)
        code, out = run.wait(timeout=240)
        fault.done(code, out)
        assert "Traceback" not in out, out
        version = serving_good(app, ("1", "2"))
        if code == 0:  # the engine came back in time: the deploy finished
            assert version == "2" and app.history()[-1]["tag"] == images.v2
        else:
            clean_failure(out, code)
            assert version == "1"
        assert lock_state(app) == "free"
        fault.rows_intact()
        wait_until(lambda: app.wait_http("/health", 5) == 200, 60, 1, "the app")
        fault.then(f"engine back; serves {version}")
