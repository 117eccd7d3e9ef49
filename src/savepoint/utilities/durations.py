"""Durations as Lightning accepts them (``Trainer(max_time=...)``, ``Timer(duration=...)``)."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any


def parse_max_time(value: Any) -> timedelta | None:
    """``"DD:HH:MM:SS"``, a dict of ``timedelta`` arguments, or a ``timedelta`` (as Lightning's ``max_time``)."""
    if value is None or isinstance(value, timedelta):
        return value
    if isinstance(value, dict):
        try:
            return timedelta(**value)
        except TypeError as err:
            raise ValueError(
                f"Trainer(max_time={value!r}): {err}; use timedelta keywords (days=, hours=...)."
            ) from None
    if isinstance(value, str) and re.fullmatch(r"\d+:\d{1,2}:\d{1,2}:\d{1,2}", value):
        days, hours, minutes, seconds = (int(x) for x in value.split(":"))
        return timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
    raise ValueError(
        f"Trainer(max_time={value!r}) must be a 'DD:HH:MM:SS' string, a dict like {{'hours': 1}} or a timedelta."
    )
