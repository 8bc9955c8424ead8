"""Commands that run on the VM, as argument lists. Nothing here opens a connection.

Layout of an app directory on the VM:
    compose.yaml          uploaded by `fab setup`
    app.env               the app's env file (mode 0600), uploaded by `fab setup`
    .env                  app.env plus DEPLOY_IMAGE/DEPLOY_TAG of the current release (0600):
                          compose reads it, so a reboot or a plain `docker compose up -d`
                          brings back the same version
    .deploy/lock/         the deploy lock (atomic mkdir) with holder.json inside
    .deploy/history.jsonl one JSON line per release
    backups/              database backups, newest kept
    data/                 the app's data (SQLite lives here in the example)
"""

from __future__ import annotations

import shlex
from pathlib import PurePosixPath

from deploy.runner import sh

STATE_DIR = ".deploy"
LOCK_DIR = f"{STATE_DIR}/lock"
HOLDER_FILE = f"{LOCK_DIR}/holder.json"
HISTORY_FILE = f"{STATE_DIR}/history.jsonl"
BACKUP_DIR = "backups"
APP_ENV = "app.env"
COMPOSE_ENV = ".env"
LOCK_BUSY_EXIT = 75
HEALTH_FORMAT = "{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}"


def q(word: str) -> str:
    return shlex.quote(word)


def detect_compose() -> list[str]:
    """Prints v2 or v1: the compose flavour installed on the VM (exit 1 if none)."""
    return sh(
        "if docker compose version >/dev/null 2>&1; then echo v2; "
        "elif docker-compose version >/dev/null 2>&1; then echo v1; "
        "else exit 1; fi"
    )


def project_name(app_dir: str) -> str:
    """The compose project name for an app directory: its name, lower-case alphanumerics."""
    return "".join(c for c in PurePosixPath(app_dir).name.lower() if c.isalnum()) or "app"


def compose(kind: str, compose_file: str, project: str) -> list[str]:
    """The compose base command. v1 gets only flags it knows: it ignores others with exit 0."""
    base = ["docker", "compose"] if kind == "v2" else ["docker-compose"]
    return [*base, "--file", compose_file, "--project-name", project]


def with_release(image: str, tag: str, argv: list[str]) -> list[str]:
    """Run `argv` with the release's image and tag in the environment (beats .env)."""
    return ["env", f"DEPLOY_IMAGE={image}", f"DEPLOY_TAG={tag}", *argv]


def make_dirs(app_dir: str) -> list[str]:
    return ["mkdir", "-p", app_dir, f"{app_dir}/{STATE_DIR}", f"{app_dir}/{BACKUP_DIR}"]


def acquire_lock(holder_json: str) -> list[str]:
    """Take the lock with an atomic mkdir; if held, print the holder and exit LOCK_BUSY_EXIT."""
    return sh(
        f"mkdir -p {STATE_DIR} && "
        f"if mkdir {LOCK_DIR} 2>/dev/null; then "
        f"printf '%s\\n' {q(holder_json)} > {HOLDER_FILE}; "
        f"else cat {HOLDER_FILE} 2>/dev/null || echo '{{}}'; exit {LOCK_BUSY_EXIT}; fi"
    )


def release_lock() -> list[str]:
    return ["rm", "-rf", LOCK_DIR]


def release_lock_if_ours(holder_json: str) -> list[str]:
    """Release the lock only if holder.json is `holder_json` (after an interrupted acquire)."""
    return sh(f"if [ \"$(cat {HOLDER_FILE} 2>/dev/null)\" = {q(holder_json)} ]; then "
              f"rm -rf {LOCK_DIR}; fi")


def read_lock() -> list[str]:
    return sh(f"if [ -d {LOCK_DIR} ]; then cat {HOLDER_FILE} 2>/dev/null || echo '{{}}'; fi")


def pull(image_ref: str) -> list[str]:
    return ["docker", "pull", "--quiet", image_ref]


def repo_digests(image_ref: str) -> list[str]:
    return ["docker", "image", "inspect", "--format", "{{json .RepoDigests}}", image_ref]


def backup_sqlite(db_path: str, name: str, keep: int) -> list[str]:
    """Copy the SQLite file (and its WAL) into backups/, then keep the newest `keep`."""
    target = f"{BACKUP_DIR}/{name}.sqlite3"
    return sh(
        f"mkdir -p {BACKUP_DIR} && "
        f"if [ -f {q(db_path)} ]; then "
        f"{{ cp -p {q(db_path)} {q(target)}.part || {{ rm -f {q(target)}.part; false; }}; }} && "
        f"if [ -f {q(db_path + '-wal')} ]; then "
        f"cp -p {q(db_path + '-wal')} {q(target + '-wal')}; fi"
        f" && mv {q(target)}.part {q(target)} && echo {q(target)}; "
        f"else echo 'no database yet'; fi && " + prune_backups(keep)
    )


