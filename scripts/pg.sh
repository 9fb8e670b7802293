#!/usr/bin/env bash
# Finds a PostgreSQL server for boardcast, starting a throwaway one if needed, and prints shell exports.
#
#   eval "$(scripts/pg.sh env boardcast)"   # DATABASE_URL for database "boardcast" (created if missing)
#   scripts/pg.sh stop                       # stop the throwaway cluster, if this script started one
#
# Where the server comes from, in order:
#   1. DATABASE_URL, if set (used as given, with or without NAME: it names the database to use).
#   2. A server already answering on 127.0.0.1:5432 as user "postgres" (or as you).
#   3. A throwaway cluster in ./.pgdata (git-ignored) on 127.0.0.1:${BOARDCAST_PGPORT:-55432}, made with
#      initdb and started with pg_ctl. initdb and pg_ctl refuse to run as root, so as root they run as the
#      "postgres" account.
#   4. Otherwise: what to install.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PGDATA_DIR="$ROOT/.pgdata"
PORT="${BOARDCAST_PGPORT:-55432}"
PROBE="${BOARDCAST_PG_PROBE:-127.0.0.1:5432}"   # where to look for a running server

say() { echo "pg.sh: $*" >&2; }

bindir() {
    local d
    if command -v pg_config >/dev/null 2>&1; then
        d="$(pg_config --bindir 2>/dev/null || true)"
        if [ -x "$d/initdb" ]; then echo "$d"; return 0; fi
    fi
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r) /usr/local/pgsql/bin /opt/homebrew/bin /usr/local/bin /usr/bin; do
        if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then echo "$d"; return 0; fi
    done
    if command -v initdb >/dev/null 2>&1; then dirname "$(command -v initdb)"; return 0; fi
    return 1
}

psql_bin() {
    if command -v psql >/dev/null 2>&1; then command -v psql; return 0; fi
    local d; d="$(bindir)" && [ -x "$d/psql" ] && { echo "$d/psql"; return 0; }
    return 1
}

# Runs a command as an unprivileged user when we are root (initdb and pg_ctl refuse root).
as_pg_user() {
    if [ "$(id -u)" = 0 ]; then
        if ! id postgres >/dev/null 2>&1; then
            say "running as root and there is no 'postgres' account to run initdb/pg_ctl as."
            say "create one (useradd -r postgres) or run as a normal user, or set DATABASE_URL."
            exit 1
        fi
        if command -v runuser >/dev/null 2>&1; then
            runuser -u postgres -- "$@"
        else
            su postgres -s /bin/sh -c "$(printf '%q ' "$@")"
        fi
    else
        "$@"
    fi
}

answers() { # url
    local psql; psql="$(psql_bin)" || return 1
    PGCONNECT_TIMEOUT=3 "$psql" "$1" -Atqc 'select 1' >/dev/null 2>&1
}

throwaway() {
    local bin; bin="$(bindir)" || {
        say "no PostgreSQL found: no DATABASE_URL, nothing answering on 127.0.0.1:5432, and no initdb to start one."
        say "install PostgreSQL, e.g.:"
        say "  Debian/Ubuntu:  sudo apt-get install postgresql"
        say "  Fedora:         sudo dnf install postgresql-server"
        say "  macOS:          brew install postgresql@16"
        say "or point DATABASE_URL at a server you have."
        exit 1
    }
    if [ ! -f "$PGDATA_DIR/PG_VERSION" ]; then
        say "creating a throwaway cluster in $PGDATA_DIR (initdb from $bin)"
        mkdir -p "$PGDATA_DIR"
        [ "$(id -u)" = 0 ] && chown postgres "$PGDATA_DIR"
        chmod 700 "$PGDATA_DIR"
        as_pg_user "$bin/initdb" -D "$PGDATA_DIR" -U postgres --auth=trust -E UTF8 --no-sync >/dev/null
        cat >> "$PGDATA_DIR/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$PGDATA_DIR'
fsync = off
max_connections = 300
CONF
    fi
    if ! as_pg_user "$bin/pg_ctl" -D "$PGDATA_DIR" status >/dev/null 2>&1; then
        say "starting the throwaway cluster on 127.0.0.1:$PORT (stop it with: scripts/pg.sh stop)"
        as_pg_user "$bin/pg_ctl" -D "$PGDATA_DIR" -l "$PGDATA_DIR/server.log" -w -t 30 start >/dev/null
    fi
    echo "postgres://postgres@127.0.0.1:$PORT"
}

server_url() { # prints a URL without a database name
    if [ -n "${DATABASE_URL:-}" ]; then echo "$DATABASE_URL"; return; fi
    local u
    for u in "postgres://postgres@$PROBE" "postgres://${USER:-$(id -un)}@$PROBE"; do
        if answers "$u/postgres"; then echo "$u"; return; fi
    done
    throwaway
}

with_db() { # url name -> url with the database replaced by name
    local url="$1" name="$2" base query=""
    case "$url" in *\?*) query="?${url#*\?}"; url="${url%%\?*}";; esac
    base="${url#*://}"
    case "$base" in */*) url="${url%/*}";; esac
    echo "$url/$name$query"
}

ensure_db() { # server-url name
    local psql; psql="$(psql_bin)" || { say "psql not found; install the PostgreSQL client"; exit 1; }
    local admin; admin="$(with_db "$1" postgres)"
    if ! "$psql" "$admin" -Atqc "select 1 from pg_database where datname = '$2'" | grep -q 1; then
        "$psql" "$admin" -qc "create database \"$2\"" >/dev/null
    fi
}

case "${1:-env}" in
    env)
        name="${2:-}"
        url="$(server_url)"
        if [ -n "$name" ] && [ -z "${DATABASE_URL:-}" ]; then
            ensure_db "$url" "$name"
            url="$(with_db "$url" "$name")"
        elif [ -z "$name" ] && [ -z "${DATABASE_URL:-}" ]; then
            url="$(with_db "$url" postgres)"
        fi
        echo "export DATABASE_URL='$url'"
        ;;
    stop)
        if [ -f "$PGDATA_DIR/PG_VERSION" ]; then
            bin="$(bindir)"; as_pg_user "$bin/pg_ctl" -D "$PGDATA_DIR" -m fast stop
        fi
        ;;
    bindir) bindir ;;
    *) echo "usage: scripts/pg.sh env [DBNAME] | stop | bindir" >&2; exit 2 ;;
esac
