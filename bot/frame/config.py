"""Settings (environment and .env) and the operated stack's description (flowstate.toml)."""

from __future__ import annotations

import os
import pwd
import re
import tomllib
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from bot.frame.roles import Role
from bot.frame.durations import duration_field
from bot.store.errors import ConfigError as ConfigError  # a setting is wrong: raised by the store's settings too

DEFAULT_HOME = Path(".flowstate-bot")


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


# Settings renamed: the new environment name first, then the old one, still read.
_ALIASES = {
    "runner_threads": ("FLOWSTATE_RUNNER_THREADS", "FLOWSTATE_WORKERS"),
    "runner_processes": ("FLOWSTATE_RUNNER_PROCESSES", "FLOWSTATE_WORKER_PROCESSES"),
}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="FLOWSTATE_", env_file=".env", extra="ignore", populate_by_name=True
    )

    home: Path = DEFAULT_HOME
    database_url: str = ""
    stack_file: Path = Path("flowstate.toml")
    admins: Annotated[list[str], NoDecode] = []
    default_role: Role | None = None
    # "S0123=operator,S0456=approver": members of a Slack user group get that role.
    role_groups: Annotated[dict[str, Role], NoDecode] = {}
    role_group_cache_seconds: float = Field(60.0, ge=0, le=24 * 3600, allow_inf_nan=False)
    slack_api_url: str = "https://slack.com/api/"
    timezone: str = "UTC"
    docker_url: str | None = None  # default: DOCKER_HOST or the local socket
    # Threads per runner process that run commands after their ack (most command work waits on I/O). "Workers" was
    # their first name, still accepted; it clashed with the operated stack's AI worker in logs and settings.
    runner_threads: int = Field(8, ge=1, le=64, validation_alias=AliasChoices(*_ALIASES["runner_threads"]))
    # Runner processes: one keeps command work off the acks' interpreter lock; more isolate crashes.
    runner_processes: int = Field(1, ge=1, le=8, validation_alias=AliasChoices(*_ALIASES["runner_processes"]))
    approval_minutes: float = Field(15.0, gt=0, le=24 * 60)
    approver_group: str | None = None  # a Slack user group id (S...) mentioned on every request
    break_glass: bool = True  # admins may run an approval command at once with --break-glass "REASON"
    # A runner renews its heartbeat (one for all its jobs) every sixth of this; one silent this long is gone.
    job_lease_seconds: float = Field(30.0, ge=5, le=3600)
    # Reacting with this emoji (name without colons) adds a message to the open incident's timeline.
    incident_emoji: str = "pushpin"
    backup_dir: Path | None = None  # default: $FLOWSTATE_HOME/backups
    backup_copy_dir: Path | None = None  # a second location (another disk, a mounted volume) for a copy of each backup
    backup_keep: int = Field(7, ge=1, le=1000)  # retention keeps the newest N backups...
    backup_keep_days: float = Field(14.0, ge=0, le=3650)  # ...and every backup younger than D days
    # The application services /restore stops while it replaces their database (the operator guide's three).
    restore_services: Annotated[list[str], NoDecode] = ["backend", "frontend", "python-worker"]
    # Scheduled duties (bot/duties): posted to this channel; without it no duty runs.
    ops_channel: str | None = None
    daily_report_at: str = "08:30"  # local time (FLOWSTATE_TIMEZONE) of /health and /stats, unasked; or off
    backup_at: str = "02:00"  # the nightly backup, with retention; or off
    drill_at: str = "sun 04:00"  # the weekly restore drill: /backup verify of the newest backup; or off
    watch_minutes: int = Field(5, ge=0, le=1440)  # how often the watch checks thresholds and health; 0 turns it off
    watch_checks: int = Field(3, ge=1, le=100)  # consecutive bad checks before an alert (and good ones before recovery)
    # The key metrics are sampled each minute for /stats' charts (bot/stack/trends.py) and kept this many days.
    sample_days: float = Field(14.0, gt=0, le=3650)
    duty_grace_minutes: float = Field(60.0, ge=0, le=24 * 60)  # a slot missed while the bot was down still runs this late
    # Test-only: a file holding an ISO 8601 instant that the scheduler takes for "now" (see bot/duties/clock.py).
    clock_file: Path | None = None
    # Test-only: a step of a change (restore:after_stop, ...) at which this process SIGKILLs itself (see bot/frame/faults.py).
    fault_at: str | None = None
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # HTTP mode: a request body over this is refused before it is read (Slack's are a few kilobytes).
    max_body_bytes: int = Field(65536, ge=4096, le=10 * 1024 * 1024)
    # Prometheus /metrics on a port of its own (Socket Mode has no HTTP server; HTTP mode also serves it on
    # its Slack port). Unset: no port of its own.
    metrics_port: int | None = Field(None, ge=0, le=65535)
    metrics_host: str = "127.0.0.1"

    slack_bot_token: SecretStr | None = Field(None, validation_alias=AliasChoices("SLACK_BOT_TOKEN"))
    slack_signing_secret: SecretStr | None = Field(
        None, validation_alias=AliasChoices("SLACK_SIGNING_SECRET")
    )
    slack_app_token: SecretStr | None = Field(None, validation_alias=AliasChoices("SLACK_APP_TOKEN"))
    # Each secret may come from a file instead (NAME_FILE: a Docker secret, a systemd credential, a 0600 file), so it is
    # never in the environment the bot was started with, which /proc shows for as long as the process lives.
    slack_bot_token_file: Path | None = Field(None, validation_alias=AliasChoices("SLACK_BOT_TOKEN_FILE"))
    slack_signing_secret_file: Path | None = Field(None, validation_alias=AliasChoices("SLACK_SIGNING_SECRET_FILE"))
    slack_app_token_file: Path | None = Field(None, validation_alias=AliasChoices("SLACK_APP_TOKEN_FILE"))
    database_url_file: Path | None = None

    @field_validator("restore_services", mode="before")
    @classmethod
    def _lists(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("admins", mode="before")
    @classmethod
    def _admins(cls, value: object) -> object:
        admins = _split_csv(value)
        for user in admins if isinstance(admins, list) else []:
            if not re.fullmatch(r"[UW][A-Z0-9]{1,20}", str(user)):
                raise ValueError(f"{str(user)[:40]!r} is not a Slack user id (U... or W..., as in the user's profile)")
        return admins

    @field_validator("default_role", mode="before")
    @classmethod
    def _default_role(cls, value: object) -> object:
        if isinstance(value, str):
            if value.strip().lower() in ("", "none"):
                return None
            return Role.parse(value)
        return value

    @field_validator("role_groups", mode="before")
    @classmethod
    def _role_groups(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        groups: dict[str, Role] = {}
        for pair in _split_csv(value):
            group, sep, role = pair.partition("=")
            if not sep or not group.strip():
                raise ValueError(f"expected GROUP_ID=ROLE pairs separated by commas, got {pair!r}")
            groups[group.strip()] = Role.parse(role)
        return groups

    @field_validator("incident_emoji")
    @classmethod
    def _emoji(cls, value: str) -> str:
        name = value.strip().strip(":")
        if not re.fullmatch(r"[a-z0-9_+'-]{1,100}", name):
            raise ValueError(f"{value!r} is not an emoji name; give it as Slack names it, such as pushpin")
        return name

    @field_validator("ops_channel")
    @classmethod
    def _channel(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[CG][A-Z0-9]{2,20}", value.strip()):
            raise ValueError(f"{value[:40]!r} is not a channel id; use the C... id from the channel's details")
        return value.strip() if value else None

    @field_validator("daily_report_at", "backup_at")
    @classmethod
    def _daily(cls, value: str) -> str:
        from bot.duties.slots import parse_daily

        parse_daily(value)
        return value.strip().lower()

    @field_validator("drill_at")
    @classmethod
    def _weekly(cls, value: str) -> str:
        from bot.duties.slots import parse_weekly

        parse_weekly(value)
        return value.strip().lower()

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}; use an IANA name such as Europe/Berlin") from None
        return value

    @model_validator(mode="after")
    def _secrets_from_files(self) -> "Settings":
        for name in SECRET_SETTINGS:
            path = getattr(self, f"{name}_file")
            if path is None:
                continue
            key = _env_name(name)
            if name in self.model_fields_set:
                raise ValueError(f"{key}_FILE: set either {key} or {key}_FILE, not both")
            try:
                value = path.read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as error:
                raise ValueError(f"{key}_FILE: cannot read {path} ({getattr(error, 'strerror', None) or error})") from None
            if not value:
                raise ValueError(f"{key}_FILE: {path} is empty")
            setattr(self, name, value if name == "database_url" else SecretStr(value))
        return self

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def backup_directory(self) -> Path:
        return self.backup_dir or self.home / "backups"

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'bot.db'}"


_ENV_NAMES = {
    "slack_bot_token": "SLACK_BOT_TOKEN",
    "slack_signing_secret": "SLACK_SIGNING_SECRET",
    "slack_app_token": "SLACK_APP_TOKEN",
    "slack_bot_token_file": "SLACK_BOT_TOKEN_FILE",
    "slack_signing_secret_file": "SLACK_SIGNING_SECRET_FILE",
    "slack_app_token_file": "SLACK_APP_TOKEN_FILE",
}
# The settings that hold a secret (each may also come from a file, NAME_FILE).
SECRET_SETTINGS = ("slack_bot_token", "slack_signing_secret", "slack_app_token", "database_url")


def _env_name(field: str, env_prefix: str = "FLOWSTATE_") -> str:
    for names in _ALIASES.values():  # a renamed setting: the name the user set
        if field in names:
            return next((name for name in names if name in os.environ), names[0])
    return _ENV_NAMES.get(field) or (env_prefix + field.upper() if env_prefix else field)


def describe_validation_error(error: ValidationError, env_prefix: str = "FLOWSTATE_") -> str:
    """One line per wrong key: the name the user set and what is wrong with it (a check of several keys names its own)."""
    lines = []
    for item in error.errors():
        message = item["msg"].removeprefix("Value error, ")
        lines.append(f"{_env_name(str(item['loc'][0]), env_prefix)}: {message}" if item["loc"] else message)
    return "; ".join(lines)


def forget_secret_environment() -> None:
    """Once the settings are read, their secrets leave this process's environment, so that no process it starts
    inherits them (its runners get the settings themselves). The environment the kernel shows in /proc/PID/environ
    was fixed when the bot started; making the process non-dumpable (bot/frame/undumpable.py) is what keeps that from
    another process of the same user."""
    for name in SECRET_SETTINGS:
        os.environ.pop(_env_name(name), None)


def load_settings(**overrides: object) -> Settings:
    try:
        return Settings(**overrides)
    except ValidationError as error:
        raise ConfigError(describe_validation_error(error)) from None


# ---- the operated stack -------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _runbook_url(url: str) -> str:
    # Shown as a Slack link <URL|runbook>: a character that ends the link would let the stack file write markup.
    if not re.fullmatch(r"https?://[^\s<>|`]+", url):
        raise ValueError("a runbook must be an http:// or https:// URL without spaces, <, >, | or backticks")
    return url


RunbookUrl = Annotated[str, AfterValidator(_runbook_url)]


class _Probe(_Strict):
    """What every probe has: its name, how long it may take, the Compose service it checks and its runbook."""

    name: str
    timeout: float = Field(2.0, gt=0, le=60)
    compose_service: str | None = None
    runbook: RunbookUrl | None = None  # shown as a link on the probe's failing line


class HttpProbe(_Probe):
    kind: Literal["http"]
    url: str
    expect_status: int = 200


class TcpProbe(_Probe):
    kind: Literal["tcp"]
    host: str
    port: int = Field(ge=1, le=65535)


class PostgresProbe(_Probe):
    kind: Literal["postgres"]
    dsn: str


class RedisProbe(_Probe):
    kind: Literal["redis"]
    url: str


Probe = Annotated[HttpProbe | TcpProbe | PostgresProbe | RedisProbe, Field(discriminator="kind")]


_STACK_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}")