def backup_postgres(compose_argv: list[str], service: str, user: str, db: str, name: str,
                    keep: int) -> list[str]:
    target = f"{BACKUP_DIR}/{name}.sql.gz"
    dump = shlex.join([*compose_argv, "exec", "-T", service, "pg_dump", "-U", user, db])
    return sh(
        f"mkdir -p {BACKUP_DIR} && set -o pipefail 2>/dev/null; "
        f"{dump} | gzip > {q(target)}.part && mv {q(target)}.part {q(target)} && "
        f"echo {q(target)} && " + prune_backups(keep)
    )


# Newest first by name (they start with a UTC timestamp), not by mtime: `cp -p` gives a backup
# its database's mtime, the same for every backup of an unchanged database.
NEWEST_BACKUPS_FIRST = f"ls -1 {BACKUP_DIR} 2>/dev/null | LC_ALL=C sort -r"


def prune_backups(keep: int) -> str:
    return (
        f"{NEWEST_BACKUPS_FIRST} | grep -v '\\.part$' | grep -v -- '-wal$' | tail -n +{keep + 1} | "
        f"while read -r old; do rm -f \"{BACKUP_DIR}/$old\" \"{BACKUP_DIR}/$old-wal\"; done"
    )


def list_backups() -> list[str]:
    return sh(f"{NEWEST_BACKUPS_FIRST} | grep -v '\\.part$' | grep -v -- '-wal$' || true")


def restore_sqlite(name: str, db_path: str) -> list[str]:
    source = f"{BACKUP_DIR}/{name}"
    return sh(
        f"test -f {q(source)} && mkdir -p \"$(dirname {q(db_path)})\" && "
        f"cp -p {q(source)} {q(db_path)}.restore && rm -f {q(db_path + '-wal')} "
        f"{q(db_path + '-shm')} && mv {q(db_path)}.restore {q(db_path)}"
    )


def restore_postgres(compose_argv: list[str], service: str, user: str, db: str,
                     name: str) -> list[str]:
    load = shlex.join([*compose_argv, "exec", "-T", service, "psql", "-q", "-U", user, db])
    return sh(f"gunzip -c {q(BACKUP_DIR + '/' + name)} | {load}")


def run_in_new_container(compose_argv: list[str], service: str, command: str) -> list[str]:
    """A one-off container of the service (new image via with_release), removed after."""
    return [*compose_argv, "run", "--rm", "-T", service, "sh", "-c", command]


ONEOFF_FILTERS = ("--filter", "label=com.docker.compose.oneoff=True")


def oneoff_containers(project: str) -> list[str]:
    """Names of the project's running one-off containers (`compose run`: a migration)."""
    return ["docker", "ps", "--filter", f"label=com.docker.compose.project={project}",
            *ONEOFF_FILTERS, "--format", "{{.Names}}"]


def wait_no_oneoffs(project: str, timeout: float) -> list[str]:
    """Wait until none of the project's one-off containers runs; exit 1 after `timeout`."""
    ps = shlex.join(["docker", "ps", "-q", "--filter",
                     f"label=com.docker.compose.project={project}", *ONEOFF_FILTERS])
    return sh(f"end=$(( $(date +%s) + {int(timeout)} )); while [ -n \"$({ps})\" ]; do "
              "[ $(date +%s) -ge $end ] && exit 1; sleep 0.5; done")


def up(compose_argv: list[str]) -> list[str]:
    return [*compose_argv, "up", "-d", "--remove-orphans"]


def stop(compose_argv: list[str], service: str) -> list[str]:
    return [*compose_argv, "stop", service]


def health_state(compose_argv: list[str], service: str) -> list[str]:
    ps = shlex.join([*compose_argv, "ps", "-q", service])
    inspect = shlex.join(["docker", "inspect", "--format", HEALTH_FORMAT])
    return sh(f"id=$({ps} 2>/dev/null | head -n 1); "
              f"if [ -n \"$id\" ]; then {inspect} \"$id\"; else echo missing; fi")


def running_image(compose_argv: list[str], service: str) -> list[str]:
    """The image reference the service's container was started from ('' if none runs)."""
    ps = shlex.join([*compose_argv, "ps", "-q", service])
    return sh(f"id=$({ps} 2>/dev/null | head -n 1); "
              "[ -n \"$id\" ] && docker inspect --format '{{.Config.Image}}' \"$id\" || true")


