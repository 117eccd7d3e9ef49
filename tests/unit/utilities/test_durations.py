from __future__ import annotations

from datetime import timedelta

import pytest

from savepoint.utilities.durations import parse_max_time


def test_parse_max_time_accepts_lightnings_forms():
    assert parse_max_time("01:02:03:04") == timedelta(days=1, hours=2, minutes=3, seconds=4)
    assert parse_max_time({"hours": 2}) == timedelta(hours=2)
    assert parse_max_time(timedelta(seconds=5)) == timedelta(seconds=5)
    assert parse_max_time(None) is None


@pytest.mark.parametrize("value", ["02:03:04", "1 hour", {"weeks_": 1}, 60])
def test_parse_max_time_rejects_other_forms_naming_the_value(value):
    with pytest.raises(ValueError, match="max_time"):
        parse_max_time(value)
