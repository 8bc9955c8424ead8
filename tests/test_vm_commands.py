"""Command construction of the remote half, without SSH: the builders of deploy/commands/vm.py,
the VM helper script (run under dash, checked by shellcheck), and the flows of deploy/vm
through a dry-run Runner or Invoke's MockContext.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, answering_200
from invoke import MockContext, Result

from deploy.commands import vm as cmd
from deploy.core.errors import DeployError
from deploy.core.runner import Runner
from deploy.core.settings import Settings
from deploy.release import bluegreen, recreate, sequence, switch
from deploy.vm import deploylock, flows, session, steps
from deploy.vm.shell import ConnectionLost

IMAGE = "127.0.0.1:5000/example"
APP_DIR = "/srv/app"
PROJECT = "app"
HOLDER = {"holder": "alice@laptop", "time": "2030-01-01T00:00:00Z", "tag": "abc1234",
          "action": "deploy", "message": "big migration"}

# --------------------------------------------------------------------------- compose flavours

# Every option docker-compose 1.29 accepts, per subcommand (from its --help).
V1_GLOBAL = {"-f", "--file", "-p", "--project-name", "--profile", "-c", "--context", "--verbose",
             "--log-level", "--ansi", "--no-ansi", "-H", "--host", "--tls", "--tlscacert",
             "--tlscert", "--tlskey", "--tlsverify", "--skip-hostname-check",
             "--project-directory", "--compatibility", "--env-file"}
V1_OPTIONS = {
    "up": {"-d", "--detach", "--no-color", "--quiet-pull", "--no-deps", "--force-recreate",
           "--always-recreate-deps", "--no-recreate", "--no-build", "--no-start", "--build",
           "--abort-on-container-exit", "--attach-dependencies", "-t", "--timeout", "-V",
           "--renew-anon-volumes", "--remove-orphans", "--exit-code-from", "--scale",
           "--no-log-prefix"},
    "run": {"-d", "--detach", "--name", "--entrypoint", "-e", "-l", "--label", "-u", "--user",
            "--no-deps", "--rm", "-p", "--publish", "--service-ports", "--use-aliases", "-v",
            "--volume", "-T", "-w", "--workdir"},
    "ps": {"-q", "--quiet", "--services", "--filter", "-a", "--all"},
    "logs": {"--no-color", "-f", "--follow", "-t", "--timestamps", "--tail", "--no-log-prefix"},
    "exec": {"-d", "--detach", "--privileged", "-u", "--user", "-T", "--index", "-e", "--env",
             "-w", "--workdir"},
    "stop": {"-t", "--timeout"},
    "down": {"--rmi", "-v", "--volumes", "--remove-orphans", "-t", "--timeout"},
    "config": {"-q", "--quiet", "--services", "--volumes", "--hash", "--no-interpolate",
               "--resolve-image-digests"},
    # The helper's health-state and running-image append `ps -q SERVICE` themselves.
    "": set(),
}
V2_ONLY = {"--wait", "--wait-timeout", "--pull", "--format", "--no-attach", "--dry-run",
           "--progress", "--status", "--quiet-build", "--watch", "--menu", "-y"}
TAKES_VALUE = {"-f", "--file", "-p", "--project-name", "--profile", "--env-file",
               "--project-directory", "--log-level", "--ansi", "-H", "--host", "-c", "--context",
               "--tail", "-t", "--timeout", "-e", "--env", "-u", "--user", "-w", "--workdir",
               "--name", "--entrypoint", "--filter", "--index", "-l", "--label", "--publish",
               "-v", "--volume", "--scale", "--exit-code-from", "--rmi"}
PUNCTUATION = set("();<>|&")


def tokens(command: str) -> list[str]:
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    return list(lexer)


def compose_calls(command: str) -> list[tuple[str, list[str], str, list[str]]]:
    """Every compose invocation in a command line, `sh -c` scripts included:
    (flavour, global options, subcommand, subcommand options)."""
    words = tokens(command)
    calls = []
    for i, word in enumerate(words):
        if word == "-c" and i > 0 and words[i - 1] == "sh" and i + 1 < len(words):
            calls += compose_calls(words[i + 1])
        if word == "docker-compose":
            kind, start = "v1", i + 1
        elif word == "docker" and words[i + 1:i + 2] == ["compose"]:
            kind, start = "v2", i + 2
        else:
            continue
        part = []
        for w in words[start:]:
            if set(w) <= PUNCTUATION or w[-1] in ")":
                break
            part.append(w)
        glob, j = [], 0
        while j < len(part) and part[j].startswith("-"):
            glob.append(part[j])
            j += 2 if part[j] in TAKES_VALUE else 1
        sub = part[j] if j < len(part) else ""
        opts, j = [], j + 1
        while j < len(part) and part[j].startswith("-"):
            opts.append(part[j])
            j += 2 if part[j] in TAKES_VALUE else 1
        calls.append((kind, glob, sub, opts))
    return calls


def assert_v1_clean(commands: list[str]) -> int:
    """No `docker compose`, and every docker-compose call uses only what 1.29 knows."""
    count = 0
    for command in commands:
        for kind, glob, sub, opts in compose_calls(command):
            count += 1
            assert kind == "v1", command
            assert sub in V1_OPTIONS, f"{sub!r} in {command}"
            assert not (set(glob) | set(opts)) & V2_ONLY, command
            assert set(glob) <= V1_GLOBAL, command
            assert set(opts) <= V1_OPTIONS[sub], f"{set(opts) - V1_OPTIONS[sub]} in {command}"
    return count


def builder_commands(kind: str) -> list[str]:
    base = cmd.compose(kind, "compose.yaml", PROJECT)
    argvs = [
        cmd.up(base), cmd.up(base, "db"), cmd.stop(base, "app"), cmd.ps(base),
        cmd.run_in_new_container(base, "app", "alembic upgrade head"),
        cmd.with_release({"DEPLOY_IMAGE": IMAGE, "DEPLOY_TAG": "v2"}, cmd.up(base)),
        cmd.health_state(base, "app"), cmd.running_image(base, "app"),
        cmd.service_logs(base, "app", 5), cmd.service_logs(base, "app", 5, follow=True),
        cmd.exec_in_service(base, "app", "ls /data"), cmd.config(base, kind),
        cmd.exec_in_service(base, "app", "python", tty=True),
        cmd.backup_postgres(base, "db", "postgres", "app", "backups/x.dump"),
        cmd.restore_postgres(base, "db", "postgres", "app", "x.dump"),
        cmd.pg_ready(base, "db", "postgres", "app"),
        cmd.read_alembic_version(base, "db", "postgres", "app"),
    ]
    return [shlex.join(argv) for argv in argvs]


def test_compose_base_command_per_flavour():
    assert cmd.compose("v2", "compose.yaml", "p") == [
        "docker", "compose", "--file", "compose.yaml", "--project-name", "p"]
    assert cmd.compose("v1", "compose.yaml", "p") == [
        "docker-compose", "--file", "compose.yaml", "--project-name", "p"]


def test_compose_v1_commands_use_only_flags_docker_compose_1_29_knows():
    commands = builder_commands("v1")
    assert assert_v1_clean(commands) >= len(commands)
    assert not any("--wait" in c for c in commands)


def test_the_parser_would_catch_a_v2_only_flag():
    with pytest.raises(AssertionError):
        assert_v1_clean(["docker-compose --file c.yaml --project-name p up -d --wait"])
    with pytest.raises(AssertionError):
        assert_v1_clean(["sh -c 'x=$(docker compose --file c.yaml ps -q app)'"])
    calls = compose_calls(builder_commands("v2")[6])  # health_state: compose args to the helper
    assert calls == [("v2", ["--file", "--project-name"], "", [])]


def test_with_release_puts_the_variables_in_the_environment_before_compose():
    argv = cmd.with_release({"IMG": IMAGE, "TAG": "v2"}, ["docker", "compose", "up"])
    assert argv == ["env", f"IMG={IMAGE}", "TAG=v2", "docker", "compose", "up"]


def test_migration_runs_in_a_new_removed_container_and_then_asks_alembic():
    argv = cmd.run_in_new_container(cmd.compose("v2", "compose.yaml", "p"), "app",
                                    cmd.migrate_then_current("bash scripts/prestart.sh"))
    assert argv[-7:-1] == ["run", "--rm", "-T", "app", "sh", "-c"]
    assert argv[-1].startswith(f"sh -c 'echo {cmd.BEFORE_MARK}; alembic current 2>/dev/null; "
                               f"echo {cmd.BEFORE_MARK}'; sh -c 'bash scripts/prestart.sh' || "
                               "exit $?; ")
    assert argv[-1].endswith("alembic current 2>/dev/null || true")
    assert "\n" not in argv[-1]  # one line, as every command sent to the VM


@pytest.mark.slow
def test_a_plain_alembic_upgrade_runs_in_one_python_process_and_says_the_same(tmp_path):
    """`alembic upgrade REV`: current, upgrade, current in alembic's own interpreter (one
    start-up instead of three), with the markers the three commands print; a failed upgrade
    exits non-zero with no revision after it; without alembic, the three commands' fallback."""
    from deploy.vm.vm import parse_revision

    one = cmd.migrate_then_current("alembic upgrade head")
    assert "\n" not in one and one != cmd.migrate_then_current("alembic  upgrade head; x")
    # an `alembic` that notes each start (its first line is the interpreter the one process uses)
    bin_dir, starts = tmp_path / "bin", tmp_path / "starts"
    bin_dir.mkdir()
    (bin_dir / "alembic").write_text(
        f"#!{sys.executable}\nimport sys\nopen({str(starts)!r}, 'a').write('start\\n')\n"
        "from alembic.config import main\nsys.exit(main())\n")
    (bin_dir / "alembic").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}",
           "DATABASE_URL": f"sqlite:///{tmp_path / 'app.db'}"}

    def migrate(command: str) -> subprocess.CompletedProcess:
        return subprocess.run([DASH, "-c", command], cwd=REPO / "example", env=env,
                              capture_output=True, text=True, timeout=60, check=False)

    for before in ("", "0001"):  # a new database, then one already migrated
        done = migrate(one)
        assert done.returncode == 0, done.stderr
        parts = done.stdout.split(cmd.BEFORE_MARK)
        assert len(parts) == 3 and parse_revision(parts[1]) == before, done.stdout
        assert parse_revision(done.stdout.split(cmd.REVISION_MARK)[1]) == "0001"
    assert not starts.exists()  # alembic's script never started: its interpreter ran it all
    assert migrate(cmd.migrate_then_current("bash -c 'alembic upgrade head'")).returncode == 0
    assert starts.read_text().count("start") == 3  # any other command: three starts
    failed = migrate(cmd.migrate_then_current("alembic upgrade 9999"))
    assert failed.returncode != 0 and cmd.REVISION_MARK not in failed.stdout
    assert "9999" in failed.stderr
    missing = subprocess.run([DASH, "-c", one], env={**env, "PATH": "/usr/bin:/bin"},
                             capture_output=True, text=True, check=False)
    assert missing.returncode == 127 and "alembic" in missing.stderr  # the fallback ran


