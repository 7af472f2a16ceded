"""Times as central shows them: in the agency's zone (`[central] timezone`), to the second, with the offset. The
web pages (central/web/timefmt.py), the written explanation's form and the commands all write them so."""

from __future__ import annotations

import datetime as dt


def in_zone(when: dt.datetime | float | str | None, zone: dt.tzinfo) -> str:
    """`when` (a time, POSIX seconds, or ISO 8601 text) in `zone`, as `YYYY-MM-DD HH:MM:SS+08:00`; "" for
    None or ""; text that is not a time, as it is; a time without an offset, as it is written."""
    if when is None or when == "":
        return ""
    if isinstance(when, float | int):
        when = dt.datetime.fromtimestamp(when, dt.UTC)
    elif isinstance(when, str):
        try:
            parsed = dt.datetime.fromisoformat(when)
        except ValueError:
            return when
        if parsed.tzinfo is None:
            return parsed.isoformat(sep=" ", timespec="seconds")
        when = parsed
    return when.astimezone(zone).isoformat(sep=" ", timespec="seconds")
