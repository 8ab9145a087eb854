#!/usr/bin/env bash
# Start a throwaway PostgreSQL server for the tests and print the line that points them at it:
#
#     eval "$(bash scripts/start-postgres.sh)"     # then: pytest
#
# It uses the installed server binaries, installing Debian's `postgresql` package when they are
# missing and this user may (root, or sudo), makes a cluster in
# $PGDATA_DIR (default /tmp/openseedance-pg) on first run, listens on 127.0.0.1:$PGPORT (default
# 5433, beside a system server on 5432) with password-less local access, and prints
# `export OPENSEEDANCE_TEST_PG=postgresql://postgres@127.0.0.1:PORT/postgres`. Run again, it finds
# the server already up. As root it runs the server as the `postgres` user (the server refuses root).
# `bash scripts/start-postgres.sh stop` stops it.
set -euo pipefail
dir=${PGDATA_DIR:-/tmp/openseedance-pg}
port=${PGPORT:-5433}
find_bin() {
    bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
    if [ -z "$bin" ] && command -v pg_ctl >/dev/null; then bin=$(dirname "$(command -v pg_ctl)"); fi
}
find_bin
if [ -z "$bin" ] && [ "${1:-}" != stop ]; then
    if [ "$(id -u)" -eq 0 ]; then sudo=""; elif command -v sudo >/dev/null; then sudo="sudo"; else
        echo "no PostgreSQL server binaries found, and this user cannot install them: apt-get install -y postgresql" >&2
        exit 1
    fi
    echo "installing Debian's postgresql package" >&2
    $sudo apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq postgresql >/dev/null
    find_bin
fi
if [ -z "$bin" ] || [ ! -x "$bin/pg_ctl" ]; then
    echo "no PostgreSQL server binaries found: install them (Debian: apt-get install -y postgresql)" >&2
    exit 1
fi
as_owner() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
if [ "${1:-}" = stop ]; then
    as_owner "$bin/pg_ctl" -D "$dir" -m fast stop >&2
    exit 0
fi
if [ ! -f "$dir/PG_VERSION" ]; then
    mkdir -p "$dir"
    if [ "$(id -u)" = 0 ]; then chown postgres: "$dir"; fi
    as_owner "$bin/initdb" -D "$dir" -U postgres --auth=trust -E UTF8 >/dev/null
fi
if ! as_owner "$bin/pg_ctl" -D "$dir" status >/dev/null 2>&1; then
    as_owner "$bin/pg_ctl" -D "$dir" -l "$dir/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$dir -c max_connections=200" \
        start >&2
fi
echo "export OPENSEEDANCE_TEST_PG=postgresql://postgres@127.0.0.1:$port/postgres"
