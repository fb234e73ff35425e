#!/bin/sh
# bot-db in the tests, on the test stack's Debian PostgreSQL 15 (no registry here gives postgres:15): what the
# official image's entrypoint does on a first start. initdb with superuser POSTGRES_USER, whose password
# (POSTGRES_PASSWORD) TCP connections need; the server on its socket only while every
# /docker-entrypoint-initdb.d/*.sh runs once as user postgres; then the command, as postgres.
set -eu
PGDATA=/var/lib/postgresql/data/pgdata
as_pg() { setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"; }

mkdir -p /run/postgresql "$PGDATA"
chown postgres:postgres /run/postgresql "$PGDATA"
chmod 2775 /run/postgresql
chmod 0700 "$PGDATA"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    printf '%s\n' "$POSTGRES_PASSWORD" >/run/postgresql/pwfile
    chown postgres /run/postgresql/pwfile
    as_pg initdb -D "$PGDATA" -U "$POSTGRES_USER" --pwfile=/run/postgresql/pwfile \
        --auth-local=trust --auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 >/dev/null
    rm /run/postgresql/pwfile
    as_pg pg_ctl -D "$PGDATA" -w -s -l /tmp/pg-init.log -o "-c listen_addresses=''" start
    for script in /docker-entrypoint-initdb.d/*.sh; do
        echo "bot-db-entrypoint: running $script"
        as_pg "$script"
    done
    as_pg pg_ctl -D "$PGDATA" -w -s -m fast stop
fi
exec setpriv --reuid=postgres --regid=postgres --init-groups -- "$@" -D "$PGDATA"
