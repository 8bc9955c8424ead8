"""Commands that run on the VM, as argument lists. Nothing here opens a connection.

Every step longer than one command is a subcommand of one POSIX helper script
(deploy/vm/vm_helper.sh), uploaded by content hash to `.deploy/bin/helper-<hash>`: the echoed
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
    .deploy/proxy.yaml    (proxy = true) compose.yaml's web service in its proxy form: its
                          published ports dropped, the proxy's network joined; merged over
                          compose.yaml by every compose command (and .env's COMPOSE_FILE)
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
import math
import re
import shlex
from collections.abc import Sequence
from importlib import resources
from pathlib import PurePosixPath

STATE_DIR = ".deploy"
LOCK_DIR = f"{STATE_DIR}/lock"
HISTORY_FILE = f"{STATE_DIR}/history.jsonl"
RESTORE_MARKER = f"{STATE_DIR}/restore.json"  # the helper's RESTORE_MARK
RELEASE_ENV = f"{STATE_DIR}/release.env"
RELEASE_OVERRIDE = f"{STATE_DIR}/release.yaml"
PROXY_OVERRIDE = f"{STATE_DIR}/proxy.yaml"
BACKUP_DIR = "backups"
APP_ENV = "app.env"
ENV_KEY_MISSING_EXIT = 3  # env-line: the file has no such key
HEALTH_TIMEOUT_EXIT = 3  # health-state-wait: no verdict in time
RESOLVED_ELSEWHERE_EXIT = 9  # install_helper: the directory is another one by another name
COMPOSE_ENV = ".env"
LOCK_BUSY_EXIT = 75
HELPER_MISSING_EXIT = 127

HELPER_TEXT = resources.files("deploy.vm").joinpath("vm_helper.sh").read_text()
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


def compose(kind: str, compose_file: str, project: str,
            overrides: Sequence[str] = ()) -> list[str]:
    """The compose base command (`overrides`: files merged over compose_file, in order). v1
    gets only flags it knows: it ignores others with exit 0."""
    base = ["docker", "compose"] if kind == "v2" else ["docker-compose"]
    files = [arg for name in (compose_file, *overrides) for arg in ("--file", name)]
    return [*base, *files, "--project-name", project]


def with_release(variables: dict[str, str], argv: list[str]) -> list[str]:
    """Run `argv` with the release's variables in its environment: compose interpolates them
    (they beat .env) and no service's environment sees them."""
    return ["env", *(f"{k}={v}" for k, v in variables.items()), *argv]


def detect_compose() -> list[str]:
    """Prints v2 or v1: the compose flavour installed on the VM (exit 1 if none)."""
    return helper("detect-compose")


def facts(tag_variable: str, project: str, app_dir: str, compose_kind: str,
          image: str = "") -> list[str]:
    """What a release's checks need to know of the VM, as one document (parsed by
    deploy.vm.facts): app.env's keys (never values), the tag in .deploy/release.env and in
    .env, the compose flavour (detected if `compose_kind` is auto), the working directories of
    the project's containers and the projects made in app_dir, the project's one-off
    containers, the HTTP tool the VM has, the release history; with `image`, also what the
    pull's disk check reads: `df` of Docker's data root and the repository's images
    (as disk_free and app_images print them)."""
    return helper("facts", tag_variable, project, app_dir, compose_kind,
                  *([image] if image else []))


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


def app_images(image: str) -> list[str]:
    """`image ID SIZE REF...` for each local image of the repository `image`, then `used ID`
    for the image of every container on the VM (see housekeeping.parse_app_images)."""
    return helper("app-images", image)


def remove_images(refs: list[str]) -> list[str]:
    """Untag those of `refs` still there; an image goes with its last reference (never one
    a container uses: the engine refuses)."""
    return helper("remove-images", *refs)


def prune_containers(project: str) -> list[str]:
    """Remove the project's stopped containers (exited, created, dead); prints their names."""
    return helper("prune-containers", project)


def disk_free(where: str) -> list[str]:
    """`df -Pk` of the filesystem holding `where`: a directory in app_dir (or its nearest
    existing parent), or `docker` for the engine's data root."""
    return helper("disk-free", where)


def file_size(*paths: str) -> list[str]:
    """The bytes of those of `paths` that exist, summed (one number)."""
    return helper("file-size", *paths)


def postgres_size(compose_argv: list[str], service: str, user: str, db: str) -> list[str]:
    return [*compose_argv, "exec", "-T", service, "psql", "-X", "-At", "-U", user, "-d", db,
            "-c", "SELECT pg_database_size(current_database())"]


def remove_app(app_dir: str, data: bool, project: str, keep: list[str]) -> list[str]:
    """Remove the app's containers and networks (with `data` its volumes), and every file of
    app_dir but the lock, the helper and the relative paths `keep`; prints what went."""
    return helper("remove-app", app_dir, "yes" if data else "no", project, *keep)