class StackSection(_Strict):
    # Where the services run: "compose" (a Compose project on one engine, compose_project) or "swarm" (the Swarm stack
    # `namespace`, its services labelled com.docker.stack.namespace, on the swarm engine docker_host reaches).
    runtime: Literal["compose", "swarm"] = "compose"
    compose_project: str | None = None  # without it (or a namespace on swarm), /health checks no containers
    compose_file: str | None = None
    namespace: str | None = None  # the Swarm stack's name (`docker stack deploy ... NAME`)
    docker_host: str | None = None  # the engine's address, e.g. unix:///run/docker.sock; default: the bot's DOCKER_HOST
    app_services: list[str] = []
    check_timeout: float = Field(5.0, gt=0, le=60)
    healthy_timeout: float = Field(120.0, gt=0, le=3600)  # how long /restart waits for a service to be healthy
    # A change's health gate passes only when every check has held this long without a break.
    stable_seconds: float = Field(30.0, ge=0, le=3600)

    @model_validator(mode="after")
    def _runtime(self) -> "StackSection":
        if self.runtime == "swarm" and not self.namespace:
            raise ValueError('runtime "swarm" needs the Swarm stack\'s namespace (namespace = "NAME")')
        if self.runtime == "compose" and self.namespace:
            raise ValueError('namespace is the Swarm stack\'s; with runtime "compose", name the project in compose_project')
        if self.namespace is not None and not _STACK_NAME.fullmatch(self.namespace):
            raise ValueError(f"namespace {self.namespace[:64]!r} is not a Swarm stack name (letters, digits, _ . -)")
        return self

    @property
    def project(self) -> str | None:
        """The operated stack's name: the Compose project, or the Swarm stack's namespace."""
        return self.namespace if self.runtime == "swarm" else self.compose_project


