#!/bin/sh
# Static stand-in service (frontend, python-worker): busybox httpd on 127.0.0.1:$PORT.
# The read-only site in /site is copied to /tmp/www (a tmpfs), so a test can break the
# service at run time, e.g. `docker exec flowstate-test_frontend_1 rm /tmp/www/health`
# (health answers 404), and a restart of the container heals it again.
set -eu
: "${PORT:?PORT must be set}"
rm -rf /tmp/www
cp -r /site /tmp/www
echo "$(date -u '+%Y-%m-%dT%H:%M:%SZ') ${SERVICE_NAME:-httpd}: listening on 127.0.0.1:${PORT}"
exec httpd -f -p "127.0.0.1:${PORT}" -h /tmp/www
