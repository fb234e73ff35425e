"""The watch: one alert after N bad checks in a row, one recovery after N good ones, nothing for flapping values."""

from __future__ import annotations

from datetime import timedelta

from bot.duties.watch import Observation
from bot.frame.registry import Invocation
from bot.frame.roles import Role
from tests.conftest import grant, run
from tests.duties.conftest import utc

START = utc(2026, 3, 28, 10, 0)


class Values:
    """The watch's input, one check at a time: for each key, bad or good."""

    def __init__(self):
        self.now: dict[str, bool] = {}

    def __call__(self, _duties) -> list[Observation]:
        return [Observation(key, bad, f"{key} {'above' if bad else 'within'} its threshold") for key, bad in self.now.items()]


def checks(duties, values: Values, sequence: list[bool], key: str = "cpu:backend", start: int = 0) -> list[list[str]]:
    """One watch check per value, five minutes apart; what the ops channel got at each."""
    said = []
    for step, bad in enumerate(sequence, start):
        values.now[key] = bad
        said.append(duties.at(START + timedelta(minutes=5 * step)))
    return said


def test_flapping_values_give_one_alert_and_one_recovery(scheduled, database_url):
    values = Values()
    duties = scheduled(START, values, database_url=database_url, watch_minutes=5, watch_checks=3)
    bad, good = True, False
    sequence = [bad, bad, good, bad, good, bad, bad, bad, good, bad, good, bad, bad, good, good, good, bad, good, good]
    said = checks(duties, values, sequence)
    posted = [(step, text) for step, texts in enumerate(said) for text in texts]
    assert [step for step, _text in posted] == [7, 15]  # the third bad in a row; the third good in a row
    assert posted[0][1].startswith("🚨 *Watch: cpu:backend*: cpu:backend above its threshold (bad for 3 consecutive checks since Sat 2026-03-28 11:35 CET)")
    assert "`/watch mute cpu:backend 1h` silences it" in posted[0][1]
    assert posted[1][1] == "✅ *Watch: cpu:backend* recovered after 40 min: cpu:backend within its threshold (3 good checks in a row)."
    assert len(duties.runs("watch-check")) == len(sequence)


def test_watch_shows_what_is_watched_and_what_fires(scheduled, database_url):
    values = Values()
    values.now["probe:backend"] = False
    duties = scheduled(START, values, database_url=database_url, watch_minutes=5, watch_checks=2)
    checks(duties, values, [True, True], key="queue_length")
    grant(duties.rt, "U0VIEWER", Role.viewer)
    lines = duties.rt.pipeline.dispatch(Invocation("U0VIEWER", "watch", "", "C1")).text.splitlines()
    assert lines[0].startswith("The watch checks every 5 min: every /health check, and the /stats thresholds (API 5xx above 5%")
    assert lines[0].endswith("One alert after 2 bad checks in a row, one recovery after 2 good ones.")
    assert lines[1:3] == ["Firing (1):", "🔴 *queue_length*: queue_length above its threshold (firing since Sat 2026-03-28 11:05 CET)"]
    assert lines[3].startswith("Not firing (1, last checked") and lines[3].endswith(": probe:backend")


def test_a_muted_key_posts_nothing_until_its_mute_ends_and_then_alerts_once(scheduled, database_url):
    values = Values()
    duties = scheduled(START, values, database_url=database_url, watch_minutes=5, watch_checks=2)
    assert checks(duties, values, [False]) == [[]]
    grant(duties.rt, "U0OPERATOR", Role.operator)
    muted = duties.rt.pipeline.dispatch(Invocation("U0OPERATOR", "watch", "mute cpu:backend 30m", "C1"))
    assert muted.text == "🔇 cpu:backend is muted until Sat 2026-03-28 11:30 CET by <@U0OPERATOR>: no alert for it is posted until then."
    # Bad from 10:05 to 10:55 UTC: firing from the second check, silent while muted (until 10:30 UTC), one alert after.
    said = checks(duties, values, [True] * 11, start=1)
    assert [step for step, texts in enumerate(said, 1) for _text in texts] == [6]
    lines = duties.rt.pipeline.dispatch(Invocation("U0OPERATOR", "watch", "", "C1")).text.splitlines()
    assert lines[1:3] == ["Firing (1):", "🔴 *cpu:backend*: cpu:backend above its threshold (firing since Sat 2026-03-28 11:10 CET)"]


def test_muting_an_unknown_key_or_for_too_long_is_refused_and_viewers_cannot_mute(scheduled, database_url):
    values = Values()
    values.now.update({"cpu:backend": False, "probe:frontend": False})
    duties = scheduled(START, values, database_url=database_url, watch_minutes=5)
    checks(duties, values, [False])
    grant(duties.rt, "U0OPERATOR", Role.operator)
    grant(duties.rt, "U0VIEWER", Role.viewer)

    def watch(user: str, text: str) -> str:
        return duties.rt.pipeline.dispatch(Invocation(user, "watch", text, "C1")).text

    assert watch("U0OPERATOR", "mute cpu:frontend 1h") == "There is no watched key 'cpu:frontend'; the keys are: cpu:backend, probe:frontend."
    assert watch("U0OPERATOR", "mute cpu:backend 30d") == "The duration can be at most 7d; usage: `/watch [mute KEY DURATION]`"
    assert watch("U0OPERATOR", "mute cpu:backend soon") == (
        "'soon' is not a duration; use a number and s, m, h or d, such as 15m or 2h; usage: `/watch [mute KEY DURATION]`"
    )
    assert watch("U0OPERATOR", "silence cpu:backend") == (
        "Use /watch to see what is watched, or /watch mute KEY DURATION such as /watch mute cpu:backend 1h; usage: `/watch [mute KEY DURATION]`"
    )
    assert watch("U0VIEWER", "mute cpu:backend 1h") == "This use of /watch needs the operator role and you have viewer."
    assert all(state.muted_until is None for state in duties.rt.duties.watch.states())


def test_a_watch_that_is_off_is_not_green(make_runtime):
    runtime = make_runtime(admins=["UA"], watch_minutes=0)
    text = run(runtime, "UA", "/watch").text
    assert text.startswith("⚪ The watch is off (FLOWSTATE_WATCH_MINUTES=0 or no FLOWSTATE_OPS_CHANNEL): nothing is watched"), text
    assert "🟢" not in text