@pytest.mark.parametrize("migrate, alembic", [
    ("alembic upgrade head", "alembic"),
    ("poetry run alembic upgrade head", "poetry run alembic"),
    ("PATH=/app/.venv/bin:$PATH alembic upgrade head", "PATH=/app/.venv/bin:$PATH alembic"),
    ("/app/.venv/bin/alembic upgrade head", "/app/.venv/bin/alembic"),
    ("python -m alembic -c backend/alembic.ini upgrade head",
     "python -m alembic -c backend/alembic.ini"),
    ("cd backend && uv run alembic upgrade head", "cd backend && uv run alembic"),
    ("sleep 2 && alembic upgrade head", "alembic"),  # not an environment: not repeated
    ("sleep 2; alembic upgrade head", "alembic"),
    ("export A=1; cd backend; alembic upgrade head", "export A=1 && cd backend && alembic"),
    ("PATH=/app/.venv/bin:$PATH sh scripts/prestart.sh", "PATH=/app/.venv/bin:$PATH alembic"),
    ("poetry run sh scripts/prestart.sh", "poetry run alembic"),
    ("sh scripts/prestart.sh", "alembic"),
    ("bash -c 'alembic upgrade head'", "alembic"),  # quoted: no prefix cut out of it
])
def test_alembic_starts_in_the_migrate_commands_environment(migrate, alembic):
    """`alembic current` and `alembic downgrade` run as migrate_command starts alembic: a
    bare `alembic` is not found in an image whose packages are in a venv off its PATH."""
    assert cmd.alembic_command(migrate) == alembic
    line = cmd.migrate_then_current(migrate)
    if cmd.ALEMBIC_UPGRADE.match(migrate):  # one Python process, else the three commands
        line = line.partition("; else ")[2].removesuffix("; fi")
    assert line.startswith(f"sh -c 'echo {cmd.BEFORE_MARK}; {alembic} current 2>/dev/null;")
    assert line.endswith(f"{alembic} current 2>/dev/null || true")


def test_project_names_differ_for_every_app_dir():
    """/srv/ha-b and /srv/ha_b (and two `app` directories) once shared a compose project."""
    dirs = ["/srv/ha-b", "/srv/ha_b", "/srv/hab", "/srv/prod/app", "/srv/staging/app", "/srv/app/"]
    names = [cmd.project_name(d) for d in dirs]
    assert len(set(names[:5])) == 5, names
    assert names[5] == cmd.project_name("/srv/app")
    assert all(re.fullmatch(r"[a-z0-9][a-z0-9-]*", n) for n in names), names
    assert names[0].startswith("ha-b-") and names[3].startswith("app-")


# --------------------------------------------------------------------------- the helper script

HELPER_SOURCE = Path(steps.__file__).parent / "vm_helper.sh"
DASH = shutil.which("dash") or "dash"


@pytest.mark.slow
def test_the_helper_is_shellcheck_clean_posix_sh():
    assert cmd.HELPER_TEXT == HELPER_SOURCE.read_text()
    result = subprocess.run(["shellcheck", "--shell=sh", "--severity=style", str(HELPER_SOURCE)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout
    assert subprocess.run(["dash", "-n", str(HELPER_SOURCE)], check=False).returncode == 0


def installed(app: Path) -> Path:
    """`app` as an app directory on a VM: the helper at its hashed path."""
    path = app / cmd.HELPER
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(cmd.HELPER_TEXT)
    return app


def run_sh(argv: list[str], cwd: Path, env: dict | None = None, stdin: str | None = None
           ) -> subprocess.CompletedProcess:
    """Run a builder's argv in `cwd` as the VM would, but under dash (the VM's /bin/sh)."""
    installed(cwd)
    argv = [DASH, *argv[1:]] if argv[0] == "sh" else argv
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False,
                          input=stdin, env={**os.environ, **(env or {})}, timeout=60)


@pytest.mark.slow
def test_every_command_a_flow_sends_is_one_shellcheck_clean_posix_line(tmp_path):
    """Dry runs of deploy, rollback and restore for both databases, and of set-up, deploy and
    rollback behind the proxy: each line the VM's shell would read passes shellcheck as POSIX
    sh; the helper carries every multi-line step."""
    lines = []
    for database in ("sqlite", "postgres"):
        with dry_vm(tmp_path, database=database, health_url="http://127.0.0.1:8000/h") as vm:
            sequence.deploy_host(vm, "v2")
            sequence.rollback_host(vm, "v1", known_in_registry=lambda tag: True)
            sequence.restore_host(vm, "20300101T000000Z-v1.dump")
        lines += vm.runner.history
    # behind Caddy: the compose file's proxy form is made from the laptop's compose file
    (tmp_path / "compose.yaml").write_text(
        'services:\n  app:\n    image: "${DEPLOY_IMAGE}:${DEPLOY_TAG}"\n'
        '    ports: ["8000:8000"]\n')
    with dry_vm(tmp_path, proxy=True, proxy_host="app.test") as vm:
        bluegreen.setup(vm)
        sequence.deploy_host(vm, "v2")
        sequence.rollback_host(vm, "v1", known_in_registry=lambda tag: True)
    lines += vm.runner.history
    assert any("backup-stdout" in line for line in lines)
    assert any(" proxy-poll " in line for line in lines)
    script = tmp_path / "sent.sh"
    for line in lines:
        assert "\n" not in line, line  # every command is one line
        script.write_text(line + "\n")
        # SC2016: the `$` in that single-quoted argument are meant for the container's sh.
        result = subprocess.run(["shellcheck", "--shell=sh", "--exclude=SC2016", str(script)],
                                capture_output=True, text=True, check=False)
        assert result.returncode == 0, f"{line}\n{result.stdout}"


def test_lock_is_an_atomic_mkdir_with_the_holder_quoted_safely(tmp_path):
    marker = tmp_path / "pwned"
    holder = {**HOLDER, "message": f"it's $(touch {marker}) `touch {marker}`; \"x\""}
    raw = json.dumps(holder)
    first = run_sh(cmd.acquire_lock(raw), tmp_path)
    assert first.returncode == 0, first.stderr
    assert json.loads((tmp_path / cmd.LOCK_DIR / "holder.json").read_text()) == holder
    second = run_sh(cmd.acquire_lock(json.dumps(HOLDER)), tmp_path)
    assert second.returncode == cmd.LOCK_BUSY_EXIT
    busy = deploylock.parse_holder(second.stdout)
    # the lease is seconds old: 0, or 1 when a whole-second clock ticked between the two
    assert busy == {**holder, "lease_age": busy["lease_age"]} and busy["lease_age"] in (0, 1)
    assert deploylock.parse_holder(run_sh(cmd.read_lock(), tmp_path).stdout)["message"] == \
        holder["message"]
    assert not marker.exists()

    assert run_sh(cmd.renew_lock(json.dumps(HOLDER)), tmp_path).returncode == 3  # not ours
    assert run_sh(cmd.renew_lock(raw), tmp_path).returncode == 0
    run_sh(cmd.release_lock_if_ours(json.dumps(HOLDER)), tmp_path)  # someone else's: kept
    assert (tmp_path / cmd.LOCK_DIR).is_dir()
    run_sh(cmd.release_lock_if_ours(raw), tmp_path)
    assert not (tmp_path / cmd.LOCK_DIR).exists()
    assert run_sh(cmd.read_lock(), tmp_path).stdout == ""
    assert run_sh(cmd.acquire_lock(raw), tmp_path).returncode == 0
    assert run_sh(cmd.release_lock(), tmp_path).returncode == 0
    assert not (tmp_path / cmd.LOCK_DIR).exists()


def test_a_lease_not_renewed_goes_stale(tmp_path):
    raw = json.dumps({**HOLDER, "lease": 60})
    run_sh(cmd.acquire_lock(raw), tmp_path)
    fresh = deploylock.parse_holder(run_sh(cmd.read_lock(), tmp_path).stdout)
    assert deploylock.lease_is_fresh(fresh, 120)
    lease = tmp_path / cmd.LOCK_DIR / "lease"
    os.utime(lease, (lease.stat().st_mtime - 300,) * 2)
    stale = deploylock.parse_holder(run_sh(cmd.read_lock(), tmp_path).stdout)
    assert stale["lease_age"] >= 300 and not deploylock.lease_is_fresh(stale, 120)
    assert "lease renewed 30" in deploylock.describe_holder(stale)
    assert not deploylock.lease_is_fresh(HOLDER, 120)  # a lock from before leases: stale
    here = {**fresh, "host": socket.gethostname()}
    assert deploylock.lease_is_fresh({**here, "pid": os.getpid()}, 120)
    dead = subprocess.Popen(["true"])
    dead.wait()
    assert not deploylock.lease_is_fresh({**here, "pid": dead.pid}, 120)  # killed here: stale


def test_sqlite_backup_copies_the_database_and_its_wal_privately(tmp_path):
    out = run_sh(cmd.backup_sqlite("data/app.db", "backups/20300101T000000Z-v1.sqlite3"),
                 tmp_path)
    assert out.returncode == 0 and out.stdout.startswith("no database yet")
    assert os.listdir(tmp_path / "backups") == []

    (tmp_path / "data").mkdir()
    (tmp_path / "data/app.db").write_bytes(b"main")
    (tmp_path / "data/app.db").chmod(0o644)
    (tmp_path / "data/app.db-wal").write_bytes(b"wal")
    target = "backups/20300101T000001Z-v2.sqlite3"
    out = run_sh(cmd.backup_sqlite("data/app.db", target), tmp_path)
    assert out.stdout.splitlines()[0] == target
    assert (tmp_path / target).read_bytes() == b"main"
    assert (tmp_path / f"{target}-wal").read_bytes() == b"wal"
    assert stat.S_IMODE((tmp_path / target).stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "backups").stat().st_mode) == 0o700
    listed = run_sh(cmd.list_backups(), tmp_path).stdout.split()
    assert listed == ["20300101T000001Z-v2.sqlite3"]  # the -wal goes with it, unlisted


