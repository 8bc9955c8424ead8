#!/bin/sh
# deploy-toolkit's helper on the VM: the multi-line steps of a deploy, as subcommands.
#
# Uploaded by content hash to <app_dir>/.deploy/bin/helper-<hash> and run from <app_dir> as
#   sh .deploy/bin/helper-<hash> SUBCOMMAND ARGS...
# POSIX sh (the VM's /bin/sh is dash): no pipefail, no arrays, no bashisms. Every argument
# arrives as its own word (the toolkit quotes them), so nothing here is re-parsed by a shell.
# Where a subcommand takes a compose command, it is the rest of the arguments ("$@").

set -u

STATE=.deploy
LOCK=$STATE/lock
BACKUPS=backups
LOCK_BUSY=75

die() {
    printf '%s\n' "$*" >&2
    exit 1
}

now() {
    date +%s
}

mtime() {
    stat -c %Y "$1" 2>/dev/null || date -r "$1" +%s 2>/dev/null || echo 0
}

# -- the deploy lock: an atomic mkdir, holder.json inside, a lease file a live deploy touches
lock_acquire() {  # HOLDER_JSON
    mkdir -p "$STATE" || exit 1
    if mkdir "$LOCK" 2>/dev/null; then
        printf '%s\n' "$1" > "$LOCK/holder.json" && : > "$LOCK/lease"
        return
    fi
    lock_read
    exit "$LOCK_BUSY"
}

lock_read() {  # prints holder.json (or {}) and the lease's age in seconds; nothing if free
    [ -d "$LOCK" ] || return 0
    cat "$LOCK/holder.json" 2>/dev/null || echo '{}'
    if [ -f "$LOCK/lease" ]; then
        echo "lease-age $(( $(now) - $(mtime "$LOCK/lease") ))"
    fi
}

lock_is() {  # HOLDER_JSON: exit 0 if the lock is held by exactly this holder
    [ -d "$LOCK" ] && [ "$(cat "$LOCK/holder.json" 2>/dev/null)" = "$1" ]
}

lock_renew() {  # HOLDER_JSON
    if lock_is "$1"; then touch "$LOCK/lease"; else exit 3; fi
}

lock_release_if() {  # HOLDER_JSON
    if lock_is "$1"; then rm -rf "$LOCK"; fi
}

# -- backups: 0600 files in a 0700 directory, written as NAME.part and renamed in
backup_dir() {
    umask 077
    mkdir -p "$BACKUPS" && chmod 700 "$BACKUPS"
}

backup_sqlite() {  # DB_PATH TARGET
    db=$1 target=$2
    backup_dir || exit 1
    if [ ! -f "$db" ]; then
        echo "no database yet"
        return
    fi
    if ! cp -p "$db" "$target.part"; then
        rm -f "$target.part"
        exit 1
    fi
    if [ -f "$db-wal" ]; then
        cp -p "$db-wal" "$target-wal" || { rm -f "$target.part" "$target-wal"; exit 1; }
    fi
    chmod 600 "$target.part" && mv "$target.part" "$target" && echo "$target"
}

backup_stdout() {  # TARGET COMMAND...: the command's stdout becomes the backup
    target=$1
    shift
    backup_dir || exit 1
    "$@" > "$target.part"
    rc=$?
    if [ "$rc" -ne 0 ]; then
        rm -f "$target.part"
        exit "$rc"
    fi
    if [ ! -s "$target.part" ]; then
        rm -f "$target.part"
        die "the backup command wrote nothing"
    fi
    mv "$target.part" "$target" && echo "$target"
}

list_backups() {  # newest first (names start with a UTC timestamp)
    [ -d "$BACKUPS" ] || return 0
    for path in "$BACKUPS"/*; do
        [ -f "$path" ] || continue
        name=${path#"$BACKUPS"/}
        case $name in
            *.part | *-wal | .*) ;;
            *) printf '%s\n' "$name" ;;
        esac
    done | LC_ALL=C sort -r
}

remove_backups() {  # NAME...
    for name in "$@"; do
        case $name in
            */* | .*) die "not a backup name: $name" ;;
        esac
        rm -f "$BACKUPS/$name" "$BACKUPS/$name-wal"
    done
}

restore_sqlite() {  # NAME DB_PATH
    source=$BACKUPS/$1 db=$2
    [ -f "$source" ] || die "no backup $source"
    mkdir -p "$(dirname "$db")" || exit 1
    cp -p "$source" "$db.restore" || { rm -f "$db.restore"; exit 1; }
    rm -f "$db-wal" "$db-shm"
    if [ -f "$source-wal" ]; then
        cp -p "$source-wal" "$db-wal" || exit 1
    fi
    mv "$db.restore" "$db"
}

restore_postgres() {  # NAME USER DB COMPOSE_EXEC...: the backup becomes the database, exactly
    source=$BACKUPS/$1 user=$2 db=$3
    shift 3
    [ -f "$source" ] || die "no backup $source"
    sql=$BACKUPS/.restore-$$.sql
    umask 077
    # One transaction: the public schema dropped and made again, then the dump's objects.
    {
        printf 'DROP SCHEMA IF EXISTS public CASCADE;\nCREATE SCHEMA public;\n'
        "$@" pg_restore -f - < "$source"
    } > "$sql"
    rc=$?
    if [ "$rc" -ne 0 ]; then
        rm -f "$sql"
        die "pg_restore could not read $source (exit $rc)"
    fi
    "$@" psql -X -q -v ON_ERROR_STOP=1 --single-transaction -U "$user" -d "$db" < "$sql"
    rc=$?
    rm -f "$sql"
    exit "$rc"
}

