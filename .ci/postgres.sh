# shellcheck shell=bash
# A throwaway PostgreSQL server for the tests, on 127.0.0.1 only.
#
# Sourced by .ci/run (under `set -euo pipefail`); defines:
#   start_postgres  installs Debian's postgresql if no initdb is found, runs
#                   two fresh clusters in temporary directories on free ports,
#                   creates the database secrets_test in each and exports
#                   SECRETS_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:PORT/secrets_test
#                     (fsync and synchronous_commit off: fast, not durable),
#                   SECRETS_TEST_POSTGRES_DURABLE_URL (fsync, synchronous_commit
#                     and full_page_writes on: for crash and restart tests) and
#                   SECRETS_TEST_POSTGRES_DURABLE_RESTART, a script that
#                     crashes and restarts the durable server (pg_ctl -m immediate).
#   stop_postgres   stops both servers and removes their directories; does
#                   nothing if start_postgres never ran or they are already gone.
#
# By hand:  source .ci/postgres.sh && start_postgres && cargo test -p secrets-host --test all postgres::; stop_postgres

_SECRETS_PG_DIR="${_SECRETS_PG_DIR:-}"
_SECRETS_PG_BIN="${_SECRETS_PG_BIN:-}"
_SECRETS_PG_DURABLE_DIR="${_SECRETS_PG_DURABLE_DIR:-}"

# Finds the directory holding initdb, pg_ctl and friends (one version).
_secrets_pg_find_bin() {
    local d found
    found="$(command -v initdb 2>/dev/null || true)"
    if [ -n "$found" ]; then
        d="$(dirname "$(readlink -f "$found")")"
        if [ -x "$d/pg_ctl" ] && [ -x "$d/createdb" ]; then
            _SECRETS_PG_BIN="$d"
            return 0
        fi
    fi
    found="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
    if [ -n "$found" ] && [ -x "$found/initdb" ] && [ -x "$found/pg_ctl" ]; then
        _SECRETS_PG_BIN="$found"
        return 0
    fi
    return 1
}

# Runs a command as the postgres user when we are root (initdb and the
# server refuse to run as root), else as ourselves.
_secrets_pg_as() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

# A TCP port on 127.0.0.1 that nothing listens on right now.
_secrets_pg_free_port() {
    if command -v python3 >/dev/null 2>&1; then
        python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()' && return 0
    fi
    local port i
    for i in $(seq 1 50); do
        port=$(( 20000 + RANDOM % 40000 ))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return 0
        fi
    done
    return 1
}

start_postgres() {
    if [ -n "$_SECRETS_PG_DIR" ] && [ -d "$_SECRETS_PG_DIR/data" ] &&
        _secrets_pg_as "$_SECRETS_PG_BIN/pg_ctl" -D "$_SECRETS_PG_DIR/data" status >/dev/null 2>&1; then
        echo "postgres: already running (${SECRETS_TEST_POSTGRES_URL:-})"
        return 0
    fi
    if ! _secrets_pg_find_bin; then
        echo "postgres: no initdb found; installing Debian's postgresql"
        if [ "$(id -u)" != 0 ]; then
            echo "postgres: installing needs root; install postgresql or run as root" >&2
            return 1
        fi
        # No default cluster on port 5432: the tests run their own.
        mkdir -p /etc/postgresql-common/createcluster.d
        echo "create_main_cluster = false" >/etc/postgresql-common/createcluster.d/50-secrets-ci.conf
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
        _secrets_pg_find_bin || { echo "postgres: installed, but no initdb under /usr/lib/postgresql/*/bin" >&2; return 1; }
    fi
    echo "postgres: using $("$_SECRETS_PG_BIN/postgres" --version)"
    # The fast cluster: no fsync, asynchronous commit (a server crash may
    # lose acknowledged commits, so no durability test runs on it).
    _secrets_pg_cluster "-c fsync=off -c synchronous_commit=off -c full_page_writes=off" ||
        { _SECRETS_PG_DIR="$_secrets_pg_new_dir"; return 1; }
    _SECRETS_PG_DIR="$_secrets_pg_new_dir"
    export SECRETS_TEST_POSTGRES_URL="$_secrets_pg_new_url"
    echo "postgres: ready at $SECRETS_TEST_POSTGRES_URL (data in $_SECRETS_PG_DIR)"
    # The durable cluster, for the crash and restart tests: every commit
    # flushed to disk before it is acknowledged.
    _secrets_pg_cluster "-c fsync=on -c synchronous_commit=on -c full_page_writes=on" ||
        { _SECRETS_PG_DURABLE_DIR="$_secrets_pg_new_dir"; return 1; }
    _SECRETS_PG_DURABLE_DIR="$_secrets_pg_new_dir"
    export SECRETS_TEST_POSTGRES_DURABLE_URL="$_secrets_pg_new_url"
    # Crashes and restarts the durable server (immediate shutdown: no
    # checkpoint, crash recovery at start), for the tests.
    local restart="$_SECRETS_PG_DURABLE_DIR/crash-restart"
    {
        echo '#!/bin/sh'
        echo 'set -e'
        if [ "$(id -u)" = 0 ]; then
            echo "exec runuser -u postgres -- '$_SECRETS_PG_BIN/pg_ctl' -D '$_SECRETS_PG_DURABLE_DIR/data' -l '$_SECRETS_PG_DURABLE_DIR/server.log' -m immediate -w -t 60 restart"
        else
            echo "exec '$_SECRETS_PG_BIN/pg_ctl' -D '$_SECRETS_PG_DURABLE_DIR/data' -l '$_SECRETS_PG_DURABLE_DIR/server.log' -m immediate -w -t 60 restart"
        fi
    } >"$restart"
    chmod 755 "$restart"
    export SECRETS_TEST_POSTGRES_DURABLE_RESTART="$restart"
    echo "postgres: durable server ready at $SECRETS_TEST_POSTGRES_DURABLE_URL (data in $_SECRETS_PG_DURABLE_DIR)"
}