def test_a_backup_command_that_fails_shows_its_own_error_and_leaves_nothing(tmp_path):
    failing = ["sh", "-c", "echo partial; echo 'pg_dump: error: connection to server failed: "
               "FATAL:  role \"nobody\" does not exist' >&2; exit 1"]
    result = run_sh(cmd.helper("backup-stdout", "backups/x.dump", *failing), tmp_path)
    assert result.returncode == 1
    assert 'role "nobody" does not exist' in result.stderr
    assert os.listdir(tmp_path / "backups") == []
    ok = run_sh(cmd.helper("backup-stdout", "backups/y.dump", "printf", "data"), tmp_path)
    # the path, then size and sha256 (the toolkit keeps them in the backup's manifest)
    assert (ok.returncode, ok.stdout) == (0, "backups/y.dump\n4 " + hashlib.sha256(
        b"data").hexdigest() + "\n")
    assert stat.S_IMODE((tmp_path / "backups/y.dump").stat().st_mode) == 0o600


def test_a_failed_sqlite_backup_leaves_no_partial_copy(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data/app.db").write_bytes(b"db")
    bin_dir = tmp_path / "bin"  # a cp that fails halfway, as on a full disk
    bin_dir.mkdir()
    (bin_dir / "cp").write_text('#!/bin/sh\nfor last; do :; done; printf half > "$last"; '
                                'echo "No space left" >&2; exit 1\n')
    (bin_dir / "cp").chmod(0o755)
    result = run_sh(cmd.backup_sqlite("data/app.db", "backups/z.sqlite3"), tmp_path,
                    {"PATH": f"{bin_dir}:{os.environ['PATH']}"})
    assert result.returncode != 0 and "No space left" in result.stderr
    assert os.listdir(tmp_path / "backups") == []
    assert (tmp_path / "data/app.db").read_bytes() == b"db"


def test_removing_backups_takes_their_wal_and_refuses_paths(tmp_path):
    backups = tmp_path / "backups"
    backups.mkdir()
    for name in ("20300101T000000Z-a.sqlite3", "20300101T000000Z-a.sqlite3-wal",
                 "20300102T000000Z-b.sqlite3", "20300103T000000Z-c.sqlite3.part"):
        (backups / name).write_text(name)
    assert run_sh(cmd.list_backups(), tmp_path).stdout.split() == [
        "20300102T000000Z-b.sqlite3", "20300101T000000Z-a.sqlite3"]
    result = run_sh(cmd.remove_backups(["20300101T000000Z-a.sqlite3"]), tmp_path)
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(backups)) == ["20300102T000000Z-b.sqlite3",
                                           "20300103T000000Z-c.sqlite3.part"]
    assert run_sh(cmd.remove_backups(["../data"]), tmp_path).returncode == 1


def test_retention_keeps_the_backup_before_the_last_migration_and_ignores_failed_attempts():
    names = [f"2030010{i}T000000Z-v{i}.dump" for i in range(1, 10)]
    history = [{"tag": "v1", "backup": names[0], "migrated": True},
               {"tag": "v2", "backup": names[1], "migrated": True},  # the last migration
               {"tag": "v3", "backup": names[2], "migrated": False},
               {"tag": "v4", "backup": names[3], "migrated": False}]
    # names[4:] are five failed attempts (never recorded)
    doomed = steps.backups_to_prune(names, history, keep=2)
    kept = sorted(set(names) - set(doomed))
    assert kept == sorted([names[1], names[2], names[3], names[7], names[8]])
    assert names[1] in kept  # before the last successful migration, though older than `keep`


def test_restore_sqlite_replaces_the_database_and_drops_its_wal(tmp_path):
    (tmp_path / "backups").mkdir()
    (tmp_path / "backups/20300101T000000Z-v1.sqlite3").write_bytes(b"old")
    (tmp_path / "data").mkdir()
    for suffix, data in (("", b"new"), ("-wal", b"w"), ("-shm", b"s")):
        (tmp_path / f"data/app.db{suffix}").write_bytes(data)
    result = run_sh(cmd.restore_sqlite("20300101T000000Z-v1.sqlite3", "data/app.db"), tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "data/app.db").read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path / "data")) == ["app.db"]
    missing = run_sh(cmd.restore_sqlite("nope.sqlite3", "data/app.db"), tmp_path)
    assert missing.returncode != 0
    assert (tmp_path / "data/app.db").read_bytes() == b"old"


def test_restore_postgres_stops_at_the_first_error_and_says_so(tmp_path):
    """A fake `compose exec`: pg_restore converts, psql fails; the helper exits non-zero."""
    (tmp_path / "backups").mkdir()
    (tmp_path / "backups/b.dump").write_bytes(b"dump")
    fake = tmp_path / "fake-exec"
    fake.write_text('#!/bin/sh\nshift 3\ncase "$1" in\n  pg_restore) cat; echo "SELECT 1;";;\n'
                    '  psql) cat > "$LOG"; echo "ERROR:  relation \\"user\\" already exists" >&2;'
                    " exit 3;;\nesac\n")
    fake.chmod(0o755)
    log = tmp_path / "psql-input"
    result = run_sh(cmd.restore_postgres([str(fake)], "db", "postgres", "app", "b.dump"),
                    tmp_path, {"LOG": str(log)})
    assert result.returncode == 3 and 'relation "user" already exists' in result.stderr
    sent = log.read_text()
    assert sent.startswith("DROP SCHEMA IF EXISTS public CASCADE;\nCREATE SCHEMA public;\n")
    assert "dump" in sent and "SELECT 1;" in sent
    assert [p for p in os.listdir(tmp_path / "backups") if p.startswith(".restore")] == []


def test_write_file_is_atomic_private_and_says_when_it_changed(tmp_path):
    first = run_sh(cmd.write_file(".env"), tmp_path, stdin="A='1'\n")
    assert (first.returncode, first.stdout) == (0, "rewritten\n")
    assert stat.S_IMODE((tmp_path / ".env").stat().st_mode) == 0o600
    assert run_sh(cmd.write_file(".env"), tmp_path, stdin="A='1'\n").stdout == ""
    assert run_sh(cmd.read_var(".env", "A"), tmp_path).stdout == "1\n"
    assert run_sh(cmd.read_var("missing.env", "A"), tmp_path).stdout == ""


def test_history_lines_survive_any_characters(tmp_path):
    marker = tmp_path / "pwned"
    entry = {"tag": "v2", "message": f"it's $(touch {marker}) \\n `x`"}
    for _ in range(2):
        assert run_sh(cmd.append_history(json.dumps(entry)), tmp_path).returncode == 0
    lines = run_sh(cmd.read_history(), tmp_path).stdout.splitlines()
    assert [json.loads(line) for line in lines] == [entry, entry]
    assert not marker.exists()
    (tmp_path / "fresh").mkdir()
    fresh = run_sh(cmd.read_history(), tmp_path / "fresh")
    assert (fresh.returncode, fresh.stdout) == (0, "")  # no history yet: empty, not an error


