"""The watch on the live test stack: the backend answering 500 is one alert, its recovery one message."""

from __future__ import annotations

from datetime import timedelta

from tests.duties.conftest import utc
from tests.duties.test_watch import START
from tests.stack_setting import port


def test_the_watch_alerts_once_when_the_backend_fails_and_says_once_when_it_is_back(scheduled, live_stack, stack_container):
    backend = stack_container("backend")  # put back to healthy after the test, whatever happens
    duties = scheduled(START, stack=live_stack, watch_minutes=5, watch_checks=2)

    def check(step: int) -> list[str]:
        return [text for text in duties.at(START + timedelta(minutes=5 * step)) if "*Watch: probe:backend*" in text]

    assert check(0) == []
    backend.exec_run("touch /tmp/fail")
    try:
        assert check(1) == []  # one bad check is not yet an alert
        (alert,) = check(2)
        assert alert.startswith("🚨 *Watch: probe:backend*: answered HTTP 500, expected 200")
        assert check(3) == []  # still failing: no repeat
    finally:
        backend.exec_run("rm -f /tmp/fail")
    assert check(4) == []
    (recovered,) = check(5)
    assert recovered.startswith("✅ *Watch: probe:backend* recovered after 15 min:")
    states = {state.key: state for state in duties.rt.duties.watch.states()}
    assert states["probe:backend"].firing_since is None and states["probe:backend"].good_count == 2
    assert states["probe:backend-via-nginx"].firing_since is None  # it failed with the backend, and came back with it
    assert START == utc(2026, 3, 28, 10, 0)


def test_the_watchs_alert_quotes_a_hostile_log_line_as_text(scheduled, live_stack, stack_container):
    import urllib.error
    import urllib.request

    stack_container("backend").exec_run("touch /tmp/fail-api")
    request = urllib.request.Request(f"http://127.0.0.1:{port(58080)}/api/items", headers={"User-Agent": "`<!channel> <https://evil.example|x>`"})
    try:
        urllib.request.urlopen(request, timeout=5)
    except urllib.error.HTTPError as error:
        assert error.code == 500
    stack_container("nginx").stop(timeout=2)
    duties = scheduled(START, stack=live_stack, watch_minutes=5, watch_checks=1)
    (alert,) = [text for text in duties.at(START) if "*Watch: container:nginx*" in text]
    assert "ʼ&lt;!channel&gt; &lt;https://evil.example|x&gt;ʼ" in alert, alert
    assert "<!channel>" not in alert and "<https://evil" not in alert