# Starts a cluster in a new temporary directory on a free port with the
# server settings "$1"; sets _secrets_pg_new_dir and _secrets_pg_new_url.
_secrets_pg_cluster() {
    local bin="$_SECRETS_PG_BIN" settings="$1" dir port attempt started=""
    dir="$(mktemp -d /tmp/secrets-postgres.XXXXXX)"
    _secrets_pg_new_dir="$dir"
    if [ "$(id -u)" = 0 ]; then
        chown postgres: "$dir"
    fi
    chmod 700 "$dir"
    _secrets_pg_as "$bin/initdb" -D "$dir/data" -A trust -U postgres -E UTF8 --no-sync >"$dir/initdb.log" 2>&1 || {
        cat "$dir/initdb.log" >&2
        return 1
    }

    # A port picked now may be taken before the server binds it: retry.
    for attempt in 1 2 3; do
        port="$(_secrets_pg_free_port)"
        if _secrets_pg_as "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
            -o "-c listen_addresses=127.0.0.1 -p $port -k $dir $settings" \
            start >/dev/null; then
            started=1
            break
        fi
        echo "postgres: start on port $port failed (attempt $attempt)" >&2
    done
    if [ -z "$started" ]; then
        tail -n 20 "$dir/server.log" >&2 || true
        return 1
    fi

    local i
    for i in $(seq 1 60); do
        if _secrets_pg_as "$bin/pg_isready" -q -h 127.0.0.1 -p "$port" -U postgres; then
            break
        fi
        if [ "$i" = 60 ]; then
            echo "postgres: not ready after 30 s" >&2
            tail -n 20 "$dir/server.log" >&2 || true
            return 1
        fi
        sleep 0.5
    done
    _secrets_pg_as "$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres secrets_test
    _secrets_pg_new_url="postgres://postgres@127.0.0.1:$port/secrets_test"
}

stop_postgres() {
    local dir
    for dir in "${_SECRETS_PG_DIR:-}" "${_SECRETS_PG_DURABLE_DIR:-}"; do
        if [ -z "$dir" ]; then
            continue
        fi
        if [ -d "$dir/data" ] && [ -n "$_SECRETS_PG_BIN" ]; then
            _secrets_pg_as "$_SECRETS_PG_BIN/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
        fi
        rm -rf "$dir" || true
    done
    _SECRETS_PG_DIR=""
    _SECRETS_PG_DURABLE_DIR=""
    unset SECRETS_TEST_POSTGRES_URL SECRETS_TEST_POSTGRES_DURABLE_URL SECRETS_TEST_POSTGRES_DURABLE_RESTART || true
    echo "postgres: stopped"
}
