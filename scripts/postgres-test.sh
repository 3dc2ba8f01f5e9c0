#!/bin/sh
# Runs a command against a throwaway PostgreSQL 15 server:
#   scripts/postgres-test.sh cargo test --lib store::
# Starts a private cluster in a temp dir on a free loopback port (as user postgres when run
# as root, since PostgreSQL refuses to run as root), creates database "ticketgate", exports
# TICKETGATE_TEST_POSTGRES_URL, runs the command, and always stops and removes the cluster.
# The server also speaks TLS (ssl=on) with a certificate for IP 127.0.0.1 only, signed by a
# throwaway CA whose certificate is exported as TICKETGATE_TEST_POSTGRES_CA (for the
# sslmode=verify-full tests). The superuser has a password (TEST_PASSWORD below, in the
# exported URL), so that scripts/test can check that no output of the suite shows it; the
# URL this script prints has it masked. Exits with the command's status.
set -eu

# Distinctive, so that a leak into any output is found by scripts/test (which reads it here).
TEST_PASSWORD='tg-Pg-4b81d2'

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

# TLS: a throwaway CA and a server certificate it signed for 127.0.0.1 (not "localhost":
# verify-full must refuse that name). EC P-256, as scripts/mailstack/up.sh does.
mkdir -p "$DIR/tls"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj "/CN=ticketgate test PostgreSQL CA" -keyout "$DIR/tls/ca-key.pem" -out "$DIR/tls/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=127.0.0.1" \
    -keyout "$DIR/tls/key.pem" -out "$DIR/tls/server.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\n' > "$DIR/tls/server.ext"
openssl x509 -req -in "$DIR/tls/server.csr" -CA "$DIR/tls/ca.pem" -CAkey "$DIR/tls/ca-key.pem" \
    -CAcreateserial -days 2 -extfile "$DIR/tls/server.ext" -out "$DIR/tls/cert.pem" 2>/dev/null
chmod 600 "$DIR/tls/key.pem"
[ "$(id -u)" -eq 0 ] && chown -R postgres "$DIR/tls"

printf '%s\n' "$TEST_PASSWORD" > "$DIR/pwfile"
[ "$(id -u)" -eq 0 ] && chown postgres "$DIR/pwfile"
as_pg "$PGBIN/initdb" -D "$DIR/data" -U postgres -A scram-sha-256 --pwfile="$DIR/pwfile" -E UTF8 --no-locale >"$DIR/initdb.log" 2>&1 || {
    cat "$DIR/initdb.log" >&2
    exit 70
}
as_pg "$PGBIN/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w -t 60 \
    -o "-k $DIR -h 127.0.0.1 -p $PORT -c fsync=off -c max_connections=200 -c ssl=on -c ssl_cert_file=$DIR/tls/cert.pem -c ssl_key_file=$DIR/tls/key.pem" start >/dev/null || {
    cat "$DIR/server.log" >&2
    exit 70
}
as_pg env PGPASSWORD="$TEST_PASSWORD" "$PGBIN/createdb" -h 127.0.0.1 -p "$PORT" -U postgres ticketgate

TICKETGATE_TEST_POSTGRES_URL="postgres://postgres:$TEST_PASSWORD@127.0.0.1:$PORT/ticketgate"
TICKETGATE_TEST_POSTGRES_CA="$DIR/tls/ca.pem"
export TICKETGATE_TEST_POSTGRES_URL TICKETGATE_TEST_POSTGRES_CA
echo "TICKETGATE_TEST_POSTGRES_URL=postgres://postgres:***@127.0.0.1:$PORT/ticketgate" >&2

status=0
"$@" || status=$?
exit "$status"
