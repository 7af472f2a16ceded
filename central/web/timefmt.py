"""Times as staff see and type them: always in the agency's zone (`[central] timezone`), with its offset."""

from __future__ import annotations

import datetime as dt

from central.web.services import services


def zone() -> dt.tzinfo:
    return services().config.central.zone


def zone_name() -> str:
    return services().config.central.timezone


def local(when: dt.datetime | float | str | None) -> str:
    """`when` in the agency's zone, to the second, with its offset ('' for None)."""
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
    return when.astimezone(zone()).isoformat(sep=" ", timespec="seconds")


def entered(text: str) -> dt.datetime | None:
    """A date or date and time typed in a form (no offset: the agency's zone); None if empty. ValueError with
    a message for anything else."""
    text = text.strip()
    if not text:
        return None
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError as err:
        raise ValueError(f"{text!r} is not a date or time like 2026-11-29 or 2026-11-29T14:30") from err
    return when if when.tzinfo is not None else when.replace(tzinfo=zone())
