#!/bin/sh
# Runs a command against a throwaway PostgreSQL 15 server:
#   scripts/postgres-test.sh cargo test --lib store::
# Starts a private cluster in a temp dir on a free loopback port (as user postgres when run
# as root, since PostgreSQL refuses to run as root), creates database "ticketgate", exports
# TICKETGATE_TEST_POSTGRES_URL, runs the command, and always stops and removes the cluster.
# Exits with the command's status.
set -eu

if [ "$#" -eq 0 ]; then
    echo "usage: $0 COMMAND [ARG...]" >&2
    exit 64
fi

PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
if [ ! -x "$PGBIN/initdb" ]; then
    echo "$0: cannot find $PGBIN/initdb (apt-get install postgresql, or set PGBIN)" >&2
    exit 69
fi

# Run PostgreSQL's tools as postgres when we are root, as ourselves otherwise.
if [ "$(id -u)" -eq 0 ]; then
    as_pg() { runuser -u postgres -- "$@"; }
else
    as_pg() { "$@"; }
fi

DIR=$(mktemp -d "${TMPDIR:-/tmp}/ticketgate-pg.XXXXXX")
chmod 755 "$DIR"
[ "$(id -u)" -eq 0 ] && chown postgres "$DIR"

cleanup() {
    if [ -f "$DIR/data/postmaster.pid" ]; then
        as_pg "$PGBIN/pg_ctl" -D "$DIR/data" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$DIR"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A free port: ask the kernel for one, then let PostgreSQL bind it.
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

as_pg "$PGBIN/initdb" -D "$DIR/data" -U postgres -A trust -E UTF8 --no-locale >"$DIR/initdb.log" 2>&1 || {
    cat "$DIR/initdb.log" >&2
    exit 70
}
as_pg "$PGBIN/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w -t 60 \
    -o "-k $DIR -h 127.0.0.1 -p $PORT -c fsync=off -c max_connections=200" start >/dev/null || {
    cat "$DIR/server.log" >&2
    exit 70
}
as_pg "$PGBIN/createdb" -h 127.0.0.1 -p "$PORT" -U postgres ticketgate

TICKETGATE_TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$PORT/ticketgate"
export TICKETGATE_TEST_POSTGRES_URL
echo "TICKETGATE_TEST_POSTGRES_URL=$TICKETGATE_TEST_POSTGRES_URL" >&2

status=0
"$@" || status=$?
exit "$status"