class DatabaseSection(_Strict):
    dsn: str
    compose_service: str = "postgres"
    user: str = "flowstate"
    name: str = "flowstate_ai"
    user_roles: list[str] = Field(["user", "admin"], min_length=1)  # the roles /user-add and /user-role may set

    @field_validator("user_roles")
    @classmethod
    def _lower_case_roles(cls, roles: list[str]) -> list[str]:
        # Roles typed in commands are lower-cased, so a role spelt otherwise here could never be set.
        wrong = [role for role in roles if not role or role != role.strip().lower()]
        if wrong:
            raise ValueError(f"user roles must be lower case, without surrounding spaces; wrong: {', '.join(map(repr, wrong))}")
        return roles


class RedisSection(_Strict):
    url: str
    compose_service: str = "redis"


class QueueSection(_Strict):
    keys: list[str]
    type: Literal["list", "zset", "stream"] = "list"


class ApiErrorsSection(_Strict):
    compose_service: str = "backend"


class EdgeSection(_Strict):
    """The reverse proxy in front of the app: its access log is where users' errors are counted."""

    compose_service: str = "nginx"
    format: Literal["combined"] = "combined"  # the status is the field after the quoted request
    window_minutes: float = Field(5.0, gt=0, le=60)
    warning_percent: float = Field(5.0, gt=0, le=100)
    critical_percent: float = Field(25.0, gt=0, le=100)
    min_requests: int = Field(20, ge=1)  # fewer requests than this in the window say nothing about a rate
    runbook: RunbookUrl | None = None

    @model_validator(mode="after")
    def _ordered(self) -> "EdgeSection":
        if self.critical_percent < self.warning_percent:
            raise ValueError("critical_percent must not be below warning_percent")
        return self


