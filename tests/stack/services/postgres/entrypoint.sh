#!/bin/sh
# PostgreSQL 15 for the test stack: 127.0.0.1:$PGPORT and the socket in /run/postgresql.
# On the first start (empty data volume) it runs initdb with superuser "flowstate" and trust
# auth, creates database flowstate_ai and runs init.sql (pg_stat_statements, users table).
set -eu
PGBIN=/usr/lib/postgresql/15/bin
PGDATA=${PGDATA:-/var/lib/postgresql/data/pgdata}
PGPORT=${PGPORT:-55432}
SERVER_OPTS="-c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=all -c max_connections=${PG_MAX_CONNECTIONS:-50}"
log() { echo "$(date -u '+%Y-%m-%d %H:%M:%S UTC') [entrypoint] $*"; }
as_pg() { setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"; }

mkdir -p /run/postgresql "$(dirname "$PGDATA")"
chown postgres:postgres /run/postgresql "$(dirname "$PGDATA")"
chmod 2775 /run/postgresql

if [ ! -f "$PGDATA/flowstate-seeded" ]; then
    log "initialising $PGDATA"
    rm -rf "$PGDATA"
    as_pg "$PGBIN/initdb" -D "$PGDATA" -U flowstate --auth=trust --encoding=UTF8 --locale=C.UTF-8 >/dev/null
    cat >"$PGDATA/pg_hba.conf" <<'HBA'
local   all   all                 trust
host    all   all   127.0.0.1/32  trust
host    all   all   ::1/128       trust
HBA
    as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -w -s -l /tmp/pg-init.log \
        -o "-p $PGPORT -k /run/postgresql -c listen_addresses='' $SERVER_OPTS" start
    as_pg "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h /run/postgresql -p "$PGPORT" -U flowstate -d postgres \
        -c 'CREATE DATABASE flowstate_ai'
    as_pg "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h /run/postgresql -p "$PGPORT" -U flowstate -d flowstate_ai \
        </stack/postgres/init.sql  # opened by root: the checkout may not be readable by postgres
    as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -w -s -m fast stop
    as_pg touch "$PGDATA/flowstate-seeded"
    log "database flowstate_ai created and seeded"
fi
log "starting postgres on 127.0.0.1:$PGPORT"
# shellcheck disable=SC2086
exec setpriv --reuid=postgres --regid=postgres --init-groups -- \
    "$PGBIN/postgres" -D "$PGDATA" -p "$PGPORT" -k /run/postgresql -c listen_addresses=127.0.0.1 $SERVER_OPTS
