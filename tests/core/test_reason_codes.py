"""docs/reason-codes.md and the `Reason` enum list the same codes, each with every column filled in."""

from __future__ import annotations

import re
from pathlib import Path

from broker.core.errors import Reason

DOC = Path(__file__).resolve().parents[2] / "docs" / "reason-codes.md"
_ROW = re.compile(r"^\|\s*`(?P<code>[^`]+)`\s*\|(?P<rest>.*)\|\s*$")
_COLUMNS = ("meaning", "raised by", "what an operator does")


def _rows() -> list[tuple[str, list[str]]]:
    rows = []
    for line in DOC.read_text(encoding="utf-8").splitlines():
        match = _ROW.match(line)
        if match:
            cells = [cell.strip() for cell in match.group("rest").split(" | ")]
            rows.append((match.group("code"), cells))
    return rows


def test_every_code_of_the_enum_is_documented_and_nothing_else() -> None:
    documented = [code for code, _ in _rows()]
    assert len(documented) == len(set(documented)), "a code is documented twice"
    enum_codes = {reason.value for reason in Reason}
    assert set(documented) - enum_codes == set(), "documented codes that Reason does not define"
    assert enum_codes - set(documented) == set(), "codes of Reason missing from docs/reason-codes.md"


def test_every_row_says_what_it_means_who_raises_it_and_what_to_do() -> None:
    for code, cells in _rows():
        assert len(cells) == len(_COLUMNS), f"{code}: expected {len(_COLUMNS)} columns, got {cells}"
        for column, cell in zip(_COLUMNS, cells, strict=True):
            assert len(cell) > 10, f"{code}: the {column!r} column is empty or too short"