def remove_state(app_dir: str) -> list[str]:
    """Take the lock once more, remove .deploy, and app_dir if it is empty then."""
    return helper("remove-state", app_dir)


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


def list_manifests() -> list[str]:
    """Each backup, newest first: `NAME<TAB>MANIFEST` (the manifest on one line, `-` if none)."""
    return helper("list-manifests")


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
# `[prefix]<...>alembic [options] upgrade`: the prefix (`cd backend &&`, `PATH=...`, `poetry
# run`), the program as it is started (`/app/.venv/bin/alembic`, `python -m alembic`) and its
# options (`-c backend/alembic.ini`) make the environment every other alembic command needs.
ALEMBIC_UPGRADE_RE = re.compile(
    r"^(?P<alembic>.*?\S*\balembic(?:\s+-[\w-]+(?:[= ](?!upgrade\b)[^\s;&|-]\S*)?)*)"
    r"\s+upgrade\b")
# Without an alembic line (a script): its leading variables and a runner such as `poetry run`.
ENV_PREFIX_RE = re.compile(
    r"^(?P<prefix>(?:[A-Za-z_][A-Za-z0-9_]*=\S*\s+)*"
    r"(?:(?:poetry|pdm|pipenv|hatch|rye)\s+run\s+|uv\s+run(?:\s+--?[\w-]+(?:=\S+)?)*\s+)?)")


def alembic_command(migrate_command: str) -> str:
    """How `alembic` is started in the app's migrate environment, from `migrate_command`:
    `poetry run alembic upgrade head` -> `poetry run alembic`; `PATH=/app/.venv/bin:$PATH sh
    scripts/prestart.sh` -> `PATH=/app/.venv/bin:$PATH alembic`; else `alembic`. The deploy's
    own `alembic current` and `alembic downgrade` run in it: a bare `alembic` is not found
    where the image installs the app into a venv off its PATH."""
    line = migrate_command.strip()
    found = ALEMBIC_UPGRADE_RE.match(line)
    if found and set(found.group("alembic")) & set("'\"`()"):
        found = None  # alembic inside a quoted or nested command: not a prefix to reuse
    if found:  # of the steps before it, only those that set up an environment (not a sleep)
        *head, program = re.split(r"&&|;", found.group("alembic"))
        kept = [part.strip() for part in head
                if part.strip().startswith(("cd ", "export ", ". ", "source "))]
        return " && ".join([*kept, program.strip()])
    prefix = ENV_PREFIX_RE.match(line)
    return f"{prefix.group('prefix') if prefix else ''}alembic"


ALEMBIC_UPGRADE = re.compile(r"^alembic upgrade ([A-Za-z0-9_@+.-]+)$")


def migrate_then_current(command: str) -> str:
    """`alembic current` between two marker lines, the migrate command, then (if it
    succeeded) `alembic current` after a marker line: the revisions before and after come
    from the database as the new image reads it, whatever the command printed. Alembic is
    started as the migrate command starts it (`alembic_command`).

    A plain `alembic upgrade REV` runs all three in one Python process (alembic's own
    interpreter, read from its script's first line): each Python start-up with the app's
    imports costs about as long as the migration itself. The three commands are the fallback
    when that interpreter cannot be found."""
    alembic = alembic_command(command)
    before = f"echo {BEFORE_MARK}; {alembic} current 2>/dev/null; echo {BEFORE_MARK}"
    separate = (f"sh -c {shlex.quote(before)}; "
                f"sh -c {shlex.quote(command)} || exit $?; echo {REVISION_MARK}; "
                f"{alembic} current 2>/dev/null || true")
    upgrade = ALEMBIC_UPGRADE.match(command.strip())
    if not upgrade:
        return separate
    # One line (every command sent is one): the statements go through exec() with \n escapes.
    code = (f"from alembic.config import main as m; print({BEFORE_MARK!r}, flush=True); "
            "exec('try:\\n m(argv=[\"current\"])\\nexcept BaseException:\\n pass'); "
            f"print({BEFORE_MARK!r}, flush=True); m(argv=['upgrade', {upgrade.group(1)!r}]); "
            f"print({REVISION_MARK!r}, flush=True); "
            "exec('try:\\n m(argv=[\"current\"])\\nexcept BaseException:\\n pass')")
    return ("py=$(sed -n '1s/^#! *//p' \"$(command -v alembic)\" 2>/dev/null); "
            f"if [ -x \"${{py%% *}}\" ]; then $py -c {shlex.quote(code)}; else {separate}; fi")


def oneoff_containers(project: str) -> list[str]:
    return helper("oneoffs", project)


def wait_no_oneoffs(project: str, timeout: float) -> list[str]:
    return helper("wait-oneoffs", project, str(int(timeout)))


def up(compose_argv: list[str], *services: str) -> list[str]:
    """`compose up`, run to its end on the VM even if the SSH session goes away under it
    (the helper's to-end): cut off at its next line of output, compose would leave the old
    container removed and the new one never started."""
    if services:
        return helper("to-end", *compose_argv, "up", "-d", "--no-deps", *services)
    return helper("to-end", *compose_argv, "up", "-d", "--remove-orphans")