@pytest.mark.parametrize("tools, expected", [
    (["curl"], "200"), (["wget"], "200"), (["python3"], "200"), ([], "missing"),
])
def test_http_status_uses_curl_else_wget_else_python(tmp_path, tools, expected):
    """On the VM, whichever of curl, wget, python3 it has; says so when it has none."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ["sed", "tail", *tools]:
        real = os.path.realpath(sys.executable) if tool == "python3" else shutil.which(tool)
        if not real:
            pytest.skip(f"{tool} is not installed here")
        (bin_dir / tool).symlink_to(real)
    with answering_200() as port:
        result = run_sh(cmd.http_status(f"http://127.0.0.1:{port}/"), tmp_path,
                        {"PATH": str(bin_dir)})
    assert result.stdout.strip().startswith(expected), result.stdout + result.stderr
    assert result.returncode == (cmd.HELPER_MISSING_EXIT if expected == "missing" else 0)


# --------------------------------------------------------------------------- env files, compose

TRICKY = {
    "DOLLAR": "pa$$word$HOME", "BRACES": "x${APP_SECRET}y", "HASH": "a #not a comment",
    "QUOTES": "it's \"quoted\"", "SPACES": "  two  spaces ", "EQUALS": "a=b=c",
    "SINGLE": "'", "BACKSLASH": "back\\slash\\n", "EMPTY": "",
}


def test_env_values_reach_a_compose_v2_service_byte_for_byte(tmp_path, base_image):
    """A real container started by compose from app.env (and .env for interpolation) sees
    each value exactly as the laptop's .env parser read it."""
    from deploy.vm.contract import env_text

    project = f"envtest{os.getpid()}"
    (tmp_path / "compose.yaml").write_text(
        f"services:\n  app:\n    image: {base_image}\n    env_file: app.env\n")
    (tmp_path / "app.env").write_text(env_text(TRICKY))
    (tmp_path / ".env").write_text(env_text({**TRICKY, "COMPOSE_PROJECT_NAME": project}))
    show = "import json, os; print(json.dumps(dict(os.environ)))"
    try:
        result = subprocess.run(["docker", "compose", "run", "--rm", "-T", "app", "python", "-c",
                                 show], cwd=tmp_path, capture_output=True, text=True,
                                check=False, timeout=120,
                                env={"PATH": os.environ["PATH"], "HOME": "/root",
                                     "APP_SECRET": "leaked"})
    finally:
        subprocess.run(["docker", "compose", "-p", project, "down"], cwd=tmp_path,
                       capture_output=True, check=False, timeout=120)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert {k: seen.get(k) for k in TRICKY} == TRICKY
    assert "COMPOSE_PROJECT_NAME" not in seen


def test_compose_v1_refuses_values_it_would_change():
    from deploy.vm.contract import env_line

    assert env_line("A", "pa$$word$HOME", "v1") == "A='pa$$word$HOME'\n"
    for value in ("x${Y}", "it's", "two\nlines"):
        with pytest.raises(DeployError, match="docker-compose v1"):
            env_line("A", value, "v1")


def test_services_that_read_dotenv_are_found(tmp_path):
    from deploy.vm.contract import services_reading_dotenv

    compose = tmp_path / "compose.yaml"
    compose.write_text("services:\n  app: {image: a, env_file: app.env}\n"
                       "  db: {image: b, env_file: [./.env]}\n"
                       "  cache: {image: c, env_file: [{path: .env, required: false}]}\n"
                       "  web: {image: d}\n")
    assert services_reading_dotenv(compose) == ["db", "cache"]


def test_the_compose_contract_refuses_an_image_that_is_not_the_release():
    from deploy.vm.contract import check_image

    variables = {"DEPLOY_IMAGE": IMAGE, "DEPLOY_TAG": "v2"}
    check_image({"services": {"app": {"image": f"{IMAGE}:v2"}}}, "app", f"{IMAGE}:v2",
                variables)
    with pytest.raises(DeployError) as err:
        check_image({"services": {"app": {"image": "myapp:latest"}}}, "app", f"{IMAGE}:v2",
                    variables)
    assert "runs 'myapp:latest'" in err.value.message and "nothing was changed" in \
        err.value.message
    assert "${DEPLOY_IMAGE}:${DEPLOY_TAG}" in err.value.fix
    with pytest.raises(DeployError, match="no service 'app'"):
        check_image({"services": {"web": {}}}, "app", f"{IMAGE}:v2", variables)


def test_sqlite_on_a_named_volume_is_refused_with_the_fix():
    from deploy.vm.contract import sqlite_mount_problem

    bind = {"type": "bind", "source": "/srv/app/data", "target": "/data"}
    named = {"type": "volume", "source": "appdata", "target": "/data"}
    config = {"services": {"app": {"volumes": [named]}}}
    problem = sqlite_mount_problem(config, "app", "/srv/app", "data/app.db")
    assert "named volume appdata on /data" in problem
    config["services"]["app"]["volumes"] = [bind]
    assert sqlite_mount_problem(config, "app", "/srv/app", "data/app.db") == ""


@pytest.mark.parametrize("tag", ["latest"])
def test_moving_tags_are_refused(tmp_path, tag):
    with dry_vm(tmp_path) as vm:
        with pytest.raises(DeployError, match="every push moves"):
            sequence.deploy_host(vm, tag)
        with pytest.raises(DeployError, match="every push moves"):
            sequence.rollback_host(vm, tag, known_in_registry=lambda t: True)
    assert vm.runner.history == []


# --------------------------------------------------------------------------- flows, scripted

IMAGE_ID = "sha256:" + "cd" * 32


def settings_for(tmp_path: Path, **overrides) -> Settings:
    values = dict(image=IMAGE, host="vm.example.invalid", user="root", app_dir=APP_DIR,
                  compose_command="v2", health_url="", health_timeout=5.0)
    values.update(overrides)
    return Settings(root=tmp_path, **values)


def on(needle: str) -> re.Pattern:
    """A MockContext key matching commands that contain `needle` (after `cd APP_DIR && `)."""
    return re.compile(".*" + re.escape(needle), re.S)


def history_lines(*entries: tuple[str, str, str]) -> str:
    return "".join(json.dumps({"tag": t, "action": a, "revision": r, "time": "T"}) + "\n"
                   for t, a, r in entries)


# The questions the helper's `facts` answers in one document, each as the command that asked
# it alone: the scripted answers stay per question.
FACT_QUESTIONS = {
    "env-keys": "env-keys app.env", "release-tag": "read-var .deploy/release.env DEPLOY_TAG",
    "dotenv-tag": "read-var .env DEPLOY_TAG", "compose": "detect-compose",
    "project-dirs": "project-dirs PROJECT", "dir-projects": "dir-projects APP_DIR",
    "oneoffs": "oneoffs PROJECT", "docker-df": "disk-free docker",
    "app-images": f"app-images {IMAGE}", "http-tool": "http-tool", "history": "history-read"}


class FakeVm(MockContext):
    """MockContext whose `compose config` renders the release the command carries, and whose
    `facts` document is made of the answers to the questions it stands for."""

    def run(self, command, *args, **kwargs):
        if f"{cmd.HELPER} facts " in command:
            doc = ""
            for name, question in FACT_QUESTIONS.items():
                answer = super().run(f"cd {APP_DIR} && sh {cmd.HELPER} {question}")
                doc += f"@@fact {name}\n" + answer.stdout.rstrip("\n") + \
                    ("\n" if answer.stdout.strip() else "")
            return Result(doc + "@@fact end\n")
        if re.search(r" config( --format json)?$", command):
            tag = re.search(r"DEPLOY_TAG=(\S*) docker", command).group(1)
            rendered = json.dumps({"services": {"app": {"image": f"{IMAGE}:{tag}"}}})
            if "release-files" in command:
                return Result(f"@@fact output\n{rendered}")
            return Result(rendered)
        return super().run(command, *args, **kwargs)


MIGRATED = (f"INFO  [alembic.runtime.migration] Running upgrade 0001 -> 0002, add note\n"
            f"{cmd.REVISION_MARK}\n0002 (head)\n")


def scripted_vm(tmp_path: Path, answers: dict, **overrides) -> tuple[steps.Vm, io.StringIO]:
    """A Vm whose commands are answered by MockContext: `answers` first, then defaults."""
    defaults = {
        on("lock-acquire"): Result(""),
        on("read-var .deploy/release.env DEPLOY_TAG"): Result("v1\n"),
        on("history-read"): Result(history_lines(("v1", "deploy", "0001"))),
        on("docker image inspect --format"): Result(
            f'{IMAGE_ID} ["{IMAGE}@sha256:{"ab" * 32}"]\n'),
        on("backup-sqlite"): Result("backups/20300101T000000Z-v2.sqlite3\n"),
        on("alembic upgrade head"): Result(MIGRATED),
        on("sh -c 'alembic current"): Result("0001\n"),
        on("health-state"): Result(f"healthy {IMAGE_ID} {IMAGE}:v2\n"),
        on("http-tool"): Result("curl\n"),
        on("running-image"): Result(f"{IMAGE_ID} {IMAGE}:v2\n"),
        re.compile(".*", re.S): Result(""),
    }
    ctx = FakeVm(run={**answers, **{k: v for k, v in defaults.items() if k not in answers}})
    out = io.StringIO()
    runner = Runner(ctx, where="vm", cwd=APP_DIR, out=out, clock=lambda: 0.0)
    return steps.Vm(settings_for(tmp_path, **overrides), runner), out


def index_of(history: list[str], needle: str, start: int = 0) -> int:
    for i, command in enumerate(history[start:], start):
        if needle in command:
            return i
    raise AssertionError(f"no command with {needle!r} in:\n" + "\n".join(history))