class CriticalLevels(_Strict):
    """Where a crossed threshold turns from a warning (orange) to critical (red)."""

    error_rate_percent: float = 25.0
    cpu_percent: float = 95.0
    memory_percent: float = 95.0
    connections_percent: float = 95.0
    long_query_seconds: float = 300.0
    queue_length: int = 5000


class Thresholds(_Strict):
    # The values here are the warning levels (the keys are older than critical levels, and keep their meaning).
    error_rate_percent: float = 5.0
    cpu_percent: float = 80.0
    memory_percent: float = 80.0
    connections_percent: float = 80.0
    long_query_seconds: float = 30.0
    queue_length: int = 500
    critical: CriticalLevels = CriticalLevels()
    runbooks: dict[str, RunbookUrl] = {}  # threshold key (as above) -> a URL shown with its crossed line

    @model_validator(mode="after")
    def _known_runbooks(self) -> "Thresholds":
        unknown = sorted(set(self.runbooks) - set(CriticalLevels.model_fields))
        if unknown:
            raise ValueError(f"runbooks for unknown thresholds: {', '.join(unknown)}; known: {', '.join(CriticalLevels.model_fields)}")
        return self

    def severity(self, key: str, value: float) -> str:
        """ok, warn or fail for a measured value of a threshold, by its two levels."""
        if value > getattr(self.critical, key):
            return "fail"
        return "warn" if value > getattr(self, key) else "ok"


