import datetime as dt

import pytest
from conftest import cli_result, no_traceback, pandas_3_only

from agentmetrics import reports
from agentmetrics.reports.regression import regressions
from agentmetrics.reports.stale import stale_cutoff
from agentmetrics.timestamps import normalize, parse_duration, to_iso
from agentmetrics.window import bound, window


def test_iso_format_matches_javascript_to_iso_string():
    moment = dt.datetime(2026, 1, 2, 3, 4, 5, 678_901, tzinfo=dt.timezone.utc)
    assert to_iso(moment) == "2026-01-02T03:04:05.678Z"
    assert to_iso(dt.datetime(99, 1, 1)) == "0099-01-01T00:00:00.000Z"  # sorts before 1970


@pytest.mark.parametrize(
    "text, expected",
    [
        ("2026-01-02 03:04:05", "2026-01-02T03:04:05.000Z"),
        ("2026-01-02T03:04:05.5Z", "2026-01-02T03:04:05.500Z"),
        ("2026-01-02T03:04:05.123456789Z", "2026-01-02T03:04:05.123Z"),
        ("2026-01-02 03:04:05.12+02:00", "2026-01-02T01:04:05.120Z"),
        ("2026-01-02T05:04:05+02:00", "2026-01-02T03:04:05.000Z"),
        ("2026-01-02", "2026-01-02T00:00:00.000Z"),
    ],
)
def test_normalize_reads_every_stored_format(text, expected):
    assert normalize(text) == expected


def test_huge_windows_clamp_instead_of_crashing():
    now = "2026-01-01T00:00:00Z"
    # numpy datetime64 (proleptic Gregorian, like Python) agrees: 0885-03-16T08.
    assert bound(dt.timedelta(hours=10_000_000), now) == "0885-03-16T08:00:00.000Z"
    assert bound("1000000w", now) == "0001-01-01T00:00:00.000Z"
    assert window("1000000w", now, now)[1] == {
        "since": "0001-01-01T00:00:00.000Z",
        "until": "2026-01-01T00:00:00.000Z",
    }


@pytest.mark.parametrize("text", ["abc", "5 parsecs", "-3h", "1e400d"])
def test_bad_durations_are_value_errors(text):
    with pytest.raises(ValueError):
        parse_duration(text)


# -- huge spans clamp to the start of time instead of an OverflowError ---------------------


MARCH_10 = "2026-03-10T12:00:00Z"
# 1,000,000 days: a valid duration that reaches back before the year 1.
HUGE_SPAN = "1000000d"


@pandas_3_only
def test_huge_spans_clamp(db):
    assert stale_cutoff(HUGE_SPAN, MARCH_10) == "0001-01-01T00:00:00.000Z"
    assert regressions(db, recent=HUGE_SPAN, now=MARCH_10).empty
    assert regressions(db, baseline=HUGE_SPAN, now=MARCH_10).empty
    days = reports.trends(db, since=HUGE_SPAN, until="0001-01-03", now=MARCH_10)
    assert [str(day.date()) for day in days["period"]] == ["0001-01-01", "0001-01-02"]


@pytest.mark.parametrize(
    "args",
    [
        ["reap", "--stale-after", HUGE_SPAN, "--dry-run"],
        ["regressions", "--recent", HUGE_SPAN],
        ["regressions", "--baseline", HUGE_SPAN],
        ["health", "--stale-after", HUGE_SPAN],
    ],
)
def test_cli_huge_spans(db, db_path, args):
    no_traceback(cli_result("--db", db_path, *args), 0)