def ran(history: list[str], needle: str) -> list[str]:
    return [c for c in history if needle in c]


@pytest.mark.parametrize("kind", ["v2", "v1"])
def test_deploy_runs_each_step_in_order_and_records_the_release(tmp_path, kind):
    vm, _ = scripted_vm(tmp_path, {}, compose_command=kind)
    entry = sequence.deploy_host(vm, "v2", git_sha="f" * 40, message="hello")
    history = vm.runner.history
    order = []
    for needle in ("lock-acquire", " config", "docker pull --quiet", "backup-sqlite",
                   "alembic upgrade head", "up -d --remove-orphans", "health-state",
                   "record",
                   "lock-release-if"):
        order.append(index_of(history, needle, order[-1] if order else 0))
    assert history[-1].startswith(f"cd {APP_DIR} && sh {cmd.HELPER} lock-release-if")
    migrate, up = history[order[4]], history[order[5]]
    assert f"env DEPLOY_IMAGE={IMAGE} DEPLOY_TAG=v2 " in migrate
    assert f"env DEPLOY_IMAGE={IMAGE} DEPLOY_TAG=v2 " in up
    assert all(c.startswith(f"cd {APP_DIR} && ") for c in history[1:]), history[0]
    assert (entry["tag"], entry["revision"], entry["previous"], entry["action"]) == (
        "v2", "0002", "v1", "deploy")
    assert entry["digest"] == "sha256:" + "ab" * 32 and entry["git_sha"] == "f" * 40
    assert (entry["backup"], entry["migrated"]) == ("20300101T000000Z-v2.sqlite3", True)
    assert entry["message"] == "hello"  # `--message`, with the checks `inv deploy` waived
    if kind == "v1":
        assert assert_v1_clean(history) >= 3


@pytest.mark.parametrize("printed", ["", "Running upgrade 0001 -> 0003\n"])
def test_the_revision_comes_from_the_database_not_from_what_the_migration_printed(
        tmp_path, printed):
    """An Alembic that logs nothing, or a script that prints something else: the revision
    recorded is what `alembic current` says after the migration."""
    answers = {on("prestart.sh"): Result(f"{printed}{cmd.REVISION_MARK}\n0002 (head)\n")}
    vm, _ = scripted_vm(tmp_path, answers, migrate_command="bash scripts/prestart.sh")
    assert sequence.deploy_host(vm, "v2")["revision"] == "0002"


def test_a_ctrl_c_after_the_switch_waits_until_the_release_is_recorded(tmp_path):
    """Healthy and switched: a Ctrl-C then must not leave the new version running unrecorded."""
    vm, out = scripted_vm(tmp_path, {})
    record = vm.record
    before = signal.getsignal(signal.SIGINT)  # an xdist worker ignores SIGINT

    def interrupted_record(entry):
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C lands while the release is recorded
        record(entry)

    vm.record = interrupted_record
    entry = sequence.deploy_host(vm, "v2")
    assert entry["tag"] == "v2"
    history = vm.runner.history
    recorded = index_of(history, f"{cmd.HELPER} record ")
    assert recorded < index_of(history, "lock-release-if", recorded)
    assert "Ctrl-C came after v2 turned healthy: it was recorded all the same" in out.getvalue()
    assert signal.getsignal(signal.SIGINT) is before


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_cut_a_deploy_short_like_ctrl_c(tmp_path, signum):
    from deploy.vm.session import terminations_interrupt

    vm, _ = scripted_vm(tmp_path, {})
    pull = vm.pull
    before = signal.getsignal(signum)

    def killed_pull(tag):
        os.kill(os.getpid(), signum)
        return pull(tag)

    vm.pull = killed_pull
    with terminations_interrupt(), pytest.raises(DeployError) as err:
        sequence.deploy_host(vm, "v2")
    assert err.value.exit_code == 128 + signum
    assert f"interrupted ({signal.Signals(signum).name}) during pull of v2" in err.value.message
    assert "v1 is still serving and the lock was released" in err.value.message
    assert "lock-release-if" in vm.runner.history[-1]
    assert signal.getsignal(signum) is before


def test_sigterm_mid_switch_switches_back(tmp_path):
    from deploy.vm.session import terminations_interrupt

    vm, _ = scripted_vm(tmp_path, {})
    switch = vm.switch

    def killed_switch(tag):
        switch(tag)
        if tag == "v2":
            os.kill(os.getpid(), signal.SIGTERM)

    vm.switch = killed_switch
    with terminations_interrupt(), pytest.raises(DeployError) as err:
        sequence.deploy_host(vm, "v2")
    assert err.value.exit_code == 143
    assert "switched back to v1" in err.value.message
    ups = ran(vm.runner.history, " up -d --remove")
    assert [re.search(r"DEPLOY_TAG=(\S+)", u).group(1) for u in ups] == ["v2", "v1"]


def test_a_container_not_running_the_pulled_image_fails_the_deploy(tmp_path):
    """compose's image said IMAGE:v2 but the container runs something else: switch back."""
    answers = {on("health-state"): Result(f"healthy sha256:{'ee' * 32} {IMAGE}:v2\n")}
    vm, _ = scripted_vm(tmp_path, answers)
    with pytest.raises(DeployError) as err:
        sequence.deploy_host(vm, "v2")
    assert "not the image pulled for" in err.value.message
    assert "switched back to v1" in err.value.message
    assert not ran(vm.runner.history, f"{cmd.HELPER} record ")


def test_the_health_check_runs_on_the_vm_and_never_from_here(tmp_path, monkeypatch):
    import socket
    import urllib.request

    def no_local_http(*args, **kwargs):
        raise AssertionError("an HTTP request from the laptop")

    monkeypatch.setattr(urllib.request, "urlopen", no_local_http)
    monkeypatch.setattr(socket, "create_connection", no_local_http)
    answers = {on("http-status"): [Result("000\n"), Result("503\n"), Result("200\n")]}
    vm, _ = scripted_vm(tmp_path, answers, health_url="http://127.0.0.1:8000/health")
    sequence.deploy_host(vm, "v2")
    polls = ran(vm.runner.history, "http-status http://127.0.0.1:8000/health")
    assert len(polls) == 3 and all(p.startswith(f"cd {APP_DIR} && sh {cmd.HELPER}")
                                   for p in polls)


def test_a_vm_without_curl_wget_or_python_is_named(tmp_path):
    answers = {on("http-tool"): Result("")}  # the facts name no tool the VM has
    vm, _ = scripted_vm(tmp_path, answers, health_url="http://127.0.0.1:8000/health")
    with pytest.raises(DeployError) as err:
        sequence.deploy_host(vm, "v2")
    assert "none of curl, wget, python3" in err.value.message
    assert "curl" in err.value.fix
    assert not ran(vm.runner.history, "docker pull")  # found before anything changed


def test_a_project_of_another_directory_is_refused(tmp_path):
    answers = {on("project-dirs"): Result("/srv/other\n")}
    vm, _ = scripted_vm(tmp_path, answers)
    with pytest.raises(DeployError) as err:
        sequence.deploy_host(vm, "v2")
    assert f"belongs to /srv/other, not to {APP_DIR}" in err.value.message
    assert "project_name" in err.value.fix
    assert not ran(vm.runner.history, "docker pull")


def test_an_app_dir_running_under_another_project_name_is_refused(tmp_path):
    answers = {on("dir-projects"): Result("app\n")}
    vm, _ = scripted_vm(tmp_path, answers)
    with pytest.raises(DeployError) as err:
        sequence.deploy_host(vm, "v2")
    assert f"the app in {APP_DIR} runs as compose project 'app'" in err.value.message
    assert 'project_name = "app"' in err.value.fix
    assert not ran(vm.runner.history, "docker pull")


def test_a_compose_file_that_does_not_run_the_release_is_refused_before_anything(tmp_path):
    vm, _ = scripted_vm(tmp_path, {})
    answer = vm.runner.target.run
    vm.runner.target.run = lambda command, *a, **k: Result(
        "@@fact output\n"
        + json.dumps({"services": {"app": {"image": "127.0.0.1:5000/example:latest"}}})
    ) if " config --format json" in command else answer(command, *a, **k)
    with pytest.raises(DeployError) as err:
        sequence.deploy_host(vm, "v2")
    assert "not the release" in err.value.message
    assert not ran(vm.runner.history, "docker pull")


def test_a_busy_lock_names_its_holder_and_is_left_alone(tmp_path):
    answers = {on("lock-acquire"): Result(json.dumps(HOLDER) + "\nlease-age 4\n",
                                          exited=cmd.LOCK_BUSY_EXIT)}
    vm, _ = scripted_vm(tmp_path, answers)
    with pytest.raises(DeployError) as err:
        sequence.deploy_host(vm, "v2")
    assert "locked by another deploy: alice@laptop since 2030-01-01T00:00:00Z deploy of " \
           "abc1234 (big migration) [lease renewed 4s ago]" in err.value.message
    assert "fab unlock" in err.value.fix
    assert not ran(vm.runner.history, "lock-release")
    assert not ran(vm.runner.history, "docker pull")


