"""Commands that run on the VM, as argument lists. Nothing here opens a connection.

Every step longer than one command is a subcommand of one POSIX helper script
(deploy/vm_helper.sh), uploaded by content hash to `.deploy/bin/helper-<hash>`: the echoed
command reads `sh .deploy/bin/helper-<hash> backup-stdout ...`, never an `sh -c` script.

Layout of an app directory on the VM:
    compose.yaml          uploaded by `fab setup`
    app.env               the app's env file (mode 0600): the values of the laptop's .env,
                          written so that compose reads them byte for byte
    .env                  compose's own file, read for ${VAR} interpolation by a plain
                          `docker compose up -d`: app.env plus COMPOSE_PROJECT_NAME and the
                          current release's image and tag variables. When a service itself reads
                          `.env` (env_file: .env), no release may change it: then it is app.env,
                          COMPOSE_PROJECT_NAME and COMPOSE_FILE=compose.yaml:.deploy/release.yaml
    .deploy/release.env   the current release's image and tag variables (the tool's record)
    .deploy/release.yaml  (only when a service reads .env) the service's image IMAGE:TAG
    .deploy/lock/         the deploy lock (atomic mkdir): holder.json and the lease file
    .deploy/lock.log      who broke the lock with `fab unlock --force` (JSON lines)
    .deploy/history.jsonl one JSON line per release
    .deploy/restore.json  a restore under way (restore-done.json once the database equals the
                          backup): the next command records or reports a restore cut off
    .deploy/bin/          the helper script, one file per version
    backups/              database backups (0700; each backup 0600) and their manifests
                          NAME.json (0600): app, database kind, revision, tag, size, sha256
"""

from __future__ import annotations

import hashlib
import re
import shlex
from importlib import resources
from pathlib import PurePosixPath

STATE_DIR = ".deploy"
LOCK_DIR = f"{STATE_DIR}/lock"
HISTORY_FILE = f"{STATE_DIR}/history.jsonl"
RESTORE_MARKER = f"{STATE_DIR}/restore.json"  # the helper's RESTORE_MARK
RELEASE_ENV = f"{STATE_DIR}/release.env"
RELEASE_OVERRIDE = f"{STATE_DIR}/release.yaml"
BACKUP_DIR = "backups"
APP_ENV = "app.env"
ENV_KEY_MISSING_EXIT = 3  # env-line: the file has no such key
RESOLVED_ELSEWHERE_EXIT = 9  # install_helper: the directory is another one by another name
COMPOSE_ENV = ".env"
LOCK_BUSY_EXIT = 75
HELPER_MISSING_EXIT = 127

HELPER_TEXT = resources.files("deploy").joinpath("vm_helper.sh").read_text()
HELPER_HASH = hashlib.sha256(HELPER_TEXT.encode()).hexdigest()[:12]
HELPER = f"{STATE_DIR}/bin/helper-{HELPER_HASH}"


def helper(subcommand: str, *args: str) -> list[str]:
    """One subcommand of the VM helper script, run from app_dir (the app's copy)."""
    return ["sh", HELPER, subcommand, *args]


def helper_in(directory: str, subcommand: str, *args: str) -> list[str]:
    """One subcommand of the helper's copy in `directory` (e.g. proxy_dir), by its path: for
    commands that run outside app_dir."""
    return ["sh", f"{directory}/{HELPER}", subcommand, *args]


def helper_dir(argv: list[str]) -> str | None:
    """The directory whose helper copy `argv` runs ('' for the app's), or None if it runs
    no helper."""
    if len(argv) < 2 or argv[0] != "sh" or not argv[1].endswith(HELPER):
        return None
    return argv[1].removesuffix(HELPER).removesuffix("/")


def install_helper(directory: str, *dirs: str) -> list[str]:
    """Make `directory`, its .deploy/bin and `dirs` in it; put the helper (on stdin) in place
    if missing. The helper's own bootstrap (it cannot install itself), so an `sh -c` script.
    An absolute `directory` that is another by another name (a symbolic link on its way) is
    left alone: it prints `resolved PATH` and exits RESOLVED_ELSEWHERE_EXIT, nothing made."""
    path = shlex.quote(f"{directory}/{HELPER}")
    made = shlex.join(["mkdir", "-p", f"{directory}/{STATE_DIR}/bin",
                       *(f"{directory}/{d}" for d in dirs)])
    same = ""
    if directory.startswith("/"):  # GNU realpath; without it the settings' checks stand
        quoted = shlex.quote(directory)
        same = (f"r=$(realpath -m -- {quoted} 2>/dev/null) || r={quoted}; "
                f"if [ \"$r\" != {quoted} ]; then cat >/dev/null; echo \"resolved $r\"; "
                f"exit {RESOLVED_ELSEWHERE_EXIT}; fi; ")
    return ["sh", "-c", f"{same}{made} && if [ -f {path} ]; then cat >/dev/null; else "
                        f"cat > {path}.tmp && mv {path}.tmp {path}; fi"]


