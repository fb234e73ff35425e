"""The Slack app manifest comes from the command declarations, and the committed copy matches."""

import re

from bot.adapters.slack.manifest import TIMELINE_SHORTCUT, build_manifest, render_manifest
from bot.runtime import load_commands
from tests.conftest import ROOT


def test_the_committed_manifest_matches_the_declarations():
    committed = (ROOT / "slack-app-manifest.yml").read_text()
    assert committed == render_manifest(load_commands()), "run: flowstate-bot manifest > slack-app-manifest.yml"


def test_the_manifest_keeps_slacks_limits():
    commands = load_commands()
    manifest = build_manifest(commands)
    assert len(manifest["display_information"]["name"]) <= 35
    slash = manifest["features"]["slash_commands"]
    assert 0 < len(slash) <= 50
    assert {entry["command"] for entry in slash} == {cmd.slash for cmd in commands.values()}
    for entry in slash:
        assert re.fullmatch(r"/[a-z0-9_-]{1,31}", entry["command"])
        assert "url" not in entry  # Socket Mode needs none
    assert manifest["settings"]["socket_mode_enabled"] is True


def test_http_mode_points_every_command_at_the_request_url():
    manifest = build_manifest(load_commands(), "https://ops.example.com/slack/events")
    assert manifest["settings"]["socket_mode_enabled"] is False
    assert manifest["settings"]["interactivity"]["request_url"] == "https://ops.example.com/slack/events"
    assert {entry["url"] for entry in manifest["features"]["slash_commands"]} == {"https://ops.example.com/slack/events"}


def test_the_manifest_asks_for_what_incidents_need_the_pin_event_history_files_and_the_shortcut():
    for request_url in (None, "https://ops.example.com/slack/events"):
        manifest = build_manifest(load_commands(), request_url)
        assert manifest["settings"]["event_subscriptions"]["bot_events"] == ["reaction_added"]
        assert {"reactions:read", "channels:history", "groups:history", "files:write", "users:read"} <= set(manifest["oauth_config"]["scopes"]["bot"])
        (shortcut,) = manifest["features"]["shortcuts"]
        assert (shortcut["type"], shortcut["callback_id"], shortcut["name"]) == ("message", TIMELINE_SHORTCUT, "Add to incident timeline")
        assert len(shortcut["description"]) <= 150
    assert manifest["settings"]["event_subscriptions"]["request_url"] == "https://ops.example.com/slack/events"