class DeploySection(_Strict):
    """The operator guide's deploy script: run in the application's Git checkout, with no shell."""

    workdir: Path  # the repository's working directory (the checkout /rollback moves)
    command: list[str] = Field(["./scripts/deploy-production.sh"], min_length=1)  # an argument list, never a shell line
    timeout: float = Field(900.0, gt=0, le=6 * 3600)  # seconds; then the script's whole process group is killed
    env: dict[str, str] = {}  # added to the script's minimal environment (PATH, HOME, LANG)
    # Paths whose change between two commits means the database schema moved: a rollback warns that it does not roll back.
    migration_paths: list[str] = ["backend/migrations/"]
    # The user the script runs as (with that user's groups and home) when the bot runs as root: a script of another
    # user cannot open the bot's files, its secret files included. Unset: the bot's own user.
    run_as: str | None = None

    @field_validator("workdir")
    @classmethod
    def _absolute(cls, workdir: Path) -> Path:
        if not workdir.is_absolute():
            raise ValueError(f"{workdir} must be an absolute path (the bot may run from any directory)")
        return workdir

    @field_validator("run_as")
    @classmethod
    def _known_user(cls, name: str | None) -> str | None:
        if name is not None:
            try:
                pwd.getpwnam(name)
            except KeyError:
                raise ValueError(f"there is no user {name!r} on this machine") from None
        return name

    @field_validator("command")
    @classmethod
    def _no_empty_words(cls, command: list[str]) -> list[str]:
        if any(not word or "\x00" in word for word in command):
            raise ValueError("every word of the command must be a non-empty string")
        return command


SlackGroupId = Annotated[str, Field(pattern=r"^S[A-Z0-9]{2,20}$", description="a Slack user group id (S…)")]


class ApprovalPolicy(_Strict):
    """Who must approve one command, or one use of it, before it runs: the first policy in the file that matches a
    request decides; a request no policy matches keeps the command's own rule (one approver, where it asks for one)."""

    command: str = Field(pattern=r"^[a-z][a-z0-9-]{0,63}$")  # without the slash: "restart"
    # Argument name -> values: the policy applies when every named argument has one of these values (a list
    # argument, such as /restart's services: when any of its items has one). Empty: every use of the command.
    when: dict[str, list[str]] = {}
    approvals: int = Field(1, ge=0, le=5)  # distinct approvers; the requester never counts; 0: it runs at once
    approver_role: Role = Role.approver  # the least role an approver needs ("operator" lets operators approve)
    groups: list[SlackGroupId] = []  # at least one approver must be a member of each of these Slack user groups
    reason: bool = False  # the request must say why (a reason or a ticket), with --reason "TEXT"
    # Follow-up while nobody decides (each at most once per request): the approvers are reminded by DM, then
    # `escalate_to`'s members are asked. Unset here: the [approvals] section's.
    remind_after: duration_field("24h") | None = None
    escalate_after: duration_field("24h") | None = None
    escalate_to: SlackGroupId | None = None

    @field_validator("approver_role", mode="before")
    @classmethod
    def _role(cls, value: object) -> Role:
        return Role.parse(value)


class ApprovalsSection(_Strict):
    """[approvals] in the stack file: the follow-up of every request, and the policies (`[[approvals.policy]]`)."""

    remind_after: duration_field("24h") | None = None
    escalate_after: duration_field("24h") | None = None
    escalate_to: SlackGroupId | None = None
    policy: list[ApprovalPolicy] = []


_FREEZE_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _freeze_time(value: str, with_day: bool) -> str:
    """HH:MM, or (for `to`) DAY HH:MM; the error names what was wrong."""
    from bot.duties.slots import parse_time

    day, _, at = value.strip().lower().rpartition(" ")
    hint = "HH:MM such as 16:00" + (", or DAY HH:MM such as mon 08:00" if with_day else "")
    try:
        if day and (not with_day or _freeze_day(day) is None):
            raise ValueError
        parse_time(at)
    except ValueError:
        raise ValueError(f"{value[:30]!r} is not a time; use {hint}") from None
    return f"{_freeze_day(day)} {at}" if day else at


def _freeze_day(day: str) -> str | None:
    """mon … sun from a day's short or full name."""
    day = day.strip().lower()
    full = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
    return day[:3] if day in _FREEZE_DAYS or day in full else None