def start_service(compose_argv: list[str], service: str) -> list[str]:
    """Start `service` if it is not running, as it is: never recreated (compose recreates a
    container whose config changed, e.g. its env_file; a database's is changed at the switch,
    after the backup and a migration that succeeded, not under the release still serving)."""
    return [*compose_argv, "up", "-d", "--no-deps", "--no-recreate", service]


def stop(compose_argv: list[str], service: str) -> list[str]:
    return [*compose_argv, "stop", service]


def health_state(compose_argv: list[str], service: str) -> list[str]:
    """`STATE IMAGE_ID REFERENCE` of the service's container (`missing` if none runs)."""
    return helper("health-state", service, *compose_argv)


def health_state_wait(compose_argv: list[str], service: str, timeout: float,
                      steady_polls: int) -> list[str]:
    """health_state's line once the container is decided (healthy, unhealthy, exited, dead,
    running `steady_polls` polls of 0.1 s in a row, restarting twice), polled on the VM; exit
    HEALTH_TIMEOUT_EXIT with the last line after `timeout` seconds."""
    return helper("health-state-wait", str(math.ceil(timeout)), str(steady_polls), service,
                  *compose_argv)


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


def text_args(*texts: str) -> list[str]:
    """Texts as the helper's release-files takes them: one line an argument, each text
    ended by `--` (so every command sent stays one line)."""
    return [arg for text in texts for arg in
            [*(text.rstrip("\n").split("\n") if text.strip() else []), "--"]]


def release_files(release: str, dotenv_tail: str, override: str = "",
                  then: list[str] | None = None) -> list[str]:
    """Write .deploy/release.env (`release`), .deploy/release.yaml (`override`, if any) and
    .env (app.env's lines on the VM, then `dotenv_tail`), each only if it changed (`rewritten
    PATH` for each that did); then run `then` (its output after a line `@@fact output`). No
    value of app.env crosses the wire."""
    return helper("release-files", APP_ENV, *text_args(release, dotenv_tail, override),
                  *(then or []))


def record_release(record_json: str, release: str, dotenv_tail: str,
                   override: str = "") -> list[str]:
    """Append `record_json` to the history, then write the release files as release_files."""
    return helper("record", record_json, APP_ENV, *text_args(release, dotenv_tail, override))


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


def env_unset(key: str, path: str = APP_ENV) -> list[str]:
    """Remove KEY's line(s) from the env file (exit ENV_KEY_MISSING_EXIT if it has none)."""
    return helper("env-unset", path, key)


def env_merge(path: str = APP_ENV) -> list[str]:
    """The KEY=value lines on stdin replace or join the env file's, its other keys kept;
    prints `changed KEY` and `kept KEY` (names only); atomic, 0600."""
    return helper("env-merge", path)


# Run by any Python in the app's image, in a one-off container of the release: where the app's
# database URL (or its host and port variables) points, and whether a TCP connection gets there.
# Prints `ok HOST:PORT`, `failed HOST:PORT: ERROR` or `none` (no host: SQLite, a Unix socket).
REACH_CODE = """\
import os, socket, sys
from urllib.parse import urlsplit
url_var, host_var, port_var = sys.argv[1:4]
if host_var:
    host, port = os.environ.get(host_var, ""), os.environ.get(port_var, "") or "5432"
else:
    try:
        parts = urlsplit(os.environ.get(url_var, ""))
        host, port = parts.hostname or "", str(parts.port or 5432)
    except ValueError as exc:
        print("failed", url_var, exc)
        sys.exit(3)
if not host or host.startswith("/"):
    print("none")
    sys.exit(0)
try:
    socket.create_connection((host, int(port)), timeout=5).close()
except (OSError, ValueError) as exc:
    print(f"failed {host}:{port}: {exc}")
    sys.exit(3)
print(f"ok {host}:{port}")
"""


def database_reach(compose_argv: list[str], service: str, url_env: str,
                   host_env: str = "", port_env: str = "") -> list[str]:
    """A one-off container of `service` (no dependencies started) connecting to the database
    its environment names: `url_env`'s URL, or the `host_env`/`port_env` parts."""
    args = shlex.join([url_env, host_env, port_env])
    code = shlex.quote(REACH_CODE)
    script = (f"if command -v python3 >/dev/null 2>&1; then exec python3 -c {code} {args}; "
              f"else exec python -c {code} {args}; fi")
    return run_in_new_container(compose_argv, service, script, no_deps=True)


def parse_reach(output: str) -> tuple[str, str]:
    """`database_reach`'s last line -> (ok | failed | none | unknown, the rest of it)."""
    lines = output.strip().splitlines()
    word, _, rest = (lines[-1] if lines else "").partition(" ")
    return (word, rest) if word in ("ok", "failed", "none") else ("unknown", output.strip())
