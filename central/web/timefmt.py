"""Times as staff see and type them: always in the agency's zone (`[central] timezone`), with its offset."""

from __future__ import annotations

import datetime as dt

from central.localtime import in_zone
from central.web.services import services


def zone() -> dt.tzinfo:
    return services().config.central.zone


def zone_name() -> str:
    return services().config.central.timezone


def local(when: dt.datetime | float | str | None) -> str:
    """`when` in the agency's zone, to the second, with its offset ('' for None)."""
    return in_zone(when, zone())


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