def wait_healthy(compose_argv: list[str], service: str, timeout: float,
                 interval: float = 0.2) -> list[str]:
    """Poll the service container's health on the VM; prints the final state.

    Exit 0 healthy (or, with no healthcheck, running steadily for 3 s), 1 unhealthy or
    crashed, 2 timed out.
    """
    ps = shlex.join([*compose_argv, "ps", "-q", service])
    inspect = shlex.join(["docker", "inspect", "--format", HEALTH_FORMAT])
    steady = max(1, round(3 / interval))
    return sh(
        f"end=$(( $(date +%s) + {int(timeout)} )); steady=0; bad=0; state=none; id=; "
        f"while [ $(date +%s) -lt $end ]; do "
        f"[ -n \"$id\" ] || id=$({ps} 2>/dev/null | head -n 1); "
        f"state=$([ -n \"$id\" ] && {inspect} \"$id\" 2>/dev/null || echo missing); "
        "case \"$state\" in "
        "healthy) echo healthy; exit 0;; "
        f"running) steady=$((steady+1)); [ $steady -ge {steady} ] && {{ echo running; exit 0; }};; "
        "unhealthy|exited|dead) echo \"$state\"; exit 1;; "
        "restarting) bad=$((bad+1)); [ $bad -ge 2 ] && { echo restarting; exit 1; };; "
        "missing) id=;; "
        f"esac; sleep {interval}; done; echo \"timeout ($state)\"; exit 2"
    )


def service_logs(compose_argv: list[str], service: str, tail: int, follow: bool = False
                 ) -> list[str]:
    argv = [*compose_argv, "logs", "--no-color", "--tail", str(tail)]
    return [*argv, "--follow", service] if follow else [*argv, service]


def exec_in_service(compose_argv: list[str], service: str, command: str) -> list[str]:
    return [*compose_argv, "exec", "-T", service, "sh", "-c", command]


def ps(compose_argv: list[str]) -> list[str]:
    return [*compose_argv, "ps"]


def append_history(record_json: str) -> list[str]:
    return sh(f"mkdir -p {STATE_DIR} && printf '%s\\n' {q(record_json)} >> {HISTORY_FILE}")


def read_history() -> list[str]:
    return sh(f"cat {HISTORY_FILE} 2>/dev/null || true")


def write_release_env(image: str, tag: str) -> list[str]:
    """Rewrite .env (app.env + the current release) atomically, mode 0600."""
    lines = f"DEPLOY_IMAGE={image}\nDEPLOY_TAG={tag}\n" if tag else f"DEPLOY_IMAGE={image}\n"
    return sh(
        f"umask 077 && {{ grep -v '^DEPLOY_\\(IMAGE\\|TAG\\)=' {APP_ENV} 2>/dev/null; "
        f"printf '%s' {q(lines)}; }} > {COMPOSE_ENV}.tmp && mv {COMPOSE_ENV}.tmp {COMPOSE_ENV}"
    )


def sync_release_env(image: str, tag: str) -> list[str]:
    """Make .env app.env plus the current release again (keeping the DEPLOY_IMAGE it names,
    else `image`); prints `rewritten` if it was not already (deleted, garbled, no tag)."""
    tag_line = f"DEPLOY_TAG={tag}\n" if tag else ""
    return sh(
        f"[ -f {APP_ENV} ] || exit 0; umask 077 && "
        f"img=$(sed -n 's/^DEPLOY_IMAGE=//p' {COMPOSE_ENV} 2>/dev/null | tail -n 1); "
        f"{{ grep -v '^DEPLOY_\\(IMAGE\\|TAG\\)=' {APP_ENV}; "
        f"printf 'DEPLOY_IMAGE=%s\\n%s' \"${{img:-{image}}}\" {q(tag_line)}; }} "
        f"> {COMPOSE_ENV}.tmp && if cmp -s {COMPOSE_ENV}.tmp {COMPOSE_ENV}; then "
        f"rm -f {COMPOSE_ENV}.tmp; else mv {COMPOSE_ENV}.tmp {COMPOSE_ENV} && echo rewritten; fi"
    )


def read_current_tag() -> list[str]:
    return sh(f"sed -n 's/^DEPLOY_TAG=//p' {COMPOSE_ENV} 2>/dev/null | tail -n 1")


def registry_login(registry: str, user: str) -> list[str]:
    return ["docker", "login", "--username", user, "--password-stdin", registry]
