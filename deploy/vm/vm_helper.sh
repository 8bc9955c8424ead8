#!/bin/sh
# deploy-toolkit's helper on the VM: every step longer than one command, as subcommands.
#
# Uploaded by content hash to <dir>/.deploy/bin/helper-<hash> of each directory the toolkit
# owns on the VM. The app's copy runs from <app_dir> as
#   sh .deploy/bin/helper-<hash> SUBCOMMAND ARGS...
# the proxy's (proxy-* subcommands, which take proxy_dir first) by its absolute path, as
#   sh <proxy_dir>/.deploy/bin/helper-<hash> proxy-reload <proxy_dir>
# POSIX sh (the VM's /bin/sh is dash): no pipefail, no arrays, no bashisms. Every argument
# arrives as its own word (the toolkit quotes them), so nothing here is re-parsed by a shell.
# Where a subcommand takes a compose command, it is the rest of the arguments ("$@").

set -u

STATE=.deploy
LOCK=$STATE/lock
LOCK_LOG=$STATE/lock.log  # who broke the lock (`fab unlock --force`), one JSON a line
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

lock_check() {  # HOLDER_JSON: exit 0 if still ours; else the holder (as lock-read), exit 3
    lock_is "$1" && return 0
    lock_read
    if [ -f "$LOCK_LOG" ]; then printf 'broken %s\n' "$(tail -n 1 "$LOCK_LOG")"; fi
    exit 3
}

lock_break() {  # RECORD_JSON: clear the lock whoever holds it; the record goes to the lock log
    mkdir -p "$STATE" && printf '%s\n' "$1" >> "$LOCK_LOG" && rm -rf "$LOCK"
}

lock_log_unseen() {  # the lock log's lines no deploy has shown yet (from now on: shown)
    [ -f "$LOCK_LOG" ] || return 0
    shown=$(cat "$LOCK_LOG.shown" 2>/dev/null)
    case $shown in '' | *[!0-9]*) shown=0 ;; esac
    total=$(( $(wc -l < "$LOCK_LOG") ))
    tail -n +"$(( shown + 1 ))" "$LOCK_LOG"
    echo "$total" > "$LOCK_LOG.shown"
}

# -- backups: 0600 files in a 0700 directory, written as NAME.part and renamed in; each
# followed by a line "SIZE SHA256" of what was written (the toolkit keeps it in NAME.json)
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
    chmod 600 "$target.part" && mv "$target.part" "$target" && echo "$target" \
        && file_sum "$target"
}

file_sum() {  # FILE: "SIZE SHA256"
    printf '%s %s\n' "$(wc -c < "$1" | tr -d ' ')" "$(sha256sum "$1" | cut -c1-64)"
}

file_format() {  # FILE: sqlite, pgdump (pg_dump's custom format) or unknown, by its first bytes
    if [ "$(head -c 15 "$1")" = "SQLite format 3" ]; then
        echo sqlite
    elif [ "$(head -c 5 "$1")" = "PGDMP" ]; then
        echo pgdump
    else
        echo unknown
    fi
}

backup_info() {  # NAME: its manifest (one line; "-" if none), then "SIZE SHA256 FORMAT"
    path=$BACKUPS/$1
    case $1 in
        */* | .*) die "not a backup name: $1" ;;
    esac
    [ -f "$path" ] || die "no backup $path"
    if [ -f "$path.json" ]; then tr -d '\n' < "$path.json"; echo; else echo -; fi
    echo "$(file_sum "$path") $(file_format "$path")"
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
    mv "$target.part" "$target" && echo "$target" && file_sum "$target"
}

list_backups() {  # newest first (names start with a UTC timestamp)
    [ -d "$BACKUPS" ] || return 0
    for path in "$BACKUPS"/*; do
        [ -f "$path" ] || continue
        name=${path#"$BACKUPS"/}
        case $name in
            *.part | *-wal | *.json | *.tmp | .*) ;;
            *) printf '%s\n' "$name" ;;
        esac
    done | LC_ALL=C sort -r
}

list_manifests() {  # newest first: NAME, a tab, its manifest on one line ("-" if none)
    list_backups | while IFS= read -r name; do
        if [ -f "$BACKUPS/$name.json" ]; then
            printf '%s\t%s\n' "$name" "$(tr -d '\n' < "$BACKUPS/$name.json")"
        else
            printf '%s\t-\n' "$name"
        fi
    done
}

remove_backups() {  # NAME...
    for name in "$@"; do
        case $name in
            */* | .*) die "not a backup name: $name" ;;
        esac
        rm -f "$BACKUPS/$name" "$BACKUPS/$name-wal" "$BACKUPS/$name.json"
    done
}

# -- a restore under way: .deploy/restore.json (written by the toolkit before the data step)
# becomes restore-done.json the moment the database equals the backup; restore.pid names the
# helper doing it. The next command records or reports what a killed restore left.
RESTORE_MARK=$STATE/restore.json
RESTORE_DONE=$STATE/restore-done.json
RESTORE_PID=$STATE/restore.pid

restore_started() {  # the data step runs to its end even if the SSH session goes away
    trap '' HUP PIPE
    echo $$ > "$RESTORE_PID"
}

restore_done() {  # the database equals the backup now
    if [ -f "$RESTORE_MARK" ]; then mv "$RESTORE_MARK" "$RESTORE_DONE" || return 1; fi
    rm -f "$RESTORE_PID"
}

