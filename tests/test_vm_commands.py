"""Command construction of the remote half, without SSH: the builders of deploy/commands/vm.py,
and the flows of deploy/remote.py through a dry-run Runner or Invoke's MockContext.

The few builders that are shell scripts (lock, backups, .env, history, health polling) are also
run with the local `sh` in a temporary directory: that checks their quoting for real.
"""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import signal
import stat
import subprocess
from pathlib import Path

import pytest
from invoke import MockContext, Result

from deploy import remote
from deploy.commands import vm as cmd
from deploy.errors import DeployError
from deploy.runner import Runner
from deploy.runner import sh as runner_sh
from deploy.settings import Settings

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
        cmd.up(base), cmd.stop(base, "app"), cmd.ps(base),
        cmd.run_in_new_container(base, "app", "alembic upgrade head"),
        cmd.with_release(IMAGE, "v2", cmd.up(base)),
        cmd.health_state(base, "app"), cmd.wait_healthy(base, "app", 30),
        cmd.service_logs(base, "app", 5), cmd.service_logs(base, "app", 5, follow=True),
        cmd.exec_in_service(base, "app", "ls /data"),
        cmd.backup_postgres(base, "db", "postgres", "app", "20300101T000000Z-v2", 3),
        cmd.restore_postgres(base, "db", "postgres", "app", "20300101T000000Z-v2.sql.gz"),
    ]
    if hasattr(cmd, "running_image"):
        argvs.append(cmd.running_image(base, "app"))
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
    calls = compose_calls(builder_commands("v2")[5])  # health_state: inside $( ... )
    assert calls == [("v2", ["--file", "--project-name"], "ps", ["-q"])]


def test_with_release_puts_image_and_tag_in_the_environment_before_compose():
    argv = cmd.with_release(IMAGE, "v2", ["docker", "compose", "up"])
    assert argv == ["env", f"DEPLOY_IMAGE={IMAGE}", "DEPLOY_TAG=v2", "docker", "compose", "up"]


def test_migration_runs_in_a_new_removed_container_without_a_tty():
    argv = cmd.run_in_new_container(cmd.compose("v2", "compose.yaml", "p"), "app",
                                    "alembic upgrade head")
    assert argv[-7:] == ["run", "--rm", "-T", "app", "sh", "-c", "alembic upgrade head"]


# --------------------------------------------------------------------------- scripts, run by sh


def run_sh(argv: list[str], cwd: Path, env: dict | None = None
           ) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False,
                          env={**os.environ, **(env or {})}, timeout=60)


def test_lock_is_an_atomic_mkdir_with_the_holder_quoted_safely(tmp_path):
    marker = tmp_path / "pwned"
    holder = {**HOLDER, "message": f"it's $(touch {marker}) `touch {marker}`; \"x\""}
    raw = json.dumps(holder)
    first = run_sh(cmd.acquire_lock(raw), tmp_path)
    assert first.returncode == 0, first.stderr
    assert json.loads((tmp_path / cmd.HOLDER_FILE).read_text()) == holder
    second = run_sh(cmd.acquire_lock(json.dumps(HOLDER)), tmp_path)
    assert second.returncode == cmd.LOCK_BUSY_EXIT
    assert json.loads(second.stdout) == holder  # the holder is named, not overwritten
    assert json.loads(run_sh(cmd.read_lock(), tmp_path).stdout) == holder
    assert not marker.exists()

    run_sh(cmd.release_lock_if_ours(json.dumps(HOLDER)), tmp_path)  # someone else's: kept
    assert (tmp_path / cmd.LOCK_DIR).is_dir()
    run_sh(cmd.release_lock_if_ours(raw), tmp_path)
    assert not (tmp_path / cmd.LOCK_DIR).exists()
    assert run_sh(cmd.read_lock(), tmp_path).stdout == ""
    assert run_sh(cmd.acquire_lock(raw), tmp_path).returncode == 0
    assert run_sh(cmd.release_lock(), tmp_path).returncode == 0
    assert not (tmp_path / cmd.LOCK_DIR).exists()