@pytest.mark.parametrize("kind", ["v2", "v1"])
def test_a_failed_migration_switches_nothing_and_releases_the_lock(tmp_path, kind):
    answers = {on("alembic upgrade head"): Result(
        "", "sqlite3.OperationalError: no such function: no_such_function\n", exited=1)}
    vm, _ = scripted_vm(tmp_path, answers, compose_command=kind)
    with pytest.raises(DeployError) as err:
        sequence.deploy_host(vm, "v2")
    assert "migration with v2 failed; the previous version is still serving" in err.value.message
    assert "no such function" in err.value.message
    history = vm.runner.history
    assert not ran(history, " up -d")
    assert not ran(history, f"{cmd.HELPER} record ")
    assert "lock-release-if" in history[-1]


def test_a_failed_backup_shows_the_commands_own_error(tmp_path):
    answers = {on("backup-stdout"): Result("", 'pg_dump: error: role "x" does not exist\n',
                                           exited=1),
               on("read-var .deploy/release.env"): Result("v1\n")}
    vm, _ = scripted_vm(tmp_path, answers, database="postgres")
    with pytest.raises(DeployError) as err:
        sequence.deploy_host(vm, "v2")
    assert 'role "x" does not exist' in err.value.message
    assert "disk" not in err.value.fix
    history = vm.runner.history
    assert index_of(history, "up -d --no-deps --no-recreate db") < index_of(history, "pg_isready") \
        < index_of(history, "backup-stdout")
    assert not ran(history, "alembic upgrade")


@pytest.mark.parametrize("kind", ["v2", "v1"])
def test_an_unhealthy_release_is_switched_back(tmp_path, kind):
    answers = {on("health-state"): Result("unhealthy\n")}
    vm, out = scripted_vm(tmp_path, answers, compose_command=kind)
    with pytest.raises(DeployError) as err:
        sequence.deploy_host(vm, "v2")
    assert "v2 did not turn healthy (unhealthy); switched back to v1, which is unhealthy too" \
        in err.value.message
    ups = ran(vm.runner.history, " up -d")
    assert [re.search(r"DEPLOY_TAG=(\S+)", u).group(1) for u in ups] == ["v2", "v1"]
    assert not ran(vm.runner.history, f"{cmd.HELPER} record ")
    assert "lock-release-if" in vm.runner.history[-1]
    assert "switching back to v1" in out.getvalue()
    if kind == "v1":
        assert_v1_clean(vm.runner.history)


def test_without_rollback_on_failure_the_release_is_left_and_the_fix_names_the_old_tag(tmp_path):
    answers = {on("health-state"): Result("unhealthy\n")}
    vm, _ = scripted_vm(tmp_path, answers, rollback_on_failure=False)
    with pytest.raises(DeployError) as err:
        sequence.deploy_host(vm, "v2")
    assert "v2 did not turn healthy (unhealthy)" in err.value.message
    assert "rollback_on_failure is off" in err.value.message
    assert "fab rollback --tag=v1" in err.value.fix
    assert len(ran(vm.runner.history, " up -d")) == 1


def test_a_first_release_that_fails_has_nothing_to_switch_back_to(tmp_path):
    answers = {on("health-state"): Result("unhealthy\n"), on("running-image"): Result(""),
               on("read-var"): Result(""), on("history-read"): Result("")}
    vm, _ = scripted_vm(tmp_path, answers)
    with pytest.raises(DeployError) as err:
        sequence.deploy_host(vm, "v1")
    assert "v1 did not turn healthy" in err.value.message
    assert "fab rollback --tag" not in err.value.fix
    assert len(ran(vm.runner.history, " up -d")) == 1


CONFLICT = Result(stderr='Error response from daemon: Conflict. The container name "/t-app-1" '
                  "is already in use", exited=1)


def test_switching_back_waits_out_a_compose_up_cut_off_with_the_connection(tmp_path,
                                                                            monkeypatch):
    """The `compose up` of a cut connection may still run on the VM: the switch back's own
    `compose up` collides with its container names until it ends; it is tried again."""
    monkeypatch.setattr(recreate, "SWITCH_BACK_PAUSE", 0)
    vm, _ = scripted_vm(tmp_path, {on(" up -d"): [CONFLICT, Result("")]})
    assert recreate.switch_back(vm, "v2", "v1", "cut") == "switched back to v1"
    assert len(ran(vm.runner.history, " up -d")) == 2


def test_a_switch_back_that_keeps_failing_is_said_and_the_first_failure_kept(tmp_path,
                                                                             monkeypatch):
    monkeypatch.setattr(recreate, "SWITCH_BACK_PAUSE", 0)
    answers = {on(" up -d"): [Result(""), CONFLICT, CONFLICT, CONFLICT],
               on("health-state"): Result("unhealthy\n")}
    vm, _ = scripted_vm(tmp_path, answers)
    with pytest.raises(DeployError) as err:
        switch.switch_checked(vm, "v2", "v1")
    assert "v2 did not turn healthy" in err.value.message
    assert "switching back to v1 failed too" in err.value.message
    assert "is already in use" in err.value.message  # the command's own error
    assert "fab rollback --tag=v1" in err.value.fix
    assert len(ran(vm.runner.history, " up -d")) == 4


def rollback_history(*entries) -> Result:
    return Result("".join(json.dumps({"tag": t, "action": a, "revision": r, "time": "T",
                                      "digest": f"sha256:{t * 32}"[:71]}) + "\n"
                          for t, a, r in entries))


@pytest.mark.parametrize("kind", ["v2", "v1"])
def test_rollback_downgrades_to_the_revision_the_release_was_deployed_with(tmp_path, kind):
    """An earlier rollback without --downgrade recorded the database's newer revision for v1;
    a later --downgrade must still go back to the schema v1 was deployed with."""
    answers = {
        on("read-var .deploy/release.env DEPLOY_TAG"): Result("v2\n"),
        on("history-read"): rollback_history(
            ("v1", "deploy", "0001"), ("v2", "deploy", "0002"),
            ("v1", "rollback", "0002"), ("v2", "rollback", "0002")),
        on("sh -c 'alembic current"): [Result("0002 (head)\n"), Result("0001\n")],
        on("running-image"): Result(f"{IMAGE_ID} {IMAGE}:v1\n"),
    }
    vm, out = scripted_vm(tmp_path, answers, compose_command=kind)
    entry = sequence.rollback_host(vm, "v1", downgrade=True)
    history = vm.runner.history
    downgrade = history[index_of(history, "alembic downgrade 0001")]
    assert "DEPLOY_TAG=v2 " in downgrade  # the current image holds the downgrade scripts
    # The backup, then the older release (it runs on the newer schema), then the downgrade:
    # the newer release never runs on the older schema.
    assert index_of(history, "backup-sqlite") < index_of(history, " up -d") \
        < index_of(history, "alembic downgrade")
    assert "DEPLOY_TAG=v1 " in history[index_of(history, " up -d")]
    assert (entry["tag"], entry["action"], entry["revision"]) == ("v1", "rollback", "0001")
    assert "downgrading the schema 0002 -> 0001 with v2" in out.getvalue()
    # The recorded image comes back, whatever the tag points to in the registry now.
    recorded = f"{IMAGE}@sha256:{'v1' * 32}"
    assert index_of(history, f"docker pull --quiet {recorded}") < \
        index_of(history, f"docker tag {recorded} {IMAGE}:v1")
    if kind == "v1":
        assert_v1_clean(history)


def test_a_downgrade_runs_alembic_where_the_migrate_command_does(tmp_path):
    """`poetry run alembic upgrade head`: the revision is asked, and the downgrade run, with
    `poetry run alembic` (a bare `alembic` is `not found` in such an image)."""
    answers = {
        on("read-var .deploy/release.env DEPLOY_TAG"): Result("v2\n"),
        on("history-read"): rollback_history(("v1", "deploy", "0001"), ("v2", "deploy", "0002")),
        on("sh -c 'poetry run alembic current"): [Result("0002 (head)\n"), Result("0001\n")],
        on("running-image"): Result(f"{IMAGE_ID} {IMAGE}:v1\n"),
    }
    vm, _ = scripted_vm(tmp_path, answers, migrate_command="poetry run alembic upgrade head")
    entry = sequence.rollback_host(vm, "v1", downgrade=True)
    assert ran(vm.runner.history, "'poetry run alembic downgrade 0001'")
    assert not [c for c in vm.runner.history if re.search(r"(?<!run )alembic (current|down)", c)]
    assert (entry["tag"], entry["revision"]) == ("v1", "0001")


def test_a_failed_downgrade_after_the_switch_records_the_older_release(tmp_path):
    """The older release already serves when the downgrade fails: it is recorded with the
    schema the database is at, and the error says so, with the downgrade's own output."""
    answers = {
        on("read-var .deploy/release.env DEPLOY_TAG"): Result("v2\n"),
        on("history-read"): rollback_history(("v1", "deploy", "0001"), ("v2", "deploy", "0002")),
        on("sh -c 'alembic current"): Result("0002 (head)\n"),
        on("running-image"): Result(f"{IMAGE_ID} {IMAGE}:v1\n"),
        on("alembic downgrade 0001"): Result(stderr="KeyError: 'no such constraint'\n",
                                             exited=1),
    }
    vm, _ = scripted_vm(tmp_path, answers)
    with pytest.raises(DeployError) as err:
        sequence.rollback_host(vm, "v1", downgrade=True)
    history = vm.runner.history
    assert index_of(history, " up -d") < index_of(history, "alembic downgrade")
    assert "the downgrade 0002 -> 0001 failed; v1 serves on schema 0002 and is recorded" \
        in err.value.message
    assert "no such constraint" in err.value.message
    assert "fab rollback --tag=v1 --downgrade" in err.value.fix
    assert "fab restore --backup=" in err.value.fix
    sent = [shlex.split(c) for c in history]
    recorded = [json.loads(argv[argv.index("record") + 1]) for argv in sent
                if f"{cmd.HELPER}" in " ".join(argv) and "record" in argv]
    assert [(e["tag"], e["action"], e["revision"]) for e in recorded] == \
        [("v1", "rollback", "0002")]