restore_state() {  # the marker after its state, nothing if none: "running", "done", "died"
    # (its helper ended before the database was known to equal the backup) or "started" (no
    # helper ran the data step)
    if [ -f "$RESTORE_PID" ] && kill -0 "$(cat "$RESTORE_PID")" 2>/dev/null; then
        state=running
    elif [ -f "$RESTORE_DONE" ]; then
        echo "done"
        cat "$RESTORE_DONE"
        return
    elif [ -f "$RESTORE_PID" ]; then
        state=died
    else
        state=started
    fi
    [ -f "$RESTORE_MARK" ] || return 0
    echo "$state"
    cat "$RESTORE_MARK"
}

restore_clear() {
    rm -f "$RESTORE_MARK" "$RESTORE_DONE" "$RESTORE_PID"
}

restore_sqlite() {  # NAME DB_PATH
    source=$BACKUPS/$1 db=$2
    [ -f "$source" ] || die "no backup $source"
    restore_started
    mkdir -p "$(dirname "$db")" || exit 1
    cp -p "$source" "$db.restore" || { rm -f "$db.restore"; exit 1; }
    rm -f "$db-wal" "$db-shm"
    if [ -f "$source-wal" ]; then
        cp -p "$source-wal" "$db-wal" || exit 1
    fi
    mv "$db.restore" "$db" && restore_done
}