def project_name(app_dir: str) -> str:
    """The default compose project name of an app directory: a readable slug of its name plus
    a short hash of the whole path, so /srv/ha-b, /srv/ha_b and /srv/x/app never share one."""
    path = str(PurePosixPath(app_dir))
    slug = re.sub(r"[^a-z0-9]+", "-", PurePosixPath(path).name.lower()).strip("-")[:40] or "app"
    return f"{slug}-{hashlib.sha256(path.encode()).hexdigest()[:8]}"


def compose(kind: str, compose_file: str, project: str) -> list[str]:
    """The compose base command. v1 gets only flags it knows: it ignores others with exit 0."""
    base = ["docker", "compose"] if kind == "v2" else ["docker-compose"]
    return [*base, "--file", compose_file, "--project-name", project]


def with_release(variables: dict[str, str], argv: list[str]) -> list[str]:
    """Run `argv` with the release's variables in its environment: compose interpolates them
    (they beat .env) and no service's environment sees them."""
    return ["env", *(f"{k}={v}" for k, v in variables.items()), *argv]


def detect_compose() -> list[str]:
    """Prints v2 or v1: the compose flavour installed on the VM (exit 1 if none)."""
    return helper("detect-compose")


# -- the lock -----------------------------------------------------------------------------
def acquire_lock(holder_json: str) -> list[str]:
    """Take the lock; if held, print the holder and exit LOCK_BUSY_EXIT."""
    return helper("lock-acquire", holder_json)


def release_lock() -> list[str]:
    return helper("lock-release")


def release_lock_if_ours(holder_json: str) -> list[str]:
    return helper("lock-release-if", holder_json)


def renew_lock(holder_json: str) -> list[str]:
    return helper("lock-renew", holder_json)


def read_lock() -> list[str]:
    return helper("lock-read")


LOCK_LOST_EXIT = 3  # lock-check, lock-renew: the lock is no longer this holder's


def check_lock(holder_json: str) -> list[str]:
    """Exit 0 if the lock is still this holder's; else print who holds it (as read_lock) and
    the lock log's last record (`broken JSON`), exit LOCK_LOST_EXIT."""
    return helper("lock-check", holder_json)


def break_lock(record_json: str) -> list[str]:
    """Clear the lock, whoever holds it, appending `record_json` (who broke it) to the lock
    log."""
    return helper("lock-break", record_json)


def unseen_lock_log() -> list[str]:
    """The lock log's records no deploy has shown yet; they count as shown from then on."""
    return helper("lock-log-unseen")


# -- images -------------------------------------------------------------------------------
def pull(image_ref: str) -> list[str]:
    return ["docker", "pull", "--quiet", image_ref]


# -- backups ------------------------------------------------------------------------------
def backup_sqlite(db_path: str, target: str) -> list[str]:
    return helper("backup-sqlite", db_path, target)


def backup_postgres(compose_argv: list[str], service: str, user: str, db: str,
                    target: str) -> list[str]:
    """A custom-format pg_dump (compressed) through the database container."""
    return helper("backup-stdout", target, *compose_argv, "exec", "-T", service,
                  "pg_dump", "--format=custom", "-U", user, db)


def list_backups() -> list[str]:
    return helper("list-backups")


def remove_backups(names: list[str]) -> list[str]:
    return helper("remove-backups", *names)


def backup_info(name: str) -> list[str]:
    """A backup's manifest (one line, `-` if it has none), then `SIZE SHA256 FORMAT` of the
    file as it is now (FORMAT: sqlite, pgdump or unknown, by its first bytes)."""
    return helper("backup-info", name)


def restore_state() -> list[str]:
    """`running`, `started` or `done` and the marker a restore wrote; nothing if none."""
    return helper("restore-state")


def restore_clear() -> list[str]:
    return helper("restore-clear")


def restore_sqlite(name: str, db_path: str) -> list[str]:
    return helper("restore-sqlite", name, db_path)


def restore_postgres(compose_argv: list[str], service: str, user: str, db: str,
                     name: str) -> list[str]:
    """Drop and re-create the public schema, then the dump, in one transaction."""
    return helper("restore-postgres", name, user, db, *compose_argv, "exec", "-T", service)


def pg_ready(compose_argv: list[str], service: str, user: str, db: str) -> list[str]:
    """Over TCP: while the image initialises a new database its server listens on the socket
    only, and stops again before the real start."""
    return [*compose_argv, "exec", "-T", service, "pg_isready", "-q", "-h", "127.0.0.1",
            "-U", user, "-d", db]


def read_alembic_version(compose_argv: list[str], service: str, user: str,
                         db: str) -> list[str]:
    return [*compose_argv, "exec", "-T", service, "psql", "-X", "-At", "-U", user, "-d", db,
            "-c", "SELECT version_num FROM alembic_version"]


