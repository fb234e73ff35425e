"""The bot's PostgreSQL role (README, Security): `migrate --grant-to` gives the bot's role exactly the README's
grants, and `check` warns when the bot connects as a superuser or as the owner of its audit log."""

import secrets
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from bot.store.engine import BOT_ROLE_GRANTS
from tests.bot.test_hardening import _readme_grants
from tests.conftest import POSTGRES_ADMIN, bot_env, run

BOT = str(Path(sys.executable).with_name("flowstate-bot"))


class Split:
    """A new database owned by an owner role, and a bot role with no rights of its own: the shipped deploy's split."""

    def __init__(self, postgres_url: str):
        suffix = secrets.token_hex(4)
        self.owner, self.bot = f"fs_owner_{suffix}", f"fs_bot_{suffix}"
        self.superuser_url = postgres_url
        self.database = postgres_url.rsplit("/", 1)[1]
        base = postgres_url.split("://", 1)[1].split("@", 1)[1]
        self.owner_url = f"postgresql://{self.owner}@{base}"
        self.bot_url = f"postgresql://{self.bot}@{base}"

    def create(self) -> None:
        with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as admin:
            admin.execute(f"CREATE ROLE {self.owner} LOGIN")
            admin.execute(f"CREATE ROLE {self.bot} LOGIN")
            admin.execute(f'ALTER DATABASE "{self.database}" OWNER TO {self.owner}')

    def drop(self) -> None:
        with psycopg.connect(self.superuser_url, autocommit=True) as admin:
            admin.execute(f"DROP OWNED BY {self.owner}, {self.bot}")
        with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as admin:
            admin.execute(f'ALTER DATABASE "{self.database}" OWNER TO CURRENT_USER')
            admin.execute(f"DROP ROLE {self.owner}, {self.bot}")


@pytest.fixture
def split(postgres_url):
    made = Split(postgres_url)
    made.create()
    yield made
    made.drop()


def _cli(*argv: str, url: str) -> subprocess.CompletedProcess:
    return subprocess.run([BOT, *argv], env=bot_env(FLOWSTATE_DATABASE_URL=url), capture_output=True, text=True, timeout=120)


def _role_line(url: str) -> str:
    result = _cli("check", url=url)
    assert result.returncode == 0, result.stdout + result.stderr  # a warning, not a failure
    (line,) = [line for line in result.stdout.splitlines() if "database role:" in line]
    return line


def test_the_grants_in_the_readme_are_the_ones_migrate_gives():
    assert _readme_grants("BOT_ROLE") == [statement.format(role="BOT_ROLE") for statement in BOT_ROLE_GRANTS]


def test_the_owner_migrates_and_grants_and_the_bot_role_runs_the_bot_but_cannot_change_the_audit(split, make_runtime):
    refused = _cli("migrate", url=split.bot_url)
    assert refused.returncode == 2 and "permission denied for schema public" in refused.stderr, "the bot role creates nothing"
    migrated = _cli("migrate", "--grant-to", split.bot, url=split.owner_url)
    assert migrated.returncode == 0, migrated.stderr
    assert migrated.stdout.splitlines() == [
        "The bot's database is at the latest schema.", f"{split.bot} has the bot's grants (README, Security).",
    ]
    runtime = make_runtime(database_url=split.bot_url, admins=["UADMIN"])  # migrates (nothing to do) as the bot role
    assert run(runtime, "UADMIN", "/whoami").text.startswith("You are <@UADMIN> with the admin role")
    assert run(runtime, "UADMIN", "/role grant U0NEW operator").text == "<@U0NEW> now has the operator role."
    with psycopg.connect(split.bot_url, autocommit=True) as bot:
        for attack in ("UPDATE audit_log SET outcome = 'x'", "DELETE FROM audit_log", "TRUNCATE audit_log",
                       "DROP TRIGGER audit_log_no_change ON audit_log", "ALTER TABLE audit_log DISABLE TRIGGER ALL",
                       "SET session_replication_role = replica"):
            with pytest.raises(psycopg.Error):
                bot.execute(attack)


def test_a_role_name_that_is_not_a_plain_identifier_is_refused(split):
    result = _cli("migrate", "--grant-to", "bot; DROP TABLE audit_log", url=split.owner_url)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "flowstate-bot: --grant-to: 'bot; DROP TABLE audit_log' is not a role name (lower-case letters, digits and _)"
    )


def test_check_warns_when_the_bot_is_a_superuser_or_owns_its_audit_log_and_not_as_the_granted_role(split):
    assert _cli("migrate", "--grant-to", split.bot, url=split.owner_url).returncode == 0
    superuser = psycopg.conninfo.conninfo_to_dict(split.superuser_url)["user"]
    assert _role_line(split.superuser_url) == (
        f"warn database role: {superuser} is a superuser, so whoever has this URL can switch the audit log's triggers off;"
        " run the bot as a role with only the grants of the README's Security section"
    )
    assert _role_line(split.owner_url) == (
        f"warn database role: {split.owner} owns the audit log, so whoever has this URL can drop its triggers;"
        " run the bot as a role with only the grants of the README's Security section"
    )
    assert _role_line(split.bot_url) == f"ok   database role: {split.bot} may append to the audit log, not change it"
    with psycopg.connect(split.owner_url, autocommit=True) as owner:
        owner.execute(f"GRANT DELETE ON audit_log TO {split.bot}")
    assert _role_line(split.bot_url) == (
        f"warn database role: {split.bot} may update, delete or truncate audit rows;"
        " run the bot as a role with only the grants of the README's Security section"
    )