restore_postgres() {  # NAME USER DB COMPOSE_EXEC...: the backup becomes the database, exactly
    source=$BACKUPS/$1 user=$2 db=$3
    shift 3
    [ -f "$source" ] || die "no backup $source"
    restore_started
    sql=$BACKUPS/.restore-$$.sql
    umask 077
    # What the tools say goes to a file, shown after: with the SSH session gone, a write to it
    # would fail the tool (compose exec) whose transaction is under way.
    log=$STATE/restore.log
    : > "$log"
    # One transaction: the public schema dropped and made again, then the dump's objects.
    {
        printf 'DROP SCHEMA IF EXISTS public CASCADE;\nCREATE SCHEMA public;\n'
        "$@" pg_restore -f - < "$source" 2>> "$log"
    } > "$sql"
    rc=$?
    if [ "$rc" -ne 0 ]; then
        cat "$log" >&2
        rm -f "$sql" "$RESTORE_PID"
        die "pg_restore could not read $source (exit $rc)"
    fi
    "$@" psql -X -q -v ON_ERROR_STOP=1 --single-transaction -U "$user" -d "$db" < "$sql" \
        >> "$log" 2>&1
    rc=$?
    rm -f "$sql"
    if [ "$rc" -eq 0 ]; then restore_done; else rm -f "$RESTORE_PID"; fi
    cat "$log" >&2
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

# -- the release files: .deploy/release.env, .env (and .deploy/release.yaml), each written only
# when it changed, `rewritten PATH` said for each that did. .env is app.env's lines then the
# tail given: app.env's values never leave the VM. Texts arrive one line an argument (every
# command stays one line), each text ended by an argument `--`.
NL='
'

write_text() {  # PATH TEXT: written as write-file writes stdin
    said=$(printf '%s' "$2" | write_file "$1") || exit 1
    [ -z "$said" ] || printf 'rewritten %s\n' "$1"
}

release_files() {  # APP_ENV RELEASE_LINE... -- DOTENV_TAIL_LINE... -- OVERRIDE_LINE... --
    # [COMMAND...]: then COMMAND's output (e.g. compose config) after a line `@@fact output`
    app_env=$1
    shift
    release='' tail='' override=''
    while [ $# -gt 0 ] && [ "$1" != -- ]; do release=$release$1$NL; shift; done
    [ $# -eq 0 ] || shift
    while [ $# -gt 0 ] && [ "$1" != -- ]; do tail=$tail$1$NL; shift; done
    [ $# -eq 0 ] || shift
    while [ $# -gt 0 ] && [ "$1" != -- ]; do override=$override$1$NL; shift; done
    [ $# -eq 0 ] || shift
    mkdir -p "$STATE" || exit 1
    write_text "$STATE/release.env" "$release"
    [ -z "$override" ] || write_text "$STATE/release.yaml" "$override"
    dotenv=$(awk '{ print }' "$app_env" 2>/dev/null; printf '%s' "$tail")
    write_text .env "$dotenv$NL"
    [ $# -gt 0 ] || return 0
    fact output
    "$@"
}

record() {  # JSON APP_ENV ...: the history record, then the release files as release-files
    history_append "$1" || exit 1
    shift
    release_files "$@"
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

retiring() {  # ID (full or short): whether a blue/green switch retires the container (it
    # stops in the background, marked in .deploy/retiring/ by its full id)
    for f in .deploy/retiring/"$1"*; do
        [ -e "$f" ] && return 0
    done
    return 1
}

container_of() {  # SERVICE COMPOSE...: the id of the service's container ('' if none), not
    # one a switch retires
    service=$1
    shift
    for id in $("$@" ps -q "$service" 2>/dev/null); do
        retiring "$id" || { echo "$id"; return 0; }
    done
}

container_release() {  # ID: "STATE IMAGE_ID REFERENCE": its health (healthy, unhealthy,
    # starting), else its run state, the image it runs and the reference it was started from
    docker inspect --format '{{if .State.Health}}{{.State.Health.Status}}{{else}}'\
'{{.State.Status}}{{end}} {{.Image}} {{.Config.Image}}' "$1" 2>/dev/null
}

health_state() {  # SERVICE COMPOSE...: container_release of the service's container ("missing"
    # alone if there is none)
    id=$(container_of "$@")
    if [ -z "$id" ]; then
        echo missing
        return
    fi
    found=$(container_release "$id") || found=missing
    echo "${found:-missing}"
}

# What the health wait reads of a container, one `docker inspect` a poll: container_release's
# line, then "|" and when Docker last started or probed it, then "|" and its health check.
WAIT_FORMAT='{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}} '\
'{{.Image}} {{.Config.Image}}|{{.State.StartedAt}}{{with .State.Health}}{{range .Log}} '\
'{{.End.Format "2006-01-02T15:04:05.000000000Z07:00"}}{{end}}{{end}}|{{json .Config.Healthcheck}}'

ms_of() {  # [DATE]: milliseconds since the epoch (now without DATE); '' where date cannot say
    ms=$(date ${1:+-d "$1"} +%s%3N 2>/dev/null) || return 0
    case $ms in '' | *[!0-9]*) ;; *) echo "$ms" ;; esac
}

nanos_of() {  # FIELD JSON: a duration field of a health check's JSON, in ns ('' if absent)
    printf '%s' "$2" | sed -n "s/.*\"$1\":\([0-9]*\).*/\1/p"
}

wait_times() {  # INFO (a WAIT_FORMAT line): its start and probe times ('' without them)
    rest=${1#*|}
    [ "$rest" = "$1" ] || echo "${rest%%|*}"
}

probe_quiet_ms() {  # INFO (a WAIT_FORMAT line): how long no probe can end Docker's "starting"
    # ('' if not known). Docker probes INTERVAL after the container's start or after the last
    # probe ended; engines with a start interval (default 5 s) may probe at that pace instead.
    times=$(wait_times "$1")
    [ -n "$times" ] || return 0
    check=${1#*|}
    check=${check#*|}
    last=${times##* }
    interval=$(nanos_of Interval "$check")
    early=$(nanos_of StartInterval "$check")
    [ "${interval:-0}" -gt 0 ] || interval=30000000000
    [ "${early:-0}" -gt 0 ] || early=5000000000
    [ "$early" -lt "$interval" ] && interval=$early
    then_ms=$(ms_of "$last")
    now_ms=$(ms_of)
    [ -n "$then_ms" ] && [ -n "$now_ms" ] || return 0
    echo $((then_ms + interval / 1000000 - now_ms))
}

sleep_ms() {  # MS: sleep that long
    sleep "$(($1 / 1000)).$(printf %03d $(($1 % 1000)))"
}

health_state_wait() {  # SECONDS STEADY SERVICE COMPOSE...: health_state's line once Docker's verdict
    # is in (healthy, unhealthy, exited, dead), the container ran STEADY polls in a row without
    # a health check, or it was seen restarting twice; exit 3 with the last line after SECONDS.
    # Polled here on the VM every 0.1 s, by id (a `compose ps` only when the id is not known or
    # gone): no round trip per poll. While the container's health check cannot have run yet,
    # it sleeps instead: a check every 2 s would otherwise cost 20 polls for one verdict.
    end=$(( $(now) + $1 ))
    steady_max=$2
    shift 2
    steady=0
    restarts=0
    cid=
    seen=
    while :; do
        [ -n "$cid" ] || cid=$(container_of "$@")
        line=missing
        info=
        if [ -n "$cid" ]; then
            info=$(docker inspect --format "$WAIT_FORMAT" "$cid" 2>/dev/null) || {
                info=
                cid=
            }
            line=${info%%|*}
            line=${line:-missing}
        fi
        state=${line%% *}
        case $state in
            healthy | unhealthy | exited | dead)
                echo "$line"
                return 0
                ;;
            running) steady=$((steady + 1)) ;;
            restarting) steady=0 && restarts=$((restarts + 1)) ;;
            *) steady=0 ;;
        esac
        if [ "$steady" -ge "$steady_max" ] || [ "$restarts" -ge 2 ]; then
            echo "$line"
            return 0
        fi
        if [ "$(now)" -ge "$end" ]; then
            echo "$line"
            exit 3
        fi
        pause=100
        times=$(wait_times "$info")
        if [ "$state" = starting ] && [ -n "$times" ] && [ "$times" != "$seen" ]; then
            seen=$times  # once a start or probe: a probe may run long
            quiet=$(probe_quiet_ms "$info")
            left=$(( (end - $(now)) * 1000 ))
            [ "${quiet:-0}" -gt "$left" ] && quiet=$left
            [ "${quiet:-0}" -gt "$pause" ] && pause=$quiet
        fi
        sleep_ms "$pause"
    done
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

# -- what a release's checks need to know, in one round trip: one document of sections, each
# a line `@@fact NAME` then its lines; `@@fact end` last (its absence: the helper was cut off)
fact() {
    printf '@@fact %s\n' "$1"
}

http_tool() {  # the first of curl, wget, python3 the VM has (nothing if none)
    for tool in curl wget python3; do
        if command -v "$tool" >/dev/null 2>&1; then
            echo "$tool"
            return
        fi
    done
}

fact_part() {  # NAME TAG_VAR PROJECT APP_DIR COMPOSE [IMAGE]: the lines of facts' section NAME
    case $1 in
        compose) if [ "$5" = auto ]; then (detect_compose) || echo none; else echo "$5"; fi ;;
        project-dirs) project_dirs "$3" ;;
        dir-projects) dir_projects "$4" ;;
        oneoffs) oneoffs "$3" ;;
        docker-df) (disk_free docker) 2>/dev/null ;;
        app-images) (app_images "${6:-}") 2>/dev/null ;;
    esac
}

facts() {  # TAG_VAR PROJECT APP_DIR COMPOSE [IMAGE] (COMPOSE: v2, v1, or auto: detected;
    # IMAGE: also the engine's free disk and the repository's images, which a pull checks)
    # Each docker CLI call costs tens of milliseconds of start-up: they run side by side into
    # files, printed in order once all are done. A file not written to its end (a full disk)
    # is asked again, in order.
    parts="compose project-dirs dir-projects oneoffs"
    [ -z "${5:-}" ] || parts="$parts docker-df app-images"
    tmp=$(mktemp -d 2>/dev/null) || tmp=
    if [ -n "$tmp" ]; then
        for name in $parts; do
            { fact_part "$name" "$@"; echo "@@fact-done"; } > "$tmp/$name" 2>/dev/null &
        done
        wait
    fi
    fact env-keys
    env_keys app.env
    fact release-tag
    read_var "$STATE/release.env" "$1"
    fact dotenv-tag
    read_var .env "$1"
    for name in $parts; do
        fact "$name"
        if [ -n "$tmp" ] && [ "$(tail -n 1 "$tmp/$name" 2>/dev/null)" = "@@fact-done" ]; then
            sed '$d' "$tmp/$name"
        else
            fact_part "$name" "$@"
        fi
    done
    [ -z "$tmp" ] || rm -rf "$tmp"
    fact http-tool
    http_tool
    fact history
    awk '{ print }' "$STATE/history.jsonl" 2>/dev/null
    fact end
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

# -- the app's env file: keys only ever leave the VM, never values
env_keys() {  # FILE: the keys of FILE, one a line (nothing if it does not exist)
    [ -f "$1" ] || return 0
    sed -n 's/^[[:space:]]*\(export[[:space:]][[:space:]]*\)\{0,1\}\([A-Za-z_][A-Za-z0-9_]*\)[[:space:]]*=.*/\2/p' "$1"
}

env_set() {  # FILE KEY: the line on stdin replaces KEY's line(s) in FILE (or is added); 0600
    file=$1 key=$2
    case $key in
        '' | [0-9]* | *[!A-Za-z0-9_]*) die "not a variable name: $key" ;;
    esac
    umask 077
    line=$(cat) || exit 1
    {
        grep -v "^[[:space:]]*${key}[[:space:]]*=" "$file" 2>/dev/null
        printf '%s\n' "$line"
    } > "$file.tmp" && chmod 600 "$file.tmp" && mv "$file.tmp" "$file"
}

env_line() {  # FILE KEY: KEY's last line in FILE (its value stays on the VM but for --show); exit 3 if none
    file=$1 key=$2
    case $key in
        '' | [0-9]* | *[!A-Za-z0-9_]*) die "not a variable name: $key" ;;
    esac
    [ -f "$file" ] || exit 3
    found=$(grep "^[[:space:]]*\(export[[:space:]][[:space:]]*\)\{0,1\}${key}[[:space:]]*=" "$file" | tail -n 1)
    [ -n "$found" ] || exit 3
    printf '%s\n' "$found"
}

env_unset() {  # FILE KEY: KEY's line(s) removed from FILE; exit 3 if it has none. Atomic, 0600.
    file=$1 key=$2
    case $key in
        '' | [0-9]* | *[!A-Za-z0-9_]*) die "not a variable name: $key" ;;
    esac
    pattern="^[[:space:]]*\(export[[:space:]][[:space:]]*\)\{0,1\}${key}[[:space:]]*="
    [ -f "$file" ] && grep -q "$pattern" "$file" || exit 3
    umask 077
    grep -v "$pattern" "$file" > "$file.tmp"
    [ $? -le 1 ] && chmod 600 "$file.tmp" && mv "$file.tmp" "$file"
}

