"""Canonical JSON (FORMAT §3.2) and the strict reader every signed document goes through.

The canonical bytes of a value are `json.dumps(value, sort_keys=True, separators=(",", ":"),
ensure_ascii=False)` in UTF-8. A signed document (a ledger entry, later a receipt) is accepted only if its
bytes are exactly the canonical bytes of what they parse to: so there is one reading of every signed
document. A second `"body"` key, which Python would resolve to the last and another reader to the first,
spaces, `\\u` escapes of printable characters, `1.50` for `1.5` — each makes the bytes non-canonical and
the document is refused instead of being read two ways.

The reader also refuses what would crash or mislead a reader in another language: NaN and Infinity, lone
UTF-16 surrogates, nesting deeper than `MAX_DEPTH`, and integers outside the signed 64-bit range (a
verifier with only double-precision numbers must read integers above 2^53 exactly; FORMAT §3.2).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

MAX_DEPTH = 16
"""Objects and arrays nested deeper than this are refused (a ledger entry needs 5)."""
INT_LIMIT = 2**63
"""Integers must lie in [-2^63, 2^63): what every JSON reader with 64-bit integers can hold exactly."""


class NotCanonical(ValueError):
    """The bytes are not a canonical JSON document; the message says why."""


def canonical(value: Any) -> bytes:
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False).encode("utf-8")
    except UnicodeEncodeError as err:
        raise NotCanonical("a string holds a lone UTF-16 surrogate, which UTF-8 cannot encode") from err
    except ValueError as err:
        raise NotCanonical(f"not representable as canonical JSON: {err}") from err


def _refuse_constant(name: str) -> Any:
    raise NotCanonical(f"{name} is not a JSON number")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise NotCanonical(f"key {key!r} appears twice in one object")
        out[key] = value
    return out


def _check_tree(value: Any, depth: int) -> None:
    if isinstance(value, dict | list):
        if depth >= MAX_DEPTH:
            raise NotCanonical(f"nested deeper than {MAX_DEPTH} levels")
        for item in value.values() if isinstance(value, dict) else value:
            _check_tree(item, depth + 1)
    elif isinstance(value, int) and not isinstance(value, bool) and not -INT_LIMIT <= value < INT_LIMIT:
        raise NotCanonical("an integer lies outside the signed 64-bit range")


def _parse(data: bytes) -> Any:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise NotCanonical(f"not UTF-8: {err.reason} at byte {err.start}") from err
    try:
        value = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_refuse_constant)
    except RecursionError as err:
        raise NotCanonical(f"nested deeper than {MAX_DEPTH} levels") from err
    except NotCanonical:
        raise
    except ValueError as err:  # JSONDecodeError, and int() refusing thousands of digits
        raise NotCanonical(f"not JSON: {err}") from err
    _check_tree(value, 0)
    return value


def parse_strict(data: bytes) -> Any:
    """Parse `data` as strict JSON: UTF-8, no duplicate keys, no NaN or Infinity, no lone surrogates, at
    most MAX_DEPTH deep, integers within 64 bits. Raises NotCanonical naming the first thing wrong; never
    anything else for any input."""
    value = _parse(data)
    canonical(value)  # refuses lone surrogates
    return value


def parse_made(data: bytes) -> Any:
    """Read back bytes this program has just made with `canonical` (canonical by construction), with the
    strict reader's limits but without comparing them with their canonical form again."""
    return _parse(data)


def read_object(data: bytes, limit: int, what: str, fail: Callable[[str], Exception],
                exact: bool = True) -> dict[str, Any]:
    """The JSON object a message of at most `limit` bytes holds: canonical JSON, or strict JSON with `exact`
    False. Whatever is wrong raises `fail(message)`, the message naming `what` and the first fault."""
    if len(data) > limit:
        raise fail(f"{what} of {len(data)} bytes is over the {limit}-byte limit")
    try:
        value = parse_canonical(data) if exact else parse_strict(data)
    except NotCanonical as err:
        raise fail(f"{what} is not {'canonical' if exact else 'strict'} JSON: {err}") from err
    if not isinstance(value, dict):
        raise fail(f"{what} is not a JSON object")
    return value


def parse_canonical(data: bytes) -> Any:
    """`parse_strict`, and `data` must be exactly the canonical form of what it holds."""
    value = _parse(data)
    if canonical(value) != data:
        raise NotCanonical("not in canonical form (sorted keys, no spaces, raw UTF-8, shortest numbers)")
    return value
