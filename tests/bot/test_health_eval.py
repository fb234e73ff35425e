"""The health evaluation's reading of logs and levels, without a stack: what counts as an error, what a status is."""

import pytest

from bot.frame.config import ConfigError, load_stack
from bot.stack.health import access_status, count_statuses, looks_like_error

LINE = '127.0.0.1 - - [05/Dec/2026:08:00:00 +0000] "GET /api/items HTTP/1.1" {status} 21 "-" "{agent}" 0.001'


@pytest.mark.parametrize(
    "line, status",
    [
        (LINE.format(status=502, agent="curl/8"), 502),
        (LINE.format(status=200, agent='x" 500 1 "-" "evil'), 200),  # a hostile user agent is never read
        (LINE.format(status=200, agent="`<!channel>` \\x22 500 "), 200),
        ('127.0.0.1 - - [05/Dec/2026:08:00:00 +0000] "\\x16\\x03\\x01" 400 157 "-" "-"', 400),  # a TLS hello at a plain port
        ('127.0.0.1 - - [05/Dec/2026:08:00:00 +0000] "GET /api/items HTTP/1.0" 500 21', 500),  # the backend's shorter format
        ("2026/12/05 08:00:00 [error] 7#7: *1 connect() failed (111: Connection refused)", None),
        ('"GET / HTTP/1.1" 500 ', None),  # no time field: not an access line
    ],
)
def test_the_status_is_the_field_after_the_quoted_request(line, status):
    assert access_status(line) == status


@pytest.mark.parametrize(
    "line, error",
    [
        ("2026/12/05 08:00:00 [error] 7#7: *1 connect() failed (111: Connection refused)", True),
        ('level=error msg="db timeout"', True),
        ("FATAL:  the database system is shutting down", True),
        ("panic: runtime error: index out of range", True),
        (LINE.format(status=503, agent="-"), True),
        (LINE.format(status=200, agent="ErrorBot/1.0 fatal panic"), False),  # an access line is judged by its status
        ("GET /api/items 200 12ms", False),
        ("starting worker 3", False),
    ],
)
def test_an_error_line_is_one_with_a_level_word_or_a_5xx_status(line, error):
    assert looks_like_error(line) is error


def test_a_window_counts_requests_and_5xx_and_skips_other_lines():
    lines = [LINE.format(status=s, agent="-") for s in (200, 500, 502, 404)] + ["nginx: [warn] something"]
    count = count_statuses(lines)
    assert (count.total, count.errors, f"{count.percent:.1f}", count.capped) == (4, 2, "50.0", False)
    assert count_statuses(lines, max_lines=5).capped, "as many lines as were asked for: there may be more"


def test_old_single_value_thresholds_are_the_warning_level_and_critical_has_its_own(tmp_path):
    path = tmp_path / "flowstate.toml"
    path.write_text("[thresholds]\nerror_rate_percent = 2.0\nqueue_length = 100\n[thresholds.critical]\nqueue_length = 1000\n")
    limits = load_stack(path, required=True).thresholds
    assert [limits.severity("queue_length", n) for n in (100, 101, 1001)] == ["ok", "warn", "fail"]
    assert [limits.severity("error_rate_percent", n) for n in (2.0, 3.0, 30.0)] == ["ok", "warn", "fail"]


@pytest.mark.parametrize(
    "content, message",
    [
        ("[edge]\nwarning_percent = 30\ncritical_percent = 10\n", "critical_percent must not be below warning_percent"),
        ('[edge]\nformat = "json"\n', "edge.format: Input should be 'combined'"),
        ('[thresholds.runbooks]\ncpu = "https://wiki.example/cpu"\n', "runbooks for unknown thresholds: cpu"),
        ('[edge]\nrunbook = "https://wiki.example/x|<!channel>"\n', "edge.runbook: a runbook must be an http:// or https:// URL"),
    ],
)
def test_a_wrong_edge_or_threshold_section_names_the_key(tmp_path, content, message):
    path = tmp_path / "flowstate.toml"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_stack(path, required=True)