env_merge() {  # FILE: the KEY=value lines on stdin replace or join FILE's; FILE's other lines
    # are kept. Prints `changed KEY` for each key whose line differed, `kept KEY` for each key
    # only FILE had (names, never values). Atomic, 0600.
    file=$1
    umask 077
    [ -f "$file" ] || : > "$file"
    awk -v old="$file" -v out="$file.tmp" '
        function key(line) {
            sub(/^[ \t]*(export[ \t]+)?/, "", line)
            if (!sub(/[ \t]*=.*/, "", line) || line !~ /^[A-Za-z_][A-Za-z0-9_]*$/) return ""
            return line
        }
        { k = key($0); if (k == "") next; given[k] = $0; print > out }
        END {
            while ((getline line < old) > 0) {
                k = key(line)
                if (k == "") { print line > out; continue }
                if (!(k in given)) { print line > out; if (!(k in said)) print "kept " k }
                else if (given[k] != line && !(k in said)) print "changed " k
                said[k] = 1
            }
            printf "" > out
            close(out)
        }' && chmod 600 "$file.tmp" && mv "$file.tmp" "$file"
}

# -- after a switch behind the proxy: compose up of every service but the web one
settle() {  # SERVICE COMPOSE...
    service=$1
    shift
    others=$("$@" config --services | grep -vx -- "$service") || return 0
    [ -n "$others" ] || return 0
    # shellcheck disable=SC2086 # one service name per word
    "$@" up -d --no-deps --remove-orphans $others
}

