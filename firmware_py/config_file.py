"""Writing the device's configuration file (for `recorder enroll`): the TOML subset the configuration tree
uses (tables, arrays of tables, strings, numbers, booleans and arrays of those), read back by `tomllib`.
Nothing is written that the configuration tree would refuse."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from evidence.durable import atomic_write
from evidence.errors import ConfigError, StorageFault
from firmware_py import config as config_mod


def _value(value: Any, where: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigError(f"{where}: {value} cannot be written (not a finite number)")
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a JSON string is a TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v, where) for v in value) + "]"
    raise ConfigError(f"{where}: {type(value).__name__} values cannot be written to the configuration file")


def _is_table_array(value: Any) -> bool:
    return isinstance(value, list | tuple) and bool(value) and all(isinstance(v, dict) for v in value)


def _table(lines: list[str], name: str, table: dict[str, Any]) -> None:
    plain = {k: v for k, v in table.items() if not isinstance(v, dict) and not _is_table_array(v)}
    if name and (plain or not table):
        lines += ["", f"[{name}]"]
    lines += [f"{key} = {_value(value, f'{name}.{key}'.lstrip('.'))}" for key, value in plain.items()]
    for key, value in table.items():
        path = f"{name}.{key}" if name else key
        if isinstance(value, dict):
            _table(lines, path, value)
        elif _is_table_array(value):
            for item in value:
                lines += ["", f"[[{path}]]"]
                lines += [f"{k} = {_value(v, f'{path}.{k}')}" for k, v in item.items()]


def render(data: dict[str, Any], header: str) -> str:
    lines = [f"# {line}" if line else "#" for line in header.splitlines()]
    _table(lines, "", data)
    return "\n".join(lines).lstrip("\n") + "\n"


def write(path: Path, data: dict[str, Any], header: str) -> None:
    """Check `data` as the service would read it, then replace `path` with it atomically (mode 0644: it holds
    public keys and file names, no secret)."""
    config_mod.from_dict(data)
    try:
        atomic_write(path, render(data, header).encode("utf-8"), mode=0o644)
    except StorageFault as err:
        raise ConfigError(f"{path}: cannot write the configuration: {err}") from err