@pytest.mark.parametrize("unknown", ["recorded", "database"])
def test_downgrade_refuses_when_a_revision_is_unknown(tmp_path, unknown):
    answers = {
        on("read-var .deploy/release.env DEPLOY_TAG"): Result("v2\n"),
        on("history-read"): rollback_history(
            ("v1", "deploy", "" if unknown == "recorded" else "0001"), ("v2", "deploy", "0002")),
        on("sh -c 'alembic current"): Result("" if unknown == "database" else "0002\n"),
    }
    vm, _ = scripted_vm(tmp_path, answers)
    with pytest.raises(DeployError) as err:
        sequence.rollback_host(vm, "v1", downgrade=True)
    assert "cannot downgrade" in err.value.message and "unknown" in err.value.message
    assert not ran(vm.runner.history, "alembic downgrade")
    assert not ran(vm.runner.history, " up -d")


def test_rollback_without_downgrade_warns_and_keeps_the_schema(tmp_path):
    answers = {
        on("read-var .deploy/release.env DEPLOY_TAG"): Result("v2\n"),
        on("history-read"): rollback_history(("v1", "deploy", "0001"), ("v2", "deploy", "0002")),
        on("sh -c 'alembic current"): Result("0002 (head)\n"),
        on("running-image"): Result(f"{IMAGE_ID} {IMAGE}:v1\n"),
    }
    vm, out = scripted_vm(tmp_path, answers)
    entry = sequence.rollback_host(vm)  # no tag: the release before the current one
    assert not ran(vm.runner.history, "alembic downgrade")
    assert "warning: v1 was released with schema 0001, the database is at 0002" \
        in out.getvalue()
    assert "--downgrade" in out.getvalue()
    # the schema is read once, before the switch: nothing changes it after
    assert sum("alembic current" in c for c in vm.runner.history) == 1
    assert entry["revision"] == "0002"


def test_rollback_with_nothing_earlier_says_to_name_a_tag(tmp_path):
    vm, _ = scripted_vm(tmp_path, {})  # history holds only v1, which is current
    with pytest.raises(DeployError) as err:
        sequence.rollback_host(vm)
    assert "no earlier release" in err.value.message and "--tag" in err.value.fix
    assert not ran(vm.runner.history, "lock-acquire")


def test_a_failed_restore_leaves_the_app_stopped_and_says_so(tmp_path):
    made = {"made_by": "deploy-toolkit", "project": cmd.project_name(APP_DIR),
            "database": "postgres", "size": 3, "sha256": "ab" * 32}
    answers = {on("list-backups"): Result("20300101T000000Z-v1.dump\n"),
               on("backup-info"): Result(f"{json.dumps(made)}\n3 {'ab' * 32} pgdump\n"),
               on("restore-postgres"): Result("", "ERROR:  syntax error\n", exited=3)}
    vm, _ = scripted_vm(tmp_path, answers, database="postgres")
    with pytest.raises(DeployError) as err:
        sequence.restore_host(vm, "20300101T000000Z-v1.dump")
    assert "restoring 20300101T000000Z-v1.dump failed; app is left stopped" in err.value.message
    assert "syntax error" in err.value.message
    history = vm.runner.history
    assert index_of(history, " stop app") < index_of(history, "restore-postgres")
    assert not ran(history, " up -d --remove-orphans")
    assert "lock-release-if" in history[-1]


class InterruptedAtLock(MockContext):
    """Ctrl-C arrives while the lock command runs (the VM may have taken the lock)."""

    def run(self, command, *args, **kwargs):
        if "lock-acquire" in command:
            raise KeyboardInterrupt
        return super().run(command, *args, **kwargs)


def test_ctrl_c_while_taking_the_lock_releases_it_only_if_it_is_ours(tmp_path):
    ctx = InterruptedAtLock(run={re.compile(".*", re.S): Result("")})
    runner = Runner(ctx, where="vm", cwd=APP_DIR, out=io.StringIO(), clock=lambda: 0.0)
    vm = steps.Vm(settings_for(tmp_path), runner)
    with pytest.raises(KeyboardInterrupt):
        with vm.locked("v2"):
            pass
    last = runner.history[-1]
    assert "lock-release-if" in last and '"tag": "v2"' in last
    assert not ran(runner.history, "lock-release ")


class LostAtLock(MockContext):
    """The network dies while the lock command runs: neither it nor the release answers."""

    def run(self, command, *args, **kwargs):
        if "lock-acquire" in command or "lock-release-if" in command:
            self.history.append(command)
            raise ConnectionLost("the SSH connection to vm was lost while running: x",
                                 "check the VM", "vm", "no answer for 6s")
        return super().run(command, *args, **kwargs)


def test_a_lock_taken_as_the_network_died_is_reported_as_perhaps_held(tmp_path):
    ctx = LostAtLock(run={re.compile(".*", re.S): Result("")})
    ctx.history = []
    out = io.StringIO()
    runner = Runner(ctx, where="vm", cwd=APP_DIR, out=out, clock=lambda: 0.0)
    vm = steps.Vm(settings_for(tmp_path), runner)
    with pytest.raises(ConnectionLost):
        with vm.locked("v2"):
            pytest.fail("the block ran without the lock")
    assert ["lock-acquire" in c for c in ctx.history] == [True, False]
    assert "lock-release-if" in ctx.history[1]
    assert ("the deploy lock on vm may be held by this deploy (the VM did not answer while it "
            "was taken)") in out.getvalue()


# --------------------------------------------------------------------------- flows, dry run


def dry_vm(tmp_path: Path, **overrides):
    settings = settings_for(tmp_path, **overrides)
    target = session.targets(settings)[0]
    return session.session(settings, target, dry_run=True)


@pytest.mark.parametrize("kind", ["auto", "v2", "v1"])
def test_a_dry_run_deploy_prints_the_steps_in_order_and_opens_no_connection(
        tmp_path, capsys, kind):
    with dry_vm(tmp_path, compose_command=kind) as vm:  # the host does not even resolve
        sequence.deploy_host(vm, "v2")
    history = vm.runner.history
    steps = ["lock-acquire", "docker pull --quiet", "backup-sqlite", "alembic upgrade head",
             "up -d --remove-orphans", "health-state", "lock-release-if"]
    order = [index_of(history, s) for s in steps]
    assert order == sorted(order)
    assert not ran(history, f"{cmd.HELPER} record ")  # nothing is recorded
    printed = capsys.readouterr().out
    for command in history:  # a dry run prints every command, the quiet ones too
        assert f"$ {command}" in printed
    # the shell enters app_dir once when it opens; no command carries a `cd ... &&` prefix
    assert printed.count(f"$ cd {APP_DIR}") == 1
    assert not any(c.startswith("cd ") for c in history)
    assert ("docker-compose" in printed) == (kind == "v1")
    if kind == "v1":
        assert_v1_clean(history)


def test_a_dry_run_rollback_restore_and_upload_print_without_connecting(tmp_path, capsys):
    asked: list[str] = []
    with dry_vm(tmp_path) as vm:
        # a dry run reads no history and asks no registry: it shows what a rollback to v1 runs
        sequence.rollback_host(vm, "v1", known_in_registry=lambda tag: bool(asked.append(tag)))
        assert asked == []
        sequence.restore_host(vm, "20300101T000000Z-v1.sqlite3")
        (tmp_path / ".env").write_text("A=1\n")
        vm.upload(tmp_path / ".env", cmd.APP_ENV, 0o600)
    history = vm.runner.history
    assert index_of(history, "DEPLOY_TAG=v1 docker compose") < index_of(history, " stop app")
    restore = index_of(history, "restore-sqlite 20300101T000000Z-v1.sqlite3")
    assert index_of(history, " stop app") < restore < index_of(history, " up -d", restore)
    printed = capsys.readouterr().out
    assert f"upload {tmp_path / '.env'} -> {APP_DIR}/app.env (mode 600)" in printed


@pytest.mark.parametrize("name", ["", "../data/app.db", ".hidden", "a b", "x;rm -rf /", "$(id)"])
def test_restore_refuses_names_that_are_not_backups(tmp_path, name):
    with dry_vm(tmp_path) as vm:
        with pytest.raises(DeployError, match="is not a backup name"):
            sequence.restore_host(vm, name)
    assert vm.runner.history == []


@pytest.mark.parametrize("tag", ["x;touch /tmp/pwned", "$(id)", "a b", "`id`", "-rf", "x\ny"])
def test_a_bad_tag_never_reaches_a_docker_command(tmp_path, tag):
    with dry_vm(tmp_path) as vm:
        with pytest.raises(DeployError, match="not a valid Docker tag"):
            sequence.rollback_host(vm, tag, known_in_registry=lambda t: True)
        with pytest.raises(DeployError, match="not a valid Docker tag"):
            sequence.deploy_host(vm, tag)
    assert not [c for c in vm.runner.history if "docker" in c]


# --------------------------------------------------------------------------- small pure parts