# -- env files: stdin written atomically (0600); prints `rewritten` when the file changed
write_file() {  # PATH
    umask 077
    cat > "$1.tmp" || { rm -f "$1.tmp"; exit 1; }
    if cmp -s "$1.tmp" "$1"; then
        rm -f "$1.tmp"
    else
        mv "$1.tmp" "$1" && echo rewritten
    fi
}

read_var() {  # FILE NAME: the last NAME=value line's value (single quotes removed)
    [ -f "$1" ] || return 0
    sed -n "s/^$2=//p" "$1" | tail -n 1 | sed "s/^'\\(.*\\)'\$/\\1/"
}

# -- the release history
history_append() {  # JSON
    mkdir -p "$STATE" && printf '%s\n' "$1" >> "$STATE/history.jsonl"
}

history_read() {
    cat "$STATE/history.jsonl" 2>/dev/null || true
}

# -- containers
oneoffs() {  # PROJECT
    docker ps -q --filter "label=com.docker.compose.project=$1" \
        --filter label=com.docker.compose.oneoff=True
}

wait_oneoffs() {  # PROJECT TIMEOUT
    end=$(( $(now) + $2 ))
    while [ -n "$(oneoffs "$1")" ]; do
        [ "$(now)" -ge "$end" ] && exit 1
        sleep 0.5
    done
}

container_of() {  # SERVICE COMPOSE...: the id of the service's container ('' if none)
    service=$1
    shift
    "$@" ps -q "$service" 2>/dev/null | head -n 1
}

health_state() {  # SERVICE COMPOSE...: healthy, unhealthy, starting, running, exited... missing
    id=$(container_of "$@")
    if [ -z "$id" ]; then
        echo missing
        return
    fi
    docker inspect --format \
        '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' \
        "$id" 2>/dev/null || echo missing
}

running_image() {  # SERVICE COMPOSE...: "IMAGE_ID REFERENCE" of the running container, or ''
    id=$(container_of "$@")
    [ -n "$id" ] || return 0
    docker inspect --format '{{.Image}} {{.Config.Image}}' "$id" 2>/dev/null || true
}

project_dirs() {  # PROJECT: the working directories of the project's containers
    docker ps -a --filter "label=com.docker.compose.project=$1" \
        --format '{{.Label "com.docker.compose.project.working_dir"}}' | LC_ALL=C sort -u
}

dir_projects() {  # DIR: the compose projects whose containers were made in DIR
    docker ps -a --filter "label=com.docker.compose.project.working_dir=$1" \
        --format '{{.Label "com.docker.compose.project"}}' | LC_ALL=C sort -u
}

detect_compose() {
    if docker compose version >/dev/null 2>&1; then
        echo v2
    elif docker-compose version >/dev/null 2>&1; then
        echo v1
    else
        exit 1
    fi
}

# -- HTTP from the VM itself: the status code of URL (000 when nothing answers)
http_status() {  # URL
    if command -v curl >/dev/null 2>&1; then
        curl -s -o /dev/null -m 2 -w '%{http_code}' "$1"
        echo
    elif command -v wget >/dev/null 2>&1; then
        code=$(wget -q -S -T 2 -t 1 -O /dev/null "$1" 2>&1 | sed -n 's/^ *HTTP\/[0-9.]* \([0-9]*\).*/\1/p' | tail -n 1)
        echo "${code:-000}"
    elif command -v python3 >/dev/null 2>&1; then
        python3 - "$1" <<'EOF'
import sys, urllib.error, urllib.request
try:
    print(urllib.request.urlopen(sys.argv[1], timeout=2).status)
except urllib.error.HTTPError as exc:
    print(exc.code)
except Exception:
    print("000")
EOF
    else
        echo "missing: none of curl, wget, python3 is installed on the VM"
        exit 127
    fi
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case $cmd in
    lock-acquire) lock_acquire "$1" ;;
    lock-read) lock_read ;;
    lock-renew) lock_renew "$1" ;;
    lock-release) rm -rf "$LOCK" ;;
    lock-release-if) lock_release_if "$1" ;;
    backup-sqlite) backup_sqlite "$@" ;;
    backup-stdout) backup_stdout "$@" ;;
    list-backups) list_backups ;;
    remove-backups) remove_backups "$@" ;;
    restore-sqlite) restore_sqlite "$@" ;;
    restore-postgres) restore_postgres "$@" ;;
    write-file) write_file "$1" ;;
    read-var) read_var "$@" ;;
    history-append) history_append "$1" ;;
    history-read) history_read ;;
    oneoffs) oneoffs "$1" ;;
    wait-oneoffs) wait_oneoffs "$@" ;;
    health-state) health_state "$@" ;;
    running-image) running_image "$@" ;;
    project-dirs) project_dirs "$1" ;;
    dir-projects) dir_projects "$1" ;;
    detect-compose) detect_compose ;;
    http-status) http_status "$1" ;;
    *) die "usage: helper SUBCOMMAND ARGS... (unknown: '$cmd')" ;;
esac