# -- swarm
task_last_health() {  # TASK_ID: the last line of the last health check its container ran
    c=$(docker inspect --format '{{.Status.ContainerStatus.ContainerID}}' "$1" 2>/dev/null) \
        || return 0
    [ -n "$c" ] || return 0
    docker inspect --format '{{with .State.Health}}{{range .Log}}{{.Output}}{{end}}{{end}}' \
        "$c" 2>/dev/null | grep . | tail -n 1
    return 0
}

# -- housekeeping: images, stopped containers, free disk, removing the app
app_images() {  # IMAGE: "image ID SIZE REF..." for each image of the repository IMAGE (REF: its
    # tags and digests), then "used ID" for the image of each container on the VM (any app's)
    ids=$(docker image ls -q --no-trunc "$1" | LC_ALL=C sort -u)
    # one inspect for all: an image removed meanwhile is left out
    # shellcheck disable=SC2086 # one image id per word
    [ -z "$ids" ] || docker image inspect --format \
        'image {{.Id}} {{.Size}}{{range .RepoTags}} {{.}}{{end}}{{range .RepoDigests}} {{.}}{{end}}' \
        $ids 2>/dev/null
    ids=$(docker ps -aq --no-trunc) || exit 1
    [ -n "$ids" ] || return 0
    # shellcheck disable=SC2086 # one container id per word
    docker inspect --format 'used {{.Image}}' $ids 2>/dev/null || true
}

remove_images() {  # REF...: untag each REF still there (its image goes with its last
    # reference; the engine refuses one a container uses)
    rc=0
    for ref in "$@"; do
        docker image inspect "$ref" >/dev/null 2>&1 || continue
        docker image rm "$ref" >/dev/null || rc=1
    done
    return "$rc"
}

prune_containers() {  # PROJECT: remove the project's stopped containers; prints their names
    ids=$(docker ps -aq --filter "label=com.docker.compose.project=$1" --filter status=exited \
        --filter status=created --filter status=dead) || exit 1
    [ -n "$ids" ] || return 0
    # shellcheck disable=SC2086 # one container id per word
    docker inspect --format '{{.Name}}' $ids | sed 's|^/||'
    # shellcheck disable=SC2086
    docker rm $ids >/dev/null
}

disk_free() {  # WHERE: `df -Pk` of the filesystem holding WHERE, a directory (the nearest
    # one that exists) or `docker` (the engine's data root)
    where=$1
    if [ "$where" = docker ]; then
        where=$(docker info --format '{{.DockerRootDir}}') || exit 1
    fi
    while [ ! -e "$where" ] && [ "$where" != / ] && [ "$where" != . ]; do
        where=$(dirname "$where")
    done
    df -Pk "$where"
}

file_size() {  # PATH...: the bytes of the files that exist (a database and its -wal), summed
    total=0
    for path in "$@"; do
        [ -f "$path" ] || continue
        total=$(( total + $(wc -c < "$path") ))
    done
    echo "$total"
}

remove_app() {  # APP_DIR DATA PROJECT KEEP...: remove the app's containers and networks, with
    # DATA=yes its volumes too, then every file in APP_DIR (the working directory) but the
    # lock, the helper and the relative paths KEEP. Prints what it removed and kept.
    app_dir=$1 data=$2 project=$3
    shift 3
    [ "$(pwd -P)" = "$app_dir" ] || die "not in $app_dir"
    label="label=com.docker.compose.project=$project"
    ids=$(docker ps -aq --filter "$label") || exit 1
    if [ -n "$ids" ]; then
        # shellcheck disable=SC2086 # one container id per word
        docker inspect --format 'container {{.Name}}' $ids | sed 's|/||'
        # shellcheck disable=SC2086
        docker rm --force $ids >/dev/null || exit 1
    fi
    for name in $(docker network ls --format '{{.Name}}' --filter "$label"); do
        docker network rm "$name" >/dev/null && echo "network $name"
    done
    if [ "$data" = yes ]; then
        for name in $(docker volume ls -q --filter "$label"); do
            docker volume rm "$name" >/dev/null || exit 1
            echo "volume $name"
        done
    else
        for name in $(docker volume ls -q --filter "$label"); do echo "kept volume $name"; done
    fi
    # children before their directory; top-level names said once
    find . -mindepth 1 -depth | while IFS= read -r path; do
        path=${path#./}
        what=keep
        case $path in
            "$LOCK" | "$LOCK"/* | "$STATE/bin" | "$STATE/bin"/* | "$STATE") ;;  # remove-state's
            *) what=remove ;;
        esac
        for kept in "$@"; do
            case $path in
                "$kept" | "$kept"/* | "$kept"-wal | "$kept"-shm) what=keep ;;
            esac
            case $kept in "$path"/*) what=keep ;; esac  # a directory with a kept file in it
        done
        if [ "$what" = remove ]; then
            rm -rf "$path" || exit 1
            case $path in */*) ;; *) echo "file $path" ;; esac
        else
            for kept in "$@"; do [ "$path" = "$kept" ] && echo "kept $path"; done
        fi
    done
}

