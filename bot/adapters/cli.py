"""flowstate-bot: run (Slack), console, migrate, manifest, check, postmortem."""

from __future__ import annotations

import argparse
import ipaddress
import re
import logging
import signal
import sys
from pathlib import Path

from slack_sdk.errors import SlackApiError
from sqlalchemy import text
from sqlalchemy.engine import make_url

from bot.frame.config import ConfigError, Settings, StackConfig, forget_secret_environment, load_settings, load_stack
from bot.adapters.console import CONSOLE_LOG, run_console
from bot.deploy.service import record_at_start
from bot.adapters.slack.manifest import render_manifest
from bot.stack.probes import run_probes
from bot.frame.redact import configure_logging
from bot.runtime import Runtime, load_commands
from bot.store.engine import Store, hold_single_bot, normalize_url
from bot.frame.undumpable import make_undumpable

log = logging.getLogger("flowstate")

CONSOLE_USER = "console"
ROLE_ADVICE = "run the bot as a role with only the grants of the README's Security section"


def _stack(settings: Settings, override: str | None) -> StackConfig:
    if override:
        return load_stack(Path(override), required=True)
    return load_stack(settings.stack_file, required="stack_file" in settings.model_fields_set)


def cmd_console(settings: Settings, args: argparse.Namespace) -> int:
    stack = _stack(settings, args.stack)
    # Whoever runs the console can already read the bot's files; without --as they act as its local admin
    # (an admin in every console, so a request it made still runs when another console user approves it).
    local_admins = frozenset({CONSOLE_USER})
    # The terminal shows what a person reads; the bot's log lines go to a file beside its store. A home that cannot
    # be made is said in one line when the store is opened just below.
    try:
        settings.home.mkdir(mode=0o700, parents=True, exist_ok=True)
        configure_logging(settings.log_level, to_file=settings.home / CONSOLE_LOG)
    except OSError:
        pass
    runtime = Runtime.build(settings, stack, local_admins=local_admins)
    record_at_start(runtime.releases)
    try:
        return run_console(runtime, args.as_user or CONSOLE_USER, args.channel)
    finally:
        runtime.close()


