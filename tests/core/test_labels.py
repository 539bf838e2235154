"""Labels of the catalogue in English, Russian, Tajik and Uzbek (Latin script) (issue 20)."""

from __future__ import annotations

import re

import pytest

from broker.core.catalogue.labels import LABELS, LANGUAGES, label
from broker.core.catalogue.labour_market import IndicatorCode
from broker.core.catalogue.legislation import LegislationArea

CYRILLIC = re.compile(r"[\u0400-\u04ff]")
# Uzbek Latin: the 1995 alphabet's letters, oʻ and gʻ with U+02BB, and the separator sign U+02BC.
UZBEK_LATIN = re.compile(r"^[A-Za-z\u02bb\u02bc ,()-]+$")
NOTIFICATIONS = (
    "legislation.change", "labour_market.report", "employer.permit", "recruitment_agency.license",
    "work_permit.cancellation", "worker.death",
)  # fmt: skip


@pytest.mark.parametrize(
    ("table", "codes"),
    [("message_type", NOTIFICATIONS), ("area", tuple(LegislationArea)), ("indicator", tuple(IndicatorCode))],
)
def test_every_code_has_a_label_in_every_language(table: str, codes: tuple[str, ...]) -> None:
    for code in codes:
        words = LABELS[table][code]
        assert tuple(words) == LANGUAGES, f"{table} {code}: {sorted(words)}"
        assert all(words[language].strip() for language in LANGUAGES)


def test_uzbek_is_latin_and_russian_and_tajik_are_cyrillic() -> None:
    for table in LABELS.values():
        for code, words in table.items():
            assert UZBEK_LATIN.fullmatch(words["uz"]), f"{code}: {words['uz']!r} is not Uzbek Latin"
            assert "'" not in words["uz"]  # oʻ and gʻ take U+02BB, not an apostrophe
            assert CYRILLIC.search(words["ru"]), code
            assert CYRILLIC.search(words["tg"]), code
            assert not CYRILLIC.search(words["en"]), code


def test_a_missing_label_falls_back_to_english_then_to_the_code() -> None:
    assert label("message_type", "legislation.change", "kk") == "Change in legislation"
    assert label("indicator", "made_up_code", "uz") == "made_up_code"
