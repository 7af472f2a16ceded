"""CSV cells a spreadsheet shows as text (the audit, the retention report, the statistics: on the pages and from
the commands)."""

from __future__ import annotations


def inert(text: str) -> str:
    """Anyone can choose the name a failed log-in is recorded under, or a case's name: a leading = + - @ would
    make it a formula in the auditor's spreadsheet, so such a cell starts with an apostrophe."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text