remove_state() {  # APP_DIR: after remove-app released the lock, take it once more (nobody
    # else may hold it), then remove .deploy, and APP_DIR if nothing is left in it
    [ "$(pwd -P)" = "$1" ] || die "not in $1"
    mkdir "$LOCK" 2>/dev/null || die "the deploy lock was taken meanwhile; $1/$STATE is left"
    rm -rf "$STATE"
    cd / && rmdir "$1" 2>/dev/null && echo "directory $1"
    return 0
}

# -- the proxy (Caddy) in proxy_dir; see deploy/commands/proxy.py for its layout
PROXY_LOCK_WAIT=${DEPLOY_PROXY_LOCK_WAIT:-60}  # seconds; the variable is for the tests
UPSTREAM_HEADER=X-Deploy-Upstream

proxy_requirements() {  # exit 1 naming what the VM lacks for the proxy
    missing=
    for tool in curl flock; do
        command -v "$tool" >/dev/null 2>&1 || missing="$missing $tool"
    done
    [ -z "$missing" ] || { echo "missing on the VM:$missing"; exit 1; }
}

proxy_write_base() {  # DIR HEAD TAIL FALLBACK < COMPOSE: Caddy's project and base config
    dir=$1
    mkdir -p "$dir/base" "$dir/apps" "$dir/conf/upstreams" "$dir/run" "$dir/data" \
        "$dir/config" && cd "$dir" || exit 1
    cat > compose.json.tmp && mv compose.json.tmp compose.json || exit 1
    printf '%s' "$2" > base/head.json && printf '%s' "$3" > base/tail.json \
        && printf '%s' "$4" > base/fallback.json
}

proxy_locked() {  # DIR FUNCTION ARGS...: FUNCTION in DIR, holding the config lock
    cd "$1" || exit 1
    shift
    exec 9>>lock
    flock -w "$PROXY_LOCK_WAIT" 9 || die "the proxy config stayed locked for ${PROXY_LOCK_WAIT}s"
    "$@"
}

proxy_assemble() {  # conf/caddy.json: head, the app routes, the fallback route (404), tail
    {
        cat base/head.json
        sep=
        for part in apps/*.json base/fallback.json; do
            [ -f "$part" ] || continue
            printf '%s' "$sep"
            cat "$part"
            sep=,
        done
        cat base/tail.json
    } > conf/caddy.json.tmp && mv conf/caddy.json.tmp conf/caddy.json
}

proxy_load() {  # hand conf/caddy.json to the running Caddy (it keeps the old one if it refuses)
    code=$(curl -sS -o .load.out -w '%{http_code}' --max-time 30 \
        --unix-socket run/admin.sock -H 'Content-Type: application/json' \
        --data-binary @conf/caddy.json http://localhost/load) || code=000
    if [ "$code" != 200 ]; then
        echo "Caddy refused the config (HTTP $code):" >&2
        cat .load.out >&2 2>/dev/null
        return 1
    fi
}

proxy_reload() {
    proxy_assemble && proxy_load
}

project_file() {  # PROJECT: refuses a name that is not one file name
    case $1 in
        '' | */* | .*) die "not a project name: $1" ;;
    esac
}

HOST_TAKEN=4

