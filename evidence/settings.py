"""Strict configuration trees: a TOML file onto frozen dataclasses, section by section.

Unknown keys and bad values are errors naming the field (`mqtt.hots: unknown key (known keys here: …)`,
`session.segment_seconds: must be a finite number greater than 0, got nan`). A field's limits are written
once, on its type (`Annotated[float, Positive]`), and checked whenever a section is made, from a file or in
code, so no value escapes them. Numbers must be finite. The device's tree is `firmware_py/config.py`,
central's `central/config.py`; both share sections such as `[upload]` and `[mqtt]`.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
import types
import typing
import zoneinfo
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from evidence.errors import ConfigError

T = TypeVar("T")


@dataclass(frozen=True)
class Range:
    """Limits of a number: `low`/`high` inclusive unless `open_low`/`open_high`."""

    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False

    def holds(self, value: float) -> bool:
        if self.low is not None and (value <= self.low if self.open_low else value < self.low):
            return False
        return not (self.high is not None and (value >= self.high if self.open_high else value > self.high))

    def __str__(self) -> str:
        parts = []
        if self.low is not None:
            parts.append(f"{'greater than' if self.open_low else 'at least'} {self.low:g}")
        if self.high is not None:
            parts.append(f"{'below' if self.open_high else 'at most'} {self.high:g}")
        return " and ".join(parts) or "any finite number"


@dataclass(frozen=True)
class NonEmpty:
    """A string with something in it other than spaces."""


@dataclass(frozen=True)
class TimeZone:
    """A string that is an IANA time zone name (Asia/Shanghai)."""


Positive = Range(0, open_low=True)
Port = Range(1, 65535)


def check(value: Any, field: str, *rules: Any) -> None:
    """Raise ConfigError naming `field` unless `value` keeps every rule (and, if a number, is finite)."""
    if isinstance(value, float | int) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ConfigError(f"{field}: must be a finite number, got {value}")
        for rule in rules:
            if isinstance(rule, Range) and not rule.holds(value):
                raise ConfigError(f"{field}: must be {rule}, got {value:g}")
    if isinstance(value, str) and NonEmpty() in rules and not value.strip():
        raise ConfigError(f"{field}: must not be empty")
    if isinstance(value, str) and TimeZone() in rules:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as err:
            raise ConfigError(f"{field}: {value!r} is not a known time zone (e.g. Asia/Shanghai)") from err


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls, include_extras=True)
    return _HINTS[cls]


class Section:
    """Base of a configuration section (a frozen dataclass): checks its annotated limits when made, then
    calls `validate` for checks across fields."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            _check_value(getattr(self, f.name), _hints(type(self))[f.name], f.name)
        self.validate()

    def validate(self) -> None:
        """Checks that cross single fields; raise ConfigError naming the field."""


def _check_value(value: Any, hint: Any, field: str) -> None:
    if typing.get_origin(hint) is Annotated:
        base, *rules = typing.get_args(hint)
        check(value, field, *rules)
        _check_value(value, base, field)
    elif typing.get_origin(hint) is tuple and isinstance(value, tuple):
        item = typing.get_args(hint)[0]
        for i, v in enumerate(value):
            _check_value(v, item, f"{field}[{i}]")
    elif isinstance(value, float):
        check(value, field)


def _convert(value: Any, hint: Any, field: str) -> Any:
    origin = typing.get_origin(hint)
    if origin is Annotated:
        return _convert(value, typing.get_args(hint)[0], field)
    if origin is types.UnionType:
        # Only `X | None`, for an optional table: TOML has no null, so a present value is always an X.
        (inner,) = (arg for arg in typing.get_args(hint) if arg is not type(None))
        return _convert(value, inner, field)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"{field}: expected a table, got {type(value).__name__}")
        return build(hint, value, field)  # type: ignore[arg-type]
    if origin is Literal:
        allowed = typing.get_args(hint)
        if value not in allowed:
            raise ConfigError(f"{field}: {value!r} is not one of {', '.join(repr(a) for a in allowed)}")
        return value
    if origin is tuple:
        item_hint = typing.get_args(hint)[0]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{field}: expected a list, got {type(value).__name__}")
        return tuple(_convert(v, item_hint, f"{field}[{i}]") for i, v in enumerate(value))
    if hint is Path:
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"{field}: expected a path")
        return Path(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{field}: expected true or false, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{field}: expected a number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{field}: expected a whole number, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{field}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{field}: unsupported type {hint!r}")


def build(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """A `cls` from a TOML table: every key known and well-typed, every limit kept."""
    hints = _hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        field = f"{prefix}.{key}" if prefix else key
        if key not in names:
            raise ConfigError(f"{field}: unknown key (known keys here: {', '.join(sorted(names))})")
        kwargs[key] = _convert(value, hints[key], field)
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{prefix}.{f.name}: required" if prefix else f"{f.name}: required")
    try:
        return cls(**kwargs)
    except ConfigError as err:
        raise ConfigError(f"{prefix}.{err}" if prefix else str(err)) from err
    except TypeError as err:
        raise ConfigError(f"{prefix or 'configuration'}: {err}") from err


def read_toml(path: Path) -> dict[str, Any]:
    """The TOML file at `path`; ConfigError saying what is wrong with the file otherwise."""
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError as err:
        raise ConfigError(f"{path}: no such configuration file") from err
    except IsADirectoryError as err:
        raise ConfigError(f"{path}: is a folder, not a configuration file") from err
    except PermissionError as err:
        raise ConfigError(f"{path}: not readable by this user (check its owner and mode)") from err
    except OSError as err:
        raise ConfigError(f"{path}: cannot read it: {err.strerror or err}") from err
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.start}); save it as UTF-8") from err
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from err
