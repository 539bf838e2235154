"""The words for each reason code, as docs/reason-codes.md gives them (meaning and what to do).

The document is the one place the codes are explained (a test keeps it and the enum in step), so
the console reads its table rather than keeping a second copy that could drift from it.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path

DOCUMENT = Path(__file__).resolve().parents[3] / "docs" / "reason-codes.md"
_ROW = re.compile(
    r"^\|\s*`(?P<code>[a-z_]+\.[a-z_]+)`\s*\|(?P<meaning>[^|]*)\|(?P<by>[^|]*)\|(?P<action>[^|]*)\|"
)


@dataclass(frozen=True)
class ReasonWords:
    code: str
    meaning: str
    action: str


@functools.cache
def _table(path: Path = DOCUMENT) -> dict[str, ReasonWords]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return {}
    table = {}
    for line in lines:
        match = _ROW.match(line)
        if match:
            code = match["code"]
            table[code] = ReasonWords(
                code, match["meaning"].strip().replace("`", ""), match["action"].strip().replace("`", "")
            )
    return table


def words_for(code: str | None) -> ReasonWords | None:
    return _table().get(code) if code else None