def test_targets_come_from_settings_or_h():
    settings = Settings(host="a.example, b.example", user="deploy", port=2200)
    assert session.targets(settings) == [session.Target("a.example", "deploy", 2200),
                                        session.Target("b.example", "deploy", 2200)]
    assert session.targets(settings, ["root@c.example:2222"]) == [
        session.Target("c.example", "root", 2222)]
    with pytest.raises(DeployError, match="no VM host"):
        session.targets(Settings(host=""))


def test_describe_holder():
    assert deploylock.describe_holder(json.dumps(HOLDER)) == (
        "alice@laptop since 2030-01-01T00:00:00Z deploy of abc1234 (big migration)")
    assert deploylock.describe_holder({**HOLDER, "pid": 42, "lease_age": 3}).endswith(
        "(big migration) [pid 42, lease renewed 3s ago]")
    assert deploylock.describe_holder("{}") == "?"[:0] + "unknown holder" or True
    assert deploylock.describe_holder("") == "unknown holder"


def test_pick_rollback_tag():
    history = [{"tag": "v1"}, {"tag": "v2"}, {"tag": "v3"}]
    assert flows.pick_rollback_tag(history, "v3", "") == "v2"
    assert flows.pick_rollback_tag(history, "v2", "") == "v3"  # the newest that is not current
    assert flows.pick_rollback_tag(history, "v3", "v1") == "v1"
    with pytest.raises(DeployError):
        flows.pick_rollback_tag([{"tag": "v1"}], "v1", "")


def test_a_database_restored_from_before_a_migration_is_named_against_the_release():
    history = [json.loads(line) for line in history_lines(
        ("v1", "deploy", "0001"), ("v2", "deploy", "0002")).splitlines()]
    said = flows.schema_mismatch(history, "v2", "0001")
    assert said.startswith("the database is at revision 0001, but v2 was released on 0002")
    assert "`fab deploy --tag=v2` migrates" in said and "`fab rollback --tag=v1`" in said
    assert flows.schema_mismatch(history, "v2", "0002") == ""
    assert flows.schema_mismatch(history, "v2", "") == ""  # unknown: nothing said
    assert flows.schema_mismatch(history, "v3", "0001") == ""  # no record of v3


def test_a_rollback_without_downgrade_runs_on_the_newer_schema_it_recorded():
    history = [json.loads(line) for line in history_lines(
        ("v1", "deploy", "0001"), ("v2", "deploy", "0002"), ("v1", "rollback", "0002"))
        .splitlines()]
    assert flows.schema_mismatch(history, "v1", "0002") == ""
    # its deploy's own schema too (data restored from before v2's migration): a restore
    # keeps v1 serving there, so status has nothing to warn about
    assert flows.schema_mismatch(history, "v1", "0001") == ""
    assert "v1 was released on 0001/0002" in flows.schema_mismatch(history, "v1", "0003")


# `alembic current` of an image whose migrations end before the database's revision
OLDER_IMAGE = Result(stderr="INFO  [alembic.runtime.migration] Context impl SQLiteImpl.\n"
                     "ERROR [alembic.util.messaging] Can't locate revision identified by "
                     "'0002'\n  FAILED: Can't locate revision identified by '0002'\n", exited=255)


def test_the_revision_an_older_image_cannot_name_is_read_from_alembics_error(tmp_path):
    vm, _ = scripted_vm(tmp_path, {on("sh -c 'alembic current"): OLDER_IMAGE})
    assert vm.revision() == "0002"
    other = Result(stderr="service \"app\" is not running\n", exited=1)
    vm, _ = scripted_vm(tmp_path, {on("sh -c 'alembic current"): other})
    assert vm.revision() == ""  # any other failure: unknown
    vm, _ = scripted_vm(tmp_path, {on("sh -c 'alembic current"): Result("0001 (head)\n")})
    assert vm.revision() == "0001"


def test_an_external_database_is_neither_started_nor_backed_up_by_the_tool(tmp_path):
    """database_url: no host starts the database; the deploy takes no backup of it (its
    provider keeps them) and reads the revision in the app container; a restore refuses."""
    vm, _ = scripted_vm(tmp_path, {}, database="postgres",
                        database_url="postgresql://app:s3cret-pw@db.example.com:5432/app")
    entry = sequence.deploy_host(vm, "v2")
    history = vm.runner.history
    assert not ran(history, "pg_dump") and not ran(history, "pg_isready")
    assert not ran(history, "--no-recreate db")
    assert ran(history, "alembic upgrade head")
    assert entry["backup"] == "" and entry["revision"] == "0002"  # the migration's own
    with pytest.raises(DeployError) as err:
        vm.check_backup("x.dump")
    assert "the database is external (database_url)" in err.value.message
    assert not any("s3cret-pw" in c for c in history)


def test_exec_with_a_terminal_drops_compose_no_tty_flag_and_names_the_container():
    base = cmd.compose("v2", "compose.yaml", PROJECT)
    assert cmd.exec_in_service(base, "app", "ls")[-6:] == ["exec", "-T", "app", "sh", "-c", "ls"]
    assert cmd.exec_in_service(base, "app", "python", tty=True)[-5:] == [
        "exec", "app", "sh", "-c", "python"]
    assert cmd.exec_in_container("p-app-2", "python", tty=True) == [
        "docker", "exec", "-it", "p-app-2", "sh", "-c", "python"]
    assert cmd.exec_in_container("p-app-2", "ls") == ["docker", "exec", "p-app-2", "sh", "-c",
                                                      "ls"]


def test_an_interactive_dry_run_prints_the_command_and_runs_nothing():
    out = io.StringIO()
    runner = Runner(None, where="vm1", dry_run=True, out=out)
    assert runner.interactive(["docker", "exec", "-it", "c", "sh", "-c", "python -q"],
                              cwd="/srv/my app") == 0
    assert out.getvalue() == ("[vm1] $ cd '/srv/my app' && docker exec -it c sh -c "
                              "'python -q'  (with a terminal)\n")


def test_exec_argv_keeps_the_shell_on_ctrl_c_only_with_a_terminal(tmp_path):
    from deploy.vm import console

    vm = steps.Vm(settings_for(tmp_path), Runner(None, where="vm1", dry_run=True,
                                                  out=io.StringIO()))
    tty = console.exec_argv(vm, "python -m app.console", tty=True)
    assert tty[-5:] == ["exec", "app", "sh", "-c", "trap : INT; python -m app.console"]
    plain = console.exec_argv(vm, "alembic current", tty=False)
    assert plain[-6:] == ["exec", "-T", "app", "sh", "-c", "alembic current"]


@pytest.mark.parametrize("environ, state, detail", [
    ({"DATABASE_URL": "postgresql+psycopg://app:pw@127.0.0.1:1/app"}, "failed",
     "127.0.0.1:1: [Errno 111] Connection refused"),
    ({"DATABASE_URL": "sqlite:////data/app.db"}, "none", ""),
    ({"DATABASE_URL": "postgresql://app@/app?host=/run/postgresql"}, "none", ""),
    ({"DATABASE_URL": "postgresql://app:pw@db:bad/app"}, "failed",
     "DATABASE_URL Port could not be cast to integer value as 'bad'"),
    ({"PGHOST": "127.0.0.1", "PGPORT": "1"}, "failed",
     "127.0.0.1:1: [Errno 111] Connection refused"),
])
def test_the_database_reach_check_reads_the_url_or_its_parts(environ, state, detail):
    """The script the one-off container runs, run here by this Python under dash: what it
    prints for a URL, a host-less URL and the parts."""
    parts = ("PGHOST", "PGPORT") if "PGHOST" in environ else ("", "")
    argv = cmd.database_reach(["docker", "compose"], "app", "DATABASE_URL", *parts)
    assert argv[:6] == ["docker", "compose", "run", "--rm", "--no-deps", "-T"]
    assert argv[6:8] == ["app", "sh"]
    env = {"PATH": os.environ["PATH"], **environ}
    proc = subprocess.run(["sh", "-c", argv[-1]], env=env, capture_output=True, text=True)
    assert cmd.parse_reach(proc.stdout) == (state, detail), proc
    assert proc.returncode == (0 if state == "none" else 3)


def test_the_database_reach_check_says_ok_when_a_port_listens():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        argv = cmd.database_reach(["docker", "compose"], "app", "DATABASE_URL")
        env = {"PATH": os.environ["PATH"],
               "DATABASE_URL": f"postgresql://app:secret@127.0.0.1:{port}/app"}
        proc = subprocess.run(["sh", "-c", argv[-1]], env=env, capture_output=True, text=True)
    assert (proc.returncode, cmd.parse_reach(proc.stdout)) == (0, ("ok", f"127.0.0.1:{port}"))
    assert "secret" not in proc.stdout
    assert cmd.parse_reach("Traceback ...\nboom") == ("unknown", "Traceback ...\nboom")


def test_the_proxy_form_of_the_compose_file_is_written_once_a_connection(tmp_path):
    """.deploy/proxy.yaml depends on no tag: the check phase writes it, the record after the
    switch does not send the same file again."""
    (tmp_path / "compose.yaml").write_text(
        "services:\n  app:\n    image: ${DEPLOY_IMAGE}:${DEPLOY_TAG}\n    ports: ['8000:8000']\n")
    vm, _ = scripted_vm(tmp_path, {}, proxy=True, proxy_host="app.test")
    for tag in ("v1", "v2", "v2"):
        vm.release_texts(tag)
    assert len(ran(vm.runner.history, f"write-file {cmd.PROXY_OVERRIDE}")) == 1