# -- containers ---------------------------------------------------------------------------
def run_in_new_container(compose_argv: list[str], service: str, command: str,
                         no_deps: bool = False) -> list[str]:
    """A one-off container of the service (new image via with_release), removed after. With
    `no_deps` its dependencies are left as they are: `compose run` would recreate one whose
    config changed (e.g. its env_file), under the release still serving."""
    return [*compose_argv, "run", "--rm", *(["--no-deps"] if no_deps else []), "-T", service,
            "sh", "-c", command]


REVISION_MARK = "__deploy_alembic_current__"
BEFORE_MARK = "__deploy_alembic_before__"


def migrate_then_current(command: str) -> str:
    """`alembic current` between two marker lines, the migrate command, then (if it
    succeeded) `alembic current` after a marker line: the revisions before and after come
    from the database as the new image reads it, whatever the command printed."""
    before = f"echo {BEFORE_MARK}; alembic current 2>/dev/null; echo {BEFORE_MARK}"
    return (f"sh -c {shlex.quote(before)}; "
            f"sh -c {shlex.quote(command)} || exit $?; echo {REVISION_MARK}; "
            "alembic current 2>/dev/null || true")


def oneoff_containers(project: str) -> list[str]:
    return helper("oneoffs", project)


def wait_no_oneoffs(project: str, timeout: float) -> list[str]:
    return helper("wait-oneoffs", project, str(int(timeout)))


def up(compose_argv: list[str], *services: str) -> list[str]:
    if services:
        return [*compose_argv, "up", "-d", "--no-deps", *services]
    return [*compose_argv, "up", "-d", "--remove-orphans"]


def start_service(compose_argv: list[str], service: str) -> list[str]:
    """Start `service` if it is not running, as it is: never recreated (compose recreates a
    container whose config changed, e.g. its env_file; a database's is changed at the switch,
    after the backup and a migration that succeeded, not under the release still serving)."""
    return [*compose_argv, "up", "-d", "--no-deps", "--no-recreate", service]


def stop(compose_argv: list[str], service: str) -> list[str]:
    return [*compose_argv, "stop", service]


def health_state(compose_argv: list[str], service: str) -> list[str]:
    return helper("health-state", service, *compose_argv)


def running_image(compose_argv: list[str], service: str) -> list[str]:
    """`IMAGE_ID REFERENCE` of the service's running container ('' if none runs)."""
    return helper("running-image", service, *compose_argv)


def project_dirs(project: str) -> list[str]:
    return helper("project-dirs", project)


def dir_projects(app_dir: str) -> list[str]:
    return helper("dir-projects", app_dir)


def http_status(url: str) -> list[str]:
    return helper("http-status", url)


def config(compose_argv: list[str], kind: str) -> list[str]:
    return [*compose_argv, "config", *(["--format", "json"] if kind == "v2" else [])]


def service_logs(compose_argv: list[str], service: str, tail: int, follow: bool = False
                 ) -> list[str]:
    argv = [*compose_argv, "logs", "--no-color", "--tail", str(tail)]
    return [*argv, "--follow", service] if follow else [*argv, service]


def exec_in_service(compose_argv: list[str], service: str, command: str,
                    tty: bool = False) -> list[str]:
    """`command` (the user's) in the running container of `service`; with `tty`, on a
    terminal (compose's exec allocates one and keeps stdin open unless told `-T`)."""
    return [*compose_argv, "exec", *([] if tty else ["-T"]), service, "sh", "-c", command]


def exec_in_container(container: str, command: str, tty: bool = False) -> list[str]:
    """`command` (the user's) in one named container; with `tty`, on a terminal (`-it`)."""
    return ["docker", "exec", *(["-it"] if tty else []), container, "sh", "-c", command]


def ps(compose_argv: list[str]) -> list[str]:
    return [*compose_argv, "ps"]


# -- files ----------------------------------------------------------------------------------
def append_history(record_json: str) -> list[str]:
    return helper("history-append", record_json)


def read_history() -> list[str]:
    return helper("history-read")


def write_file(path: str) -> list[str]:
    """Write stdin to `path` atomically (0600); prints `rewritten` if it changed."""
    return helper("write-file", path)


def read_var(path: str, name: str) -> list[str]:
    return helper("read-var", path, name)


def env_keys(path: str = APP_ENV) -> list[str]:
    """The keys (only, never values) of an env file, one a line; nothing if it is missing."""
    return helper("env-keys", path)


def env_set(key: str, path: str = APP_ENV) -> list[str]:
    """Replace or add KEY in the env file with the line on stdin; atomic, 0600."""
    return helper("env-set", path, key)


def env_line(key: str, path: str = APP_ENV) -> list[str]:
    """KEY's line of the env file (exit ENV_KEY_MISSING_EXIT if it has none)."""
    return helper("env-line", path, key)


def env_merge(path: str = APP_ENV) -> list[str]:
    """The KEY=value lines on stdin replace or join the env file's, its other keys kept;
    prints `changed KEY` and `kept KEY` (names only); atomic, 0600."""
    return helper("env-merge", path)