proxy_host_owners() {  # PROJECT HOST...: "PROJECT DIR HOST" for each host another app's route has
    own=$1
    shift
    for host in "$@"; do
        for file in apps/*.json; do
            [ -f "$file" ] || continue
            other=${file#apps/}
            other=${other%.json}
            [ "$other" = "$own" ] && continue
            # a route names its hosts as JSON strings; nothing else in it is one
            if grep -qF "\"$host\"" "$file"; then
                printf '%s %s %s\n' "$other" "$(cat "apps/$other.dir" 2>/dev/null || echo -)" \
                    "$host"
            fi
        done
    done
}

proxy_set_route() {  # PROJECT ROUTE_JSON APP_DIR HOST...: write, rebuild, load; if refused,
    # put the old back. A host another app's route has is refused (exit HOST_TAKEN): it
    # must be moved explicitly (its route rewritten first).
    project_file "$1"
    project=$1 route=apps/$1.json json=$2 app_dir=$3
    shift 3
    owners=$(proxy_host_owners "$project" "$@")
    if [ -n "$owners" ]; then
        printf '%s\n' "$owners"
        exit "$HOST_TAKEN"
    fi
    [ "$(cat "apps/$project.dir" 2>/dev/null)" = "$app_dir" ] \
        || printf '%s\n' "$app_dir" > "apps/$project.dir"
    set -- "$project" "$json"
    [ "$(cat "$route" 2>/dev/null)" = "$2" ] && return 0
    if [ -f "$route" ]; then cp "$route" "$route.prev"; else rm -f "$route.prev"; fi
    if printf '%s\n' "$2" > "$route.tmp" && mv "$route.tmp" "$route" && proxy_assemble \
        && proxy_load; then
        return 0
    fi
    if [ -f "$route.prev" ]; then mv "$route.prev" "$route"; else rm -f "$route"; fi
    proxy_assemble
    exit 1
}

proxy_drop_route() {  # PROJECT: the app's route removed (its hosts answer 404), loaded
    project_file "$1"
    rm -f "apps/$1.json" "apps/$1.dir" && proxy_reload
}

proxy_remove_app() {  # PROJECT: the app's route, upstream and maintenance files removed, the
    # config loaded
    project_file "$1"
    rm -f "conf/upstreams/$1" "conf/maintenance/$1.html" "conf/maintenance/$1.retry" \
        "conf/maintenance/$1.json" && proxy_drop_route "$1"
}

proxy_wait_admin() {  # DIR TIMEOUT: until Caddy's admin API answers; exit 1 after TIMEOUT s
    end=$(( $(now) + $2 ))
    until curl -s -o /dev/null --max-time 2 --unix-socket "$1/run/admin.sock" \
        http://localhost/config/; do
        [ "$(now)" -ge "$end" ] && exit 1
        sleep 0.2
    done
}

proxy_set_upstream() {  # DIR PROJECT UPSTREAM: one atomic rename (Caddy reads it per request)
    project_file "$2"
    f=$1/conf/upstreams/$2
    mkdir -p "$1/conf/upstreams" && printf '%s' "$3" > "$f.tmp" && mv "$f.tmp" "$f"
}

proxy_maintenance_on() {  # DIR PROJECT RETRY_AFTER INFO_JSON < PAGE: the page last, by a
    # rename: Caddy answers the app's hosts with it from the next request on
    project_file "$2"
    m=$1/conf/maintenance/$2
    mkdir -p "$1/conf/maintenance" || exit 1
    printf '%s' "$3" > "$m.retry.tmp" && mv "$m.retry.tmp" "$m.retry" \
        && printf '%s\n' "$4" > "$m.json.tmp" && mv "$m.json.tmp" "$m.json" \
        && cat > "$m.html.tmp" && chmod 644 "$m.html.tmp" "$m.retry" && mv "$m.html.tmp" "$m.html"
}

proxy_maintenance_off() {  # DIR PROJECT: the page file first (the switch), then the rest
    project_file "$2"
    m=$1/conf/maintenance/$2
    rm -f "$m.html" && rm -f "$m.retry" "$m.json" "$m.html.tmp"
}

proxy_maintenance_state() {  # DIR PROJECT: "on" and who turned it on, or nothing when off
    project_file "$2"
    m=$1/conf/maintenance/$2
    [ -f "$m.html" ] || return 0
    echo on
    cat "$m.json" 2>/dev/null
    return 0
}

proxy_poll() {  # DIR CONTAINER UPSTREAM URL: "STATE CODE", CODE of one request through Caddy
    # (proxy-down if Caddy does not listen); while Docker's health check has not run yet,
    # "starting CODE QUIET": QUIET the milliseconds until it can have (no verdict before)
    info=$(docker inspect --format "$WAIT_FORMAT" "$2" 2>/dev/null) || info=
    state=${info%% *}
    case ${state:-missing} in
        unhealthy | exited | dead | missing)
            echo "${state:-missing} -"
            return
            ;;
    esac
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 \
        --unix-socket "$1/run/check.sock" -H "$UPSTREAM_HEADER: $3" "$4")
    # curl's exit 7: nothing listens on Caddy's socket (Caddy is down), not the app's fault
    [ $? -eq 7 ] && code=proxy-down
    quiet=
    if [ "$state" = starting ]; then
        quiet=$(probe_quiet_ms "$info")
        [ "${quiet:-0}" -gt 0 ] || quiet=
    fi
    echo "$state ${code:-000}${quiet:+ $quiet}"
}

retire() {  # ID...: each stopped within its stop grace period (finishing the requests it
    # serves), then removed, in the background: the deploy goes on and ends meanwhile, and so
    # does the stop if the SSH session ends. Each is marked in .deploy/retiring/ until it is
    # gone, so that the next switch waits for it instead of removing it by force.
    for id in "$@"; do
        case $id in *[!0-9a-f]*|'') die "retire: '$id' is not a container id" ;; esac
    done
    mkdir -p .deploy/retiring
    for id in "$@"; do : > ".deploy/retiring/$id"; done
    (
        trap '' HUP
        docker stop "$@"
        docker rm --force "$@"
        for id in "$@"; do rm -f ".deploy/retiring/$id"; done
    ) </dev/null >/dev/null 2>&1 &
}

to_end() {  # CMD...: CMD run to its end even if the SSH session goes away meanwhile, its
    # output shown once it ends. Cut off from the session's pipes, a program dies at its next
    # line of output (SIGPIPE): a `compose up` then leaves the old container removed and the
    # new one created, never started, and nothing serves until the next deploy. Another CMD
    # still running (cut off with an earlier session) is waited for first, 120 s at most, so
    # that a switch back does not collide with it.
    pidfile=$STATE/to-end.pid
    out=$STATE/to-end.$$.out
    end=$(( $(now) + 120 ))
    while earlier=$(cat "$pidfile" 2>/dev/null) && [ -n "$earlier" ] \
            && kill -0 "$earlier" 2>/dev/null && [ "$(now)" -lt "$end" ]; do
        sleep_ms 100
    done
    ( trap '' HUP PIPE; exec "$@" ) </dev/null >"$out" 2>&1 &
    echo $! > "$pidfile"
    wait $!
    rc=$?
    rm -f "$pidfile"
    exec 3<"$out"  # removed before it is shown: the session may be gone, and us with it
    rm -f "$out"
    cat <&3
    return $rc
}

wait_gone() {  # TIMEOUT ID...: until none of the containers exists; exit 1 after TIMEOUT s
    end=$(( $(now) + $1 ))
    shift
    while :; do
        left=
        for id in "$@"; do
            docker inspect --format . "$id" >/dev/null 2>&1 && left="$left $id"
        done
        [ -n "$left" ] || return 0
        [ "$(now)" -ge "$end" ] && { echo "still there:$left"; exit 1; }
        sleep 0.1
    done
}

wait_retired() {  # TIMEOUT [ID...]: until those of the containers a switch retires (marked
    # in .deploy/retiring/; all of them without an ID) are gone: exit 1 after TIMEOUT s,
    # naming those left. Markers of containers gone (their stop was cut short) are removed.
    t=$1
    shift
    if [ $# -eq 0 ]; then
        for f in .deploy/retiring/*; do
            [ -e "$f" ] && set -- "$@" "${f##*/}"
        done
    fi
    marked=
    for id in "$@"; do
        retiring "$id" && marked="$marked $id"
    done
    if [ -n "$marked" ]; then
        # shellcheck disable=SC2086 # one container id per word
        wait_gone "$t" $marked
    fi
    for f in .deploy/retiring/*; do
        [ -e "$f" ] || continue
        docker inspect --format . "${f##*/}" >/dev/null 2>&1 || rm -f "$f"
    done
}

