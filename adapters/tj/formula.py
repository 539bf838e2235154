"""Spreadsheet formula injection: received text rendered into CSV must stay text when Excel opens it.

A cell starting with `=`, `+`, `-`, `@`, a tab, a carriage return or a NUL is read by Excel and
LibreOffice as a formula (`=HYPERLINK(...)`, `=cmd|' /C calc'!A0`, `@SUM(...)`); so are the
full-width forms of the first four in some locales. Written by the partner's ministry, such a cell
would run on the desk of the official who opens the rendered notice. As OWASP advises, it gets a
leading apostrophe, which makes it text; reading the notice back removes that apostrophe again.

The same is done after every comma, semicolon and line break inside a cell: Russian- and
Tajik-locale Excel splits a CSV file on semicolons, not on the quoting we write, so each of those
can start a cell of its own there.

A plain number (`-5`, `+3.25`) is no formula and keeps its sign, so a spreadsheet still sees a
number. Text that starts with an apostrophe gets a second one, so reading back is exact.
"""

from __future__ import annotations

import re

TRIGGERS = ("=", "+", "-", "@", "\t", "\r", "\0", "\uff1d", "\uff0b", "\uff0d", "\uff20")
QUOTE = "'"
_SEPARATORS = re.compile(r"([,;\n])")  # kept by split, so joining restores them
_PLAIN_NUMBER = re.compile(r"[+-]?[0-9]+(?:\.[0-9]+)?")


def neutralised(cell: str) -> str:
    """The cell as written to CSV: text a spreadsheet will not evaluate, whatever its separator."""
    return "".join(_neutralised(part) for part in _SEPARATORS.split(cell))


def restored(cell: str) -> str:
    """The cell as `neutralised` was given it (an apostrophe before other text is kept)."""
    return "".join(_restored(part) for part in _SEPARATORS.split(cell))


def _neutralised(part: str) -> str:
    if part.startswith(QUOTE) or (part.startswith(TRIGGERS) and not _PLAIN_NUMBER.fullmatch(part)):
        return QUOTE + part
    return part


def _restored(part: str) -> str:
    if part.startswith(QUOTE) and part[1:].startswith((QUOTE, *TRIGGERS)):
        return part[1:]
    return part
