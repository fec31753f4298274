import datetime as dt

import pytest

from agentmetrics.reports._common import bound, window
from agentmetrics.timestamps import normalize, parse_duration, to_iso


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