def _listen_address(host: str) -> None:
    """An address, not a name: a name would be looked up in DNS (off this machine) before the bot could listen."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ConfigError(f"--host: {host[:80]!r} is not an IP address; give one of this machine's, such as 127.0.0.1") from None


def cmd_run(settings: Settings, args: argparse.Namespace) -> int:
    from bot.adapters import metrics

    _listen_address(args.host)
    single = hold_single_bot(settings.effective_database_url)  # noqa: F841 (held until this process ends)
    # Before anything counts: this process and its runner processes share one metrics directory.
    metrics_dir = metrics.use_process_directory(settings.home / "metrics")
    try:
        return _run(settings, args)
    finally:
        metrics.remove_process_directory(metrics_dir)


def _metrics_port(settings: Settings, runtime: Runtime):
    from prometheus_client import start_http_server

    from bot.adapters.metrics import registry

    try:
        server, _thread = start_http_server(settings.metrics_port, settings.metrics_host, registry(runtime.store))
    except OSError as error:
        raise ConfigError(
            f"FLOWSTATE_METRICS_PORT: cannot listen on {settings.metrics_host}:{settings.metrics_port} ({error.strerror or error})"
        ) from None
    log.info("serving metrics on http://%s:%s/metrics", settings.metrics_host, server.server_port)
    return server


def _run(settings: Settings, args: argparse.Namespace) -> int:
    from bot.adapters.slack.listeners import SlackAdapter
    from bot.adapters.slack.client import group_members, web_client

    socket_mode = settings.slack_app_token is not None and not args.http
    stack = _stack(settings, args.stack)
    client = web_client(settings)
    runtime = Runtime.build(settings, stack, group_members=group_members(client))
    if (role := runtime.store.role_problem()) is not None and role[1] is not None:
        log.warning("database role: %s %s; %s", role[0], role[1], ROLE_ADVICE)
    record_at_start(runtime.releases)
    adapter = SlackAdapter(runtime, client, http_mode=not socket_mode)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    socket_handler = metrics_server = None
    try:
        if settings.metrics_port is not None:
            metrics_server = _metrics_port(settings, runtime)
        if socket_mode:
            from slack_bolt.adapter.socket_mode import SocketModeHandler

            log.info("connecting to Slack in Socket Mode")
            socket_handler = SocketModeHandler(adapter.app, settings.slack_app_token.get_secret_value())
            try:
                socket_handler.start()
            except SlackApiError as error:
                reason = error.response.get("error", "no reason given")
                raise ConfigError(f"SLACK_APP_TOKEN: Slack refused the Socket Mode connection ({reason})") from None
        else:
            try:
                server = adapter.http_server(args.host, args.port)
            except OSError as error:  # the port is taken, the host is not an address of this machine
                raise ConfigError(f"--host/--port: cannot listen on {args.host}:{args.port} ({error.strerror or error})") from None
            log.info("serving Slack requests on http://%s:%s/slack/events", args.host, server.effective_port)
            server.run()
    except KeyboardInterrupt:
        log.info("stopping; letting running commands finish")
    finally:
        if socket_handler is not None:
            socket_handler.close()  # stops the client's reconnect loop before the workers stop
        if metrics_server is not None:
            metrics_server.shutdown()
        adapter.shutdown()
        runtime.close()
    return 0


def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    store = Store(settings.effective_database_url)
    try:
        store.migrate(grant_to=args.grant_to)
    finally:
        store.dispose()
    print("The bot's database is at the latest schema.")
    if args.grant_to is not None:
        print(f"{args.grant_to} has the bot's grants (README, Security).")
    return 0


def cmd_manifest(_settings: Settings | None, args: argparse.Namespace) -> int:
    sys.stdout.write(render_manifest(load_commands(), args.request_url))
    return 0


def cmd_check(settings: Settings, args: argparse.Namespace) -> int:
    from bot.stack.probes import describe_error
    from bot.frame.redact import redact

    failures = 0

    def report(name: str, ok: bool, detail: str) -> None:
        nonlocal failures
        failures += not ok
        print(redact(f"{'ok  ' if ok else 'FAIL'} {name}: {detail}"))

    report("settings", True, "valid")
    shown_url = make_url(normalize_url(settings.effective_database_url)).render_as_string(hide_password=True)
    store = Store(settings.effective_database_url)
    try:
        with store.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        report("database", True, shown_url)
        if (role := store.role_problem()) is not None:
            user, problem = role
            if problem:
                print(redact(f"warn database role: {user} {problem}; {ROLE_ADVICE}"))
            else:
                report("database role", True, f"{user} may append to the audit log, not change it")
    except Exception as error:
        report("database", False, f"{shown_url}: {describe_error(getattr(error, 'orig', None) or error, 5)}")
    finally:
        store.dispose()
    if settings.slack_bot_token is None:
        print("skip slack: SLACK_BOT_TOKEN is not set (the console needs no Slack)")
    else:
        from bot.adapters.slack.client import web_client

        try:
            identity = web_client(settings).auth_test()
            report("slack", True, f"team {identity.get('team')}, bot user {identity.get('user')}")
        except Exception as error:
            report("slack", False, getattr(error, "response", {}).get("error", None) or str(error))
    stack = _stack(settings, args.stack)
    report("stack file", True, f"{stack.source or 'none'} ({len(stack.probes)} probes)")
    for result in run_probes(stack.probes):
        report(f"probe {result.name}", result.ok, result.detail if result.ok else result.error)
    return 1 if failures else 0


def _port(value: str) -> int:
    if not value.isdigit() or not 0 <= int(value) <= 65535:
        raise argparse.ArgumentTypeError(f"{value[:20]!r} is not a port (0 to 65535; 0 picks a free one)")
    return int(value)


def _slack_user(value: str) -> str:
    if not re.fullmatch(r"[UW][A-Z0-9]{1,20}", value):
        raise argparse.ArgumentTypeError(f"{value[:40]!r} is not a Slack user id (U... or W...)")
    return value

def cmd_postmortem(settings: Settings, args: argparse.Namespace) -> int:
    """The post-mortem from the bot's database alone: the stored timeline and the names resolved when it was posted."""
    runtime = Runtime.build(settings, StackConfig())
    try:
        incident = runtime.incidents.timeline.get(args.incident_id)
        if incident is None:
            print(f"flowstate-bot: there is no incident #{args.incident_id} in {settings.effective_database_url.split('@')[-1]}", file=sys.stderr)
            return 1
        markdown = runtime.incidents.report(incident, incident.names or {})
    finally:
        runtime.close()
    try:
        Path(args.out).write_text(markdown, encoding="utf-8")
    except OSError as error:
        print(f"flowstate-bot: cannot write {args.out}: {error.strerror}", file=sys.stderr)
        return 1
    print(f"Wrote the post-mortem of incident #{incident.id} to {args.out}.")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flowstate-bot", description="Slack chat-ops for the Flowstate-AI stack.")
    sub = parser.add_subparsers(dest="action", required=True)

    console = sub.add_parser("console", help="run the bot in this terminal (reads stdin when piped)")
    console.add_argument(
        "--as", dest="as_user", type=_slack_user, metavar="USER_ID", help="act as this Slack user, role checks included"
    )
    console.add_argument("--stack", metavar="FILE", help="the stack file (default: FLOWSTATE_STACK_FILE or ./flowstate.toml)")
    console.add_argument("--channel", default="console", help="the channel id commands appear to come from")
    console.set_defaults(func=cmd_console)

    run = sub.add_parser("run", help="connect to Slack (Socket Mode with SLACK_APP_TOKEN, else HTTP)")
    run.add_argument("--http", action="store_true", help="serve POST /slack/events even if SLACK_APP_TOKEN is set")
    run.add_argument("--host", default="127.0.0.1", help="HTTP mode: address to listen on (default 127.0.0.1)")
    run.add_argument("--port", type=_port, default=3000, help="HTTP mode: port (default 3000)")
    run.add_argument("--stack", metavar="FILE", help="the stack file")
    run.set_defaults(func=cmd_run)

    migrate = sub.add_parser("migrate", help="bring the bot's database to the latest schema")
    migrate.add_argument(
        "--grant-to", metavar="ROLE", help="then give this PostgreSQL role the bot's grants (run as the tables' owner)"
    )
    migrate.set_defaults(func=cmd_migrate)

    manifest = sub.add_parser("manifest", help="print the Slack app manifest")
    manifest.add_argument("--request-url", help="HTTP mode: the public https URL of /slack/events")
    manifest.set_defaults(func=cmd_manifest)

    check = sub.add_parser("check", help="validate the configuration and reach every dependency")
    check.add_argument("--stack", metavar="FILE", help="the stack file")
    check.set_defaults(func=cmd_check)

    postmortem = sub.add_parser("postmortem", help="write an incident's post-mortem as Markdown (no Slack needed)")
    postmortem.add_argument("incident_id", type=int, metavar="ID", help="the incident's number (/incidents lists them)")
    postmortem.add_argument("--out", required=True, metavar="FILE.md", help="where to write it")
    postmortem.set_defaults(func=cmd_postmortem)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    make_undumpable()  # before any secret is read
    try:
        settings = load_settings()
        forget_secret_environment()
        configure_logging(settings.log_level)
        return args.func(settings, args)
    except ConfigError as error:
        print(f"flowstate-bot: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