class FreezeWindow(_Strict):
    """A weekly change freeze: on each of `days`, from `from` (local time, FLOWSTATE_TIMEZONE) until `to`: HH:MM (that
    day, or the next when it is not later) or DAY HH:MM (the next such day: "fri" from 16:00 to "mon 08:00")."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    days: list[str] = Field(min_length=1)
    start: str = Field(alias="from")
    end: str = Field(alias="to")
    reason: str = Field("the weekly change freeze", min_length=1, max_length=300)

    @field_validator("days")
    @classmethod
    def _days(cls, days: list[str]) -> list[str]:
        wrong = [day for day in days if _freeze_day(day) is None]
        if wrong:
            raise ValueError(f"{wrong[0][:20]!r} is not a day; use mon, tue, wed, thu, fri, sat or sun")
        return [_freeze_day(day) for day in days]

    @field_validator("start")
    @classmethod
    def _start(cls, value: str) -> str:
        return _freeze_time(value, with_day=False)

    @field_validator("end")
    @classmethod
    def _end(cls, value: str) -> str:
        return _freeze_time(value, with_day=True)


class FreezeSection(_Strict):
    """[freeze] in the stack file: recurring change freezes (`[[freeze.window]]`); /freeze adds one-off ones."""

    window: list[FreezeWindow] = []


class PitrSection(_Strict):
    """Continuous archiving of the app's PostgreSQL (point-in-time recovery): where the WAL archive is.

    The server's archive_command copies each finished WAL segment into server_archive_dir (a directory the
    PostgreSQL server sees, e.g. its container's mount); the bot reads the same directory at archive_dir."""

    archive_dir: Path  # the WAL archive as the bot's machine sees it
    server_archive_dir: str = "/archive"  # the same directory as the PostgreSQL server sees it
    archive_timeout_seconds: int = Field(60, ge=1, le=3600)  # bounds how old the newest archived change can be

    @field_validator("server_archive_dir")
    @classmethod
    def _absolute_plain_path(cls, value: str) -> str:
        # It is written into archive_command and restore_command: an absolute path of plain characters only.
        if not re.fullmatch(r"/[A-Za-z0-9_./-]*", value) or ".." in value.split("/"):
            raise ValueError("must be an absolute path of letters, digits, '_', '-', '.' and '/'")
        return value.rstrip("/") or "/"


class StackConfig(_Strict):
    stack: StackSection = StackSection()
    deploy: DeploySection | None = None
    database: DatabaseSection | None = None
    pitr: PitrSection | None = None
    redis: RedisSection | None = None
    queue: QueueSection | None = None
    api_errors: ApiErrorsSection = ApiErrorsSection()
    edge: EdgeSection | None = None
    thresholds: Thresholds = Thresholds()
    approvals: ApprovalsSection = ApprovalsSection()
    probes: list[Probe] = []
    freeze: FreezeSection = FreezeSection()
    # Where it was read from: the bot's own note, not a key of the file (a file cannot set it).
    _source: str | None = PrivateAttr(None)

    @property
    def source(self) -> str | None:
        return self._source

    @field_validator("probes")
    @classmethod
    def _unique_names(cls, probes: list) -> list:
        names = [p.name for p in probes]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"probe names must be unique; repeated: {', '.join(duplicates)}")
        return probes


# What a new user whose stack file describes nothing should do next.
STACK_FILE_HINT = (
    "write one (tests/stack/flowstate.toml is a complete example) or run `make demo` to try the bot on a live test stack."
)


def missing_section(stack: StackConfig, section: str, default_file: Path) -> str | None:
    """Why a command cannot run without this section, in words that say where an example is; None if it is there."""
    if getattr(stack, section) is not None:
        return None
    where = "Deploys and rollbacks" if section == "deploy" else "The stack file"
    return (
        f"the stack file ({stack.source or default_file}) has no [{section}] section; "
        f"README.md shows one under \"{where}\"."
    )


def load_stack(path: Path, *, required: bool) -> StackConfig:
    """Read the stack file; a missing optional file means an empty stack (nothing to probe)."""
    if not path.exists():
        if required:
            raise ConfigError(f"stack file {path} does not exist")
        return StackConfig()
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"stack file {path} cannot be read: {error}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"stack file {path} is not valid TOML: {error}") from None
    try:
        stack = StackConfig.model_validate(raw)
    except ValidationError as error:
        problems = []
        for item in error.errors():
            key = ".".join(str(part) for part in item["loc"])
            problems.append(f"{key}: {item['msg'].removeprefix('Value error, ')}")
        raise ConfigError(f"stack file {path}: " + "; ".join(problems)) from None
    stack._source = str(path)
    return stack