ensure_network() {  # NAME
    docker network inspect "$1" >/dev/null 2>&1 || docker network create "$1"
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case $cmd in
    lock-acquire) lock_acquire "$1" ;;
    lock-read) lock_read ;;
    lock-renew) lock_renew "$1" ;;
    lock-release) rm -rf "$LOCK" ;;
    lock-release-if) lock_release_if "$1" ;;
    lock-check) lock_check "$1" ;;
    lock-break) lock_break "$1" ;;
    lock-log-unseen) lock_log_unseen ;;
    backup-sqlite) backup_sqlite "$@" ;;
    backup-stdout) backup_stdout "$@" ;;
    list-backups) list_backups ;;
    list-manifests) list_manifests ;;
    remove-backups) remove_backups "$@" ;;
    restore-sqlite) restore_sqlite "$@" ;;
    restore-postgres) restore_postgres "$@" ;;
    restore-state) restore_state ;;
    restore-clear) restore_clear ;;
    backup-info) backup_info "$1" ;;
    write-file) write_file "$1" ;;
    read-var) read_var "$@" ;;
    history-append) history_append "$1" ;;
    history-read) history_read ;;
    oneoffs) oneoffs "$1" ;;
    wait-oneoffs) wait_oneoffs "$@" ;;
    health-state) health_state "$@" ;;
    health-state-wait) health_state_wait "$@" ;;
    running-image) running_image "$@" ;;
    project-dirs) project_dirs "$1" ;;
    dir-projects) dir_projects "$1" ;;
    detect-compose) detect_compose ;;
    facts) facts "$@" ;;
    release-files) release_files "$@" ;;
    record) record "$@" ;;
    http-status) http_status "$1" ;;
    env-keys) env_keys "$1" ;;
    env-set) env_set "$@" ;;
    env-line) env_line "$@" ;;
    env-unset) env_unset "$@" ;;
    env-merge) env_merge "$1" ;;
    settle) settle "$@" ;;
    task-last-health) task_last_health "$1" ;;
    proxy-requirements) proxy_requirements ;;
    proxy-write-base) proxy_write_base "$@" ;;
    proxy-assemble) proxy_locked "$1" proxy_assemble ;;
    proxy-reload) proxy_locked "$1" proxy_reload ;;
    proxy-set-route) dir=$1 && shift && proxy_locked "$dir" proxy_set_route "$@" ;;
    proxy-drop-route) proxy_locked "$1" proxy_drop_route "$2" ;;
    proxy-host-owners) cd "$1" && shift && proxy_host_owners "$@" ;;
    proxy-wait-admin) proxy_wait_admin "$@" ;;
    proxy-set-upstream) proxy_set_upstream "$@" ;;
    proxy-poll) proxy_poll "$@" ;;
    proxy-maintenance-on) proxy_maintenance_on "$@" ;;
    proxy-maintenance-off) proxy_maintenance_off "$@" ;;
    proxy-maintenance-state) proxy_maintenance_state "$@" ;;
    ensure-network) ensure_network "$1" ;;
    retire) retire "$@" ;;
    to-end) to_end "$@" ;;
    wait-retired) wait_retired "$@" ;;
    app-images) app_images "$1" ;;
    prune-containers) prune_containers "$1" ;;
    remove-images) remove_images "$@" ;;
    disk-free) disk_free "$1" ;;
    file-size) file_size "$@" ;;
    remove-app) remove_app "$@" ;;
    remove-state) remove_state "$1" ;;
    proxy-remove-app) proxy_locked "$1" proxy_remove_app "$2" ;;
    *) die "usage: helper SUBCOMMAND ARGS... (unknown: '$cmd')" ;;
esac
