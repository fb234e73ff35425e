"""With the bot's database down, the log says so once, then once a minute while it lasts, and once when it is
back: not three tracebacks a second (the runner's claim, sweep and scheduler tick each failing on their own)."""

import re
import subprocess
import sys
import threading
import time

import psycopg

from tests.conftest import POSTGRES_ADMIN, ROOT, SIGNING_SECRET, bot_env


def _connections(database: str, allowed: bool) -> None:
    """Shut the bot out of its database (and back in) without touching the machine's PostgreSQL server."""
    with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS {str(allowed).lower()}')
        if not allowed:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (database,))


def _wait_for(lines: list[str], pattern: str, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [i for i, line in enumerate(list(lines)) if re.search(pattern, line)]
        if found:
            return found[0]
        time.sleep(0.2)
    raise AssertionError(f"no log line matching {pattern!r}:\n" + "".join(lines[-40:]))


def test_a_database_outage_is_logged_once_and_its_end_once(tmp_path, postgres_url, slack_double):
    database = postgres_url.rsplit("/", 1)[1]
    env = bot_env(
        PYTHONPATH=str(ROOT), SLACK_BOT_TOKEN="xoxb-outage-test", SLACK_SIGNING_SECRET=SIGNING_SECRET,
        FLOWSTATE_SLACK_API_URL=slack_double.api_url, FLOWSTATE_HOME=str(tmp_path / "home"),
        FLOWSTATE_DATABASE_URL=postgres_url, FLOWSTATE_ADMINS="U0ADMIN",
    )
    bot = subprocess.Popen([sys.executable, "-m", "bot.adapters.cli", "run", "--http", "--port", "0"], cwd=tmp_path, env=env,
                           stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(bot.stderr.readline, "")), daemon=True)
    reader.start()
    try:
        _wait_for(lines, r"serving Slack requests on", 60)
        time.sleep(3)  # the runner's loop has claimed, swept and ticked a few times
        _connections(database, allowed=False)
        start = _wait_for(lines, r"ERROR .*the bot's database is not answering", 30)
        time.sleep(10)  # a dozen claims, five sweeps and ticks fail meanwhile
        during = lines[start:]
        records = [line for line in during if re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ ", line)]
        assert len(records) == 1, "".join(records)  # that one ERROR (with its traceback), nothing else for ten seconds
        _connections(database, allowed=True)
        back = _wait_for(lines, r"the bot's database answers again after \d+ (s|min)", 30)
        time.sleep(3)
        assert not [line for line in lines[back + 1:] if " ERROR " in line], "".join(lines[back:])
    finally:
        _connections(database, allowed=True)
        bot.terminate()
        bot.wait(timeout=30)


def test_a_long_outage_is_said_again_once_a_minute_and_other_errors_are_logged_whole(caplog):
    import logging

    from sqlalchemy.exc import OperationalError

    from bot.jobs.outage import OutageLog

    now = [0.0]
    outage = OutageLog(logging.getLogger("outage-test"), clock=lambda: now[0])

    def attempt(at: float, error: Exception | None) -> None:
        now[0] = at
        try:
            if error is not None:
                raise error
            outage.ok()
        except Exception:
            outage.failed("claiming jobs")

    down = OperationalError("SELECT 1", {}, Exception('database "bot" is not currently accepting connections'))
    with caplog.at_level(logging.INFO, logger="outage-test"):
        for second in range(150):  # claims every second, sweeps every other: all failing for two and a half minutes
            attempt(second, down)
        attempt(150, None)
        attempt(151, None)
        attempt(152, KeyError("a bug, not an outage"))
        attempt(153, KeyError("a bug, not an outage"))
    said = [(record.levelname, record.getMessage(), bool(record.exc_info)) for record in caplog.records]
    reason = 'database "bot" is not currently accepting connections'
    assert said == [
        ("ERROR", "the bot's database is not answering (claiming jobs failed); said again once a minute while it lasts", True),
        ("ERROR", f"the bot's database is still not answering after 1 min (claiming jobs: {reason})", False),
        ("ERROR", f"the bot's database is still not answering after 2 min (claiming jobs: {reason})", False),
        ("WARNING", "the bot's database answers again after 2 min", False),
        ("ERROR", "claiming jobs failed", True),
        ("ERROR", "claiming jobs failed", True),
    ]
