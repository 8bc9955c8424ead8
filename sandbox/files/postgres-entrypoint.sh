#!/bin/sh
# The sandbox's postgres:17 entrypoint, standing in for the Docker Hub image's: on an empty
# $PGDATA, initdb with POSTGRES_USER / POSTGRES_PASSWORD / POSTGRES_DB (and run any
# /docker-entrypoint-initdb.d/*.sql or *.sh); then serve on all addresses with password auth
# for remote clients, as the postgres user. SIGTERM (docker stop) is a fast shutdown.
set -eu

case "${1:-postgres}" in
    postgres | -*) ;;
    *) exec "$@" ;;
esac
if [ "${1:-}" = postgres ]; then shift; fi
: "${PGDATA:=/var/lib/postgresql/data}"
export PGDATA

if [ "$(id -u)" = 0 ]; then
    mkdir -p "$PGDATA" /run/postgresql
    chmod 700 "$PGDATA"
    chown postgres:postgres /run/postgresql
    if [ "$(stat -c %u "$PGDATA")" != "$(id -u postgres)" ]; then
        chown -R postgres:postgres "$PGDATA"
    fi
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" postgres "$@"
fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    if [ -z "${POSTGRES_PASSWORD:-}" ]; then
        echo "error: the database is not initialized and POSTGRES_PASSWORD is not set" >&2
        exit 1
    fi
    user=${POSTGRES_USER:-postgres}
    db=${POSTGRES_DB:-$user}
    pwfile=$(mktemp)
    printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
    initdb --username="$user" --pwfile="$pwfile" --encoding=UTF8 --locale=C.UTF-8 \
        --auth-local=trust --auth-host=scram-sha-256 >/dev/null
    rm -f "$pwfile"
    printf 'host all all all scram-sha-256\n' >>"$PGDATA/pg_hba.conf"
    pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
    if [ "$db" != postgres ]; then
        echo 'CREATE DATABASE :"db";' | psql -v ON_ERROR_STOP=1 -v db="$db" -U "$user" -d postgres -q
    fi
    for f in /docker-entrypoint-initdb.d/*; do
        case "$f" in
            *.sql) psql -v ON_ERROR_STOP=1 -U "$user" -d "$db" -q -f "$f" ;;
            *.sh)
                # shellcheck disable=SC1090 # the user's init scripts
                . "$f"
                ;;
        esac
    done
    pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
    echo "initialized $PGDATA: user $user, database $db"
fi

postgres -c listen_addresses='*' "$@" &
pid=$!
trap 'kill -INT "$pid" 2>/dev/null || true' TERM INT
status=0
while kill -0 "$pid" 2>/dev/null; do  # a trapped signal cuts `wait` short: wait again
    status=0
    wait "$pid" || status=$?
done
exit "$status"