def test_sqlite_backup_copies_the_database_and_its_wal(tmp_path):
    out = run_sh(cmd.backup_sqlite("data/app.db", "20300101T000000Z-v1", 5), tmp_path)
    assert out.returncode == 0 and out.stdout.startswith("no database yet")
    assert os.listdir(tmp_path / "backups") == []

    (tmp_path / "data").mkdir()
    (tmp_path / "data/app.db").write_bytes(b"main")
    (tmp_path / "data/app.db-wal").write_bytes(b"wal")
    out = run_sh(cmd.backup_sqlite("data/app.db", "20300101T000001Z-v2", 5), tmp_path)
    assert out.stdout.splitlines()[0] == "backups/20300101T000001Z-v2.sqlite3"
    assert (tmp_path / "backups/20300101T000001Z-v2.sqlite3").read_bytes() == b"main"
    assert (tmp_path / "backups/20300101T000001Z-v2.sqlite3-wal").read_bytes() == b"wal"
    listed = run_sh(cmd.list_backups(), tmp_path).stdout.split()
    assert listed == ["20300101T000001Z-v2.sqlite3"]  # the -wal goes with it, unlisted


def test_pruning_keeps_the_newest_backups_even_when_their_files_have_one_mtime(tmp_path):
    """`cp -p` gives every backup of an unchanged database the same mtime: order by name."""
    (tmp_path / "data").mkdir()
    db = tmp_path / "data/app.db"
    db.write_bytes(b"db")
    os.utime(db, (1_000_000_000, 1_000_000_000))
    names = [f"2030010{i}T000000Z-v2" for i in range(1, 5)]
    for name in names:
        result = run_sh(cmd.backup_sqlite("data/app.db", name, 2), tmp_path)
        assert result.returncode == 0, result.stderr
    kept = sorted(os.listdir(tmp_path / "backups"))
    assert kept == [f"{n}.sqlite3" for n in names[-2:]]
    assert run_sh(cmd.list_backups(), tmp_path).stdout.split() == [
        f"{names[-1]}.sqlite3", f"{names[-2]}.sqlite3"]


def test_pruning_removes_a_pruned_backups_wal_and_ignores_partial_copies(tmp_path):
    backups = tmp_path / "backups"
    backups.mkdir()
    for name in ("20300101T000000Z-a.sqlite3", "20300101T000000Z-a.sqlite3-wal",
                 "20300102T000000Z-b.sqlite3", "20300103T000000Z-c.sqlite3.part"):
        (backups / name).write_text(name)
    result = run_sh(runner_sh(cmd.prune_backups(1)), tmp_path)
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(backups)) == ["20300102T000000Z-b.sqlite3",
                                           "20300103T000000Z-c.sqlite3.part"]


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


def test_release_env_is_app_env_plus_the_release_mode_0600(tmp_path):
    (tmp_path / "app.env").write_text(
        "APP_SECRET=it's $(secret)\nDEPLOY_TAG=stale\nDEPLOY_IMAGE=stale\nAPP_PORT=8123\n")
    result = run_sh(cmd.write_release_env(IMAGE, "v2"), tmp_path)
    assert result.returncode == 0, result.stderr
    env = tmp_path / ".env"
    assert env.read_text() == (f"APP_SECRET=it's $(secret)\nAPP_PORT=8123\n"
                               f"DEPLOY_IMAGE={IMAGE}\nDEPLOY_TAG=v2\n")
    assert stat.S_IMODE(env.stat().st_mode) == 0o600
    assert run_sh(cmd.read_current_tag(), tmp_path).stdout.strip() == "v2"
    run_sh(cmd.write_release_env(IMAGE, ""), tmp_path)  # `fab setup` before any release
    assert "DEPLOY_TAG" not in env.read_text()
    assert run_sh(cmd.read_current_tag(), tmp_path).stdout.strip() == ""


