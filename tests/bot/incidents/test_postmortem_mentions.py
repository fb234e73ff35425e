"""A post-mortem looks up the names of the people who acted, not of everyone a message mentions: one message
with 2,000 distinct mentions must not cost 2,000 calls to users.info (Slack's rate limits would stall it for minutes)."""

import time

from tests.bot.test_slack_incidents import CHANNEL, _bot, _sections, _slash, _upload


def test_a_message_with_two_thousand_mentions_costs_a_bounded_number_of_name_lookups(slack_bot, slack_double):
    sender, runtime = _bot(slack_bot, slack_double)
    start = time.time() - 3600
    crowd = [f"U{i:07d}" for i in range(2000)]
    slack_double.seed_message(CHANNEL, "paging <@UBEN> and " + " ".join(f"<@{user}>" for user in crowd), "UCLEO", ts=f"{start:.6f}")
    slack_double.seed_message(CHANNEL, "on it", "UOLGA", ts=f"{start + 5:.6f}")
    said = _slash(sender, slack_double, '/postmortem --since 3h "Mention flood"', "UOLGA", "pm")
    assert said.startswith("Post-mortem of incident #1 posted to the channel as postmortem-incident-1.md"), said
    looked_up = [call.params["user"] for call in slack_double.calls_to("users.info")]
    assert len(looked_up) == len(set(looked_up)) <= 100, "the speakers, and the first mentions only (not 2,000)"
    assert {"UOLGA", "UCLEO", "UBEN"} <= set(looked_up)
    timeline = _sections(_upload(slack_double).content.decode())["Timeline"]
    assert "Cleo: paging @Ben and @U0000000" in timeline, "a name where it was looked up"
    assert "@U0001999" in timeline, "past the cap, a mention shows its user id"
