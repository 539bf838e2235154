"""A settings file written from the settings model itself, so it names every setting and cannot drift.

Each setting gets its description as a comment, then either the value given (an active line) or its
default (commented out, ready to change). What `broker init` writes and the dev kit's files use.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Mapping
from pathlib import Path

from broker.state.private_files import write_private
from broker.state.settings import ExchangeSettings

_WIDTH = 100


def toml_value(value: object) -> str:
    """One TOML value: strings (and paths) quoted, numbers and booleans bare, tables and arrays inline."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{json.dumps(str(k))} = {toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    return json.dumps(str(value), ensure_ascii=False)  # a JSON string is a valid TOML basic string


def render_settings(values: Mapping[str, object], *, header: str = "") -> str:
    """Every setting of `ExchangeSettings`, in model order, described; `values` are set, the rest
    shown at their default. A value of None is left out (the setting stays unset)."""
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    for name, field in ExchangeSettings.model_fields.items():
        if lines:
            lines.append("")
        description = field.description or ""
        lines += textwrap.wrap(description, _WIDTH - 2, initial_indent="# ", subsequent_indent="# ")
        value = values.get(name)
        if value is not None:
            lines.append(f"{name} = {toml_value(value)}")
            continue
        default = field.get_default(call_default_factory=True)
        if default is not None:
            lines.append(f"# {name} = {toml_value(default)}")
            continue
        example = (
            field.json_schema_extra.get("example") if isinstance(field.json_schema_extra, dict) else None
        )
        if example is None:
            raise ValueError(f"setting {name} has neither a default nor an example to show")
        lines.append(f"# {name} = {toml_value(example)}   # an example: not set by default")
    return "\n".join(lines) + "\n"


def write_settings(path: Path, text: str) -> None:
    """A settings file is private (0600): it names the broker user and where its password is."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_private(path, text.encode("utf-8"))