def test_sync_release_env_repairs_a_deleted_or_garbled_env_and_leaves_a_good_one(tmp_path):
    (tmp_path / "app.env").write_text("APP_SECRET=s\nAPP_PORT=8123\n")
    env = tmp_path / ".env"
    good = f"APP_SECRET=s\nAPP_PORT=8123\nDEPLOY_IMAGE={IMAGE}\nDEPLOY_TAG=v2\n"
    run_sh(cmd.write_release_env(IMAGE, "v2"), tmp_path)
    assert env.read_text() == good
    for damage in ("", "garbage without equals\n", "DEPLOY_IMAGE=" + IMAGE + "\n", None):
        if damage is None:
            env.unlink()
        else:
            env.write_text(good + damage if damage.startswith("garbage") else damage)
        result = run_sh(cmd.sync_release_env(IMAGE, "v2"), tmp_path)
        assert result.returncode == 0 and result.stdout == "rewritten\n", (damage, result)
        assert env.read_text() == good and stat.S_IMODE(env.stat().st_mode) == 0o600
    assert run_sh(cmd.sync_release_env(IMAGE, "v2"), tmp_path).stdout == ""  # already right
    # The image .env names is kept: the current release may come from another repository.
    env.write_text(good.replace(IMAGE, "old.registry/app"))
    assert run_sh(cmd.sync_release_env(IMAGE, "v2"), tmp_path).stdout == ""
    assert "DEPLOY_IMAGE=old.registry/app\n" in env.read_text()
    (tmp_path / "app.env").unlink()  # never set up: nothing to sync from
    assert run_sh(cmd.sync_release_env(IMAGE, "v2"), tmp_path).returncode == 0
    assert "DEPLOY_IMAGE=old.registry/app" in env.read_text()


