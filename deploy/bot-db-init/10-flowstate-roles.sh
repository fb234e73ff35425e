#!/bin/sh
# The roles of the bot's store, made once, when bot-db's data directory is new (the postgres image runs
# /docker-entrypoint-initdb.d/* then, as user postgres, the server on its socket only). README, Security:
#   flowstate_owner  owns the database flowstate_bot and every table in it; the migrate service runs as it
#                    (`flowstate-bot migrate --grant-to flowstate_bot`) and gives the bot its grants;
#   flowstate_bot    the bot: no superuser, owns nothing, may append to the audit log but never change it.
# The passwords come from bot-db.env, through psql's \getenv: never on a command line or in a log.
set -eu
: "${FLOWSTATE_OWNER_PASSWORD:?set FLOWSTATE_OWNER_PASSWORD in deploy/bot-db.env}"
: "${FLOWSTATE_BOT_PASSWORD:?set FLOWSTATE_BOT_PASSWORD in deploy/bot-db.env}"
psql -v ON_ERROR_STOP=1 -X -q --username "$POSTGRES_USER" --dbname postgres <<'SQL'
\getenv owner_password FLOWSTATE_OWNER_PASSWORD
\getenv bot_password FLOWSTATE_BOT_PASSWORD
CREATE ROLE flowstate_owner LOGIN PASSWORD :'owner_password';
CREATE ROLE flowstate_bot LOGIN PASSWORD :'bot_password';
-- The owner owns the database, so its schema public (pg_database_owner's since PostgreSQL 15): only it creates tables.
CREATE DATABASE flowstate_bot OWNER flowstate_owner;
SQL