def test_a_failed_sqlite_backup_leaves_no_partial_copy(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data/app.db").write_bytes(b"db")
    bin_dir = tmp_path / "bin"  # a cp that fails halfway, as on a full disk
    bin_dir.mkdir()
    (bin_dir / "cp").write_text('#!/bin/sh\nprintf half > "$3"; echo "No space left" >&2; '
                                "exit 1\n")
    (bin_dir / "cp").chmod(0o755)
    result = run_sh(cmd.backup_sqlite("data/app.db", "z", 5), tmp_path,
                    {"PATH": f"{bin_dir}:{os.environ['PATH']}"})
    assert result.returncode != 0 and "No space left" in result.stderr
    assert not (tmp_path / "backups/z.sqlite3.part").exists()
    assert not (tmp_path / "backups/z.sqlite3").exists()


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


@pytest.fixture
def fake_docker(tmp_path):
    """A `docker` on PATH that answers compose ps with one container in state $FAKE_STATE."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "docker"
    script.write_text(
        "#!/bin/sh\n"
        'case "$1" in\n'
        '  compose) [ "$FAKE_STATE" = missing ] || echo c0ffee ;;\n'
        '  inspect) echo "$FAKE_STATE" ;;\n'
        "esac\n"
    )
    script.chmod(0o755)

    def run(state: str, timeout: float = 2) -> subprocess.CompletedProcess:
        argv = cmd.wait_healthy(cmd.compose("v2", "compose.yaml", PROJECT), "app", timeout)
        return run_sh(argv, tmp_path, {"PATH": f"{bin_dir}:{os.environ['PATH']}",
                                   "FAKE_STATE": state})

    return run


@pytest.mark.parametrize("state, code, last", [
    ("healthy", 0, "healthy"),
    ("unhealthy", 1, "unhealthy"),
    ("exited", 1, "exited"),
    ("starting", 2, "timeout (starting)"),
    ("missing", 2, "timeout (missing)"),
])
def test_wait_healthy_polls_the_container_state(fake_docker, state, code, last):
    result = fake_docker(state)
    assert result.returncode == code, result.stdout + result.stderr
    assert result.stdout.strip().splitlines()[-1] == last


# --------------------------------------------------------------------------- flows, scripted


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


def scripted_vm(tmp_path: Path, answers: dict, **overrides) -> tuple[remote.Vm, io.StringIO]:
    """A Vm whose commands are answered by MockContext: `answers` first, then defaults."""
    defaults = {
        on("if mkdir .deploy/lock"): Result(""),
        on("s/^DEPLOY_TAG=//p"): Result("v1\n"),
        on("cat .deploy/history.jsonl"): Result(history_lines(("v1", "deploy", "0001"))),
        on("docker image inspect --format"): Result(f'["{IMAGE}@sha256:{"ab" * 32}"]\n'),
        on("if [ -f data/app.db ]"): Result("backups/20300101T000000Z-v2.sqlite3\n"),
        on("alembic upgrade head"): Result(
            "INFO  [alembic.runtime.migration] Running upgrade 0001 -> 0002, add note\n"),
        on("alembic current"): Result("0001\n"),
        on("end=$(( $(date +%s)"): Result("healthy\n"),
        re.compile(".*", re.S): Result(""),
    }
    ctx = MockContext(run={**answers, **{k: v for k, v in defaults.items() if k not in answers}})
    out = io.StringIO()
    runner = Runner(ctx, where="vm", cwd=APP_DIR, out=out, clock=lambda: 0.0)
    return remote.Vm(settings_for(tmp_path, **overrides), runner), out


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
    entry = remote.deploy(vm, "v2", git_sha="f" * 40, message="hello")
    history = vm.runner.history
    order = [index_of(history, needle) for needle in (
        "if mkdir .deploy/lock", "docker pull --quiet", "if [ -f data/app.db ]",
        "alembic upgrade head", "up -d --remove-orphans", "end=$(( $(date +%s)",
        ">> .deploy/history.jsonl", "DEPLOY_TAG=v2\n", "rm -rf .deploy/lock")]
    assert order == sorted(order), "\n".join(history)
    assert history[-1] == f"cd {APP_DIR} && rm -rf .deploy/lock"
    migrate, up = history[order[3]], history[order[4]]
    assert f"env DEPLOY_IMAGE={IMAGE} DEPLOY_TAG=v2 " in migrate
    assert f"env DEPLOY_IMAGE={IMAGE} DEPLOY_TAG=v2 " in up
    assert all(c.startswith(f"cd {APP_DIR} && ") for c in history[1:]), history[0]
    assert (entry["tag"], entry["revision"], entry["previous"], entry["action"]) == (
        "v2", "0002", "v1", "deploy")
    assert entry["digest"] == "sha256:" + "ab" * 32 and entry["git_sha"] == "f" * 40
    if kind == "v1":
        assert assert_v1_clean(history) >= 3


def test_a_ctrl_c_after_the_switch_waits_until_the_release_is_recorded(tmp_path):
    """Healthy and switched: a Ctrl-C then must not leave the new version running unrecorded."""
    vm, out = scripted_vm(tmp_path, {})
    record = vm.record

    def interrupted_record(entry):
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C lands while the release is recorded
        record(entry)

    vm.record = interrupted_record
    entry = remote.deploy(vm, "v2")
    assert entry["tag"] == "v2"
    history = vm.runner.history
    assert index_of(history, ">> .deploy/history.jsonl") < index_of(history, "DEPLOY_TAG=v2\n") \
        < index_of(history, "rm -rf .deploy/lock")
    assert "Ctrl-C came after v2 turned healthy: it was recorded all the same" in out.getvalue()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_busy_lock_names_its_holder_and_is_left_alone(tmp_path):
    answers = {on("if mkdir .deploy/lock"): Result(json.dumps(HOLDER) + "\n",
                                                   exited=cmd.LOCK_BUSY_EXIT)}
    vm, _ = scripted_vm(tmp_path, answers)
    with pytest.raises(DeployError) as err:
        remote.deploy(vm, "v2")
    assert "locked by another deploy: alice@laptop since 2030-01-01T00:00:00Z deploy of " \
           "abc1234 (big migration)" in err.value.message
    assert "fab unlock" in err.value.fix
    assert not ran(vm.runner.history, "rm -rf")
    assert not ran(vm.runner.history, "docker pull")


@pytest.mark.parametrize("kind", ["v2", "v1"])
def test_a_failed_migration_switches_nothing_and_releases_the_lock(tmp_path, kind):
    answers = {on("alembic upgrade head"): Result(
        "", "sqlite3.OperationalError: no such function: no_such_function\n", exited=1)}
    vm, _ = scripted_vm(tmp_path, answers, compose_command=kind)
    with pytest.raises(DeployError) as err:
        remote.deploy(vm, "v2")
    assert "migration with v2 failed; the previous version is still serving" in err.value.message
    assert "no such function" in err.value.message
    history = vm.runner.history
    assert not ran(history, " up -d")
    assert not ran(history, ">> .deploy/history")
    assert history[-1].endswith("rm -rf .deploy/lock")


@pytest.mark.parametrize("kind", ["v2", "v1"])
def test_an_unhealthy_release_is_switched_back(tmp_path, kind):
    answers = {on("end=$(( $(date +%s)"): [Result("timeout (starting)\n", exited=2),
                                           Result("healthy\n")]}
    vm, out = scripted_vm(tmp_path, answers, compose_command=kind)
    with pytest.raises(DeployError) as err:
        remote.deploy(vm, "v2")
    assert "v2 did not turn healthy (timeout (starting)); switched back to v1" \
        in err.value.message
    ups = ran(vm.runner.history, " up -d")
    assert [re.search(r"DEPLOY_TAG=(\S+)", u).group(1) for u in ups] == ["v2", "v1"]
    assert not ran(vm.runner.history, ">> .deploy/history")
    assert vm.runner.history[-1].endswith("rm -rf .deploy/lock")
    assert "switching back to v1" in out.getvalue()
    if kind == "v1":
        assert_v1_clean(vm.runner.history)


def test_without_rollback_on_failure_the_release_is_left_and_the_fix_names_the_old_tag(tmp_path):
    answers = {on("end=$(( $(date +%s)"): Result("unhealthy\n", exited=1)}
    vm, _ = scripted_vm(tmp_path, answers, rollback_on_failure=False)
    with pytest.raises(DeployError) as err:
        remote.deploy(vm, "v2")
    assert "v2 did not turn healthy (unhealthy)" in err.value.message
    assert "rollback_on_failure is off" in err.value.message
    assert "fab rollback --tag=v1" in err.value.fix
    assert len(ran(vm.runner.history, " up -d")) == 1


def test_a_first_release_that_fails_has_nothing_to_switch_back_to(tmp_path):
    answers = {on("end=$(( $(date +%s)"): Result("unhealthy\n", exited=1),
               on("s/^DEPLOY_TAG=//p"): Result(""),
               on("cat .deploy/history.jsonl"): Result("")}
    vm, _ = scripted_vm(tmp_path, answers)
    with pytest.raises(DeployError) as err:
        remote.deploy(vm, "v1")
    assert "v1 did not turn healthy" in err.value.message
    assert "fab rollback --tag" not in err.value.fix
    assert len(ran(vm.runner.history, " up -d")) == 1


@pytest.mark.parametrize("kind", ["v2", "v1"])
def test_rollback_downgrades_to_the_revision_the_release_was_deployed_with(tmp_path, kind):
    """An earlier rollback without --downgrade recorded the database's newer revision for v1;
    a later --downgrade must still go back to the schema v1 was deployed with."""
    answers = {
        on("s/^DEPLOY_TAG=//p"): Result("v2\n"),
        on("cat .deploy/history.jsonl"): Result(history_lines(
            ("v1", "deploy", "0001"), ("v2", "deploy", "0002"),
            ("v1", "rollback", "0002"), ("v2", "rollback", "0002"))),
        on("alembic current"): [Result("0002 (head)\n"), Result("0001\n")],
    }
    vm, out = scripted_vm(tmp_path, answers, compose_command=kind)
    entry = remote.rollback(vm, "v1", downgrade=True)
    history = vm.runner.history
    downgrade = history[index_of(history, "alembic downgrade 0001")]
    assert "DEPLOY_TAG=v2 " in downgrade  # the current image holds the downgrade scripts
    assert index_of(history, "alembic downgrade") < index_of(history, " up -d")
    assert "DEPLOY_TAG=v1 " in history[index_of(history, " up -d")]
    assert (entry["tag"], entry["action"], entry["revision"]) == ("v1", "rollback", "0001")
    assert "downgrading the schema 0002 -> 0001 with v2" in out.getvalue()
    if kind == "v1":
        assert_v1_clean(history)


def test_rollback_without_downgrade_warns_and_keeps_the_schema(tmp_path):
    answers = {
        on("s/^DEPLOY_TAG=//p"): Result("v2\n"),
        on("cat .deploy/history.jsonl"): Result(history_lines(
            ("v1", "deploy", "0001"), ("v2", "deploy", "0002"))),
        on("alembic current"): Result("0002 (head)\n"),
    }
    vm, out = scripted_vm(tmp_path, answers)
    remote.rollback(vm)  # no tag: the release before the current one
    assert not ran(vm.runner.history, "alembic downgrade")
    assert "warning: v1 was released with schema 0001, the database is at 0002" \
        in out.getvalue()
    assert "--downgrade" in out.getvalue()


def test_rollback_with_nothing_earlier_says_to_name_a_tag(tmp_path):
    vm, _ = scripted_vm(tmp_path, {})  # history holds only v1, which is current
    with pytest.raises(DeployError) as err:
        remote.rollback(vm)
    assert "no earlier release" in err.value.message and "--tag" in err.value.fix
    assert not ran(vm.runner.history, "mkdir .deploy/lock")


class InterruptedAtLock(MockContext):
    """Ctrl-C arrives while the lock command runs (the VM may have taken the lock)."""

    def run(self, command, *args, **kwargs):
        if "if mkdir .deploy/lock" in command:
            raise KeyboardInterrupt
        return super().run(command, *args, **kwargs)


def test_ctrl_c_while_taking_the_lock_releases_it_only_if_it_is_ours(tmp_path):
    ctx = InterruptedAtLock(run={re.compile(".*", re.S): Result("")})
    runner = Runner(ctx, where="vm", cwd=APP_DIR, out=io.StringIO(), clock=lambda: 0.0)
    vm = remote.Vm(settings_for(tmp_path), runner)
    with pytest.raises(KeyboardInterrupt):
        with vm.locked("v2"):
            pass
    last = runner.history[-1]
    assert "rm -rf .deploy/lock" in last and '"tag": "v2"' in last
    assert last.count("if [") == 1  # conditional on holder.json being ours
    assert not [c for c in runner.history if c.endswith("&& rm -rf .deploy/lock")]


# --------------------------------------------------------------------------- flows, dry run


def dry_vm(tmp_path: Path, **overrides):
    settings = settings_for(tmp_path, **overrides)
    target = remote.targets(settings)[0]
    return remote.session(settings, target, dry_run=True)


@pytest.mark.parametrize("kind", ["auto", "v2", "v1"])
def test_a_dry_run_deploy_prints_the_steps_in_order_and_opens_no_connection(
        tmp_path, capsys, kind):
    with dry_vm(tmp_path, compose_command=kind) as vm:  # the host does not even resolve
        remote.deploy(vm, "v2")
    history = vm.runner.history
    steps = ["if mkdir .deploy/lock", "docker pull --quiet", "if [ -f data/app.db ]",
             "alembic upgrade head", "up -d --remove-orphans", "end=$(( $(date +%s)",
             "rm -rf .deploy/lock"]
    order = [index_of(history, s) for s in steps]
    assert order == sorted(order)
    assert not ran(history, ">> .deploy/history")  # nothing is recorded
    printed = capsys.readouterr().out
    for command in history[:-1]:  # all but the lock's release, which is quiet
        assert command in printed
    assert all(c.startswith(f"cd {APP_DIR} && ") for c in history)
    assert ("docker-compose" in printed) == (kind == "v1")
    if kind == "v1":
        assert_v1_clean(history)


def test_a_dry_run_rollback_restore_and_upload_print_without_connecting(tmp_path, capsys):
    with dry_vm(tmp_path) as vm:
        with pytest.raises(DeployError):  # in a dry run there is no history to find v1 in
            remote.rollback(vm, "v1")
        remote.rollback(vm, "v1", known_in_registry=lambda tag: tag == "v1")
        remote.restore(vm, "20300101T000000Z-v1.sqlite3")
        (tmp_path / ".env").write_text("A=1\n")
        vm.upload(tmp_path / ".env", cmd.APP_ENV, 0o600)
    history = vm.runner.history
    assert index_of(history, "DEPLOY_TAG=v1 docker compose") < index_of(history, " stop app")
    restore = index_of(history, "backups/20300101T000000Z-v1.sqlite3")
    assert index_of(history, " stop app") < restore < index_of(history, " up -d", restore)
    printed = capsys.readouterr().out
    assert f"upload {tmp_path / '.env'} -> {APP_DIR}/app.env (mode 600)" in printed


@pytest.mark.parametrize("name", ["", "../data/app.db", ".hidden", "a b", "x;rm -rf /", "$(id)"])
def test_restore_refuses_names_that_are_not_backups(tmp_path, name):
    with dry_vm(tmp_path) as vm:
        with pytest.raises(DeployError, match="is not a backup name"):
            remote.restore(vm, name)
    assert vm.runner.history == []


@pytest.mark.parametrize("tag", ["x;touch /tmp/pwned", "$(id)", "a b", "`id`", "-rf", "x\ny"])
def test_a_bad_tag_never_reaches_a_docker_command(tmp_path, tag):
    with dry_vm(tmp_path) as vm:
        with pytest.raises(DeployError, match="not a valid Docker tag"):
            remote.rollback(vm, tag, known_in_registry=lambda t: True)
        with pytest.raises(DeployError, match="not a valid Docker tag"):
            remote.deploy(vm, tag)
    assert not [c for c in vm.runner.history if "docker" in c]


# --------------------------------------------------------------------------- small pure parts


def test_targets_come_from_settings_or_h():
    settings = Settings(host="a.example, b.example", user="deploy", port=2200)
    assert remote.targets(settings) == [remote.Target("a.example", "deploy", 2200),
                                        remote.Target("b.example", "deploy", 2200)]
    assert remote.targets(settings, ["root@c.example:2222"]) == [
        remote.Target("c.example", "root", 2222)]
    with pytest.raises(DeployError, match="no VM host"):
        remote.targets(Settings(host=""))


def test_describe_holder():
    assert remote.describe_holder(json.dumps(HOLDER)) == (
        "alice@laptop since 2030-01-01T00:00:00Z deploy of abc1234 (big migration)")
    assert remote.describe_holder("{}") == "unknown holder"
    assert remote.describe_holder("not json") == "unknown holder"


def test_pick_rollback_tag():
    history = [{"tag": "v1"}, {"tag": "v2"}, {"tag": "v3"}]
    assert remote.pick_rollback_tag(history, "v3", "") == "v2"
    assert remote.pick_rollback_tag(history, "v2", "") == "v3"  # the newest that is not current
    assert remote.pick_rollback_tag(history, "v3", "v1") == "v1"
    with pytest.raises(DeployError):
        remote.pick_rollback_tag([{"tag": "v1"}], "v1", "")
