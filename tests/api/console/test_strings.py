"""The console's one catalogue of labels: every label in English, Russian and Tajik, every label a
template asks for present, the language chosen as a person would expect; reason words from the doc."""

from __future__ import annotations

import re
from pathlib import Path

from starlette.requests import Request

from broker.api.console.pages import TEMPLATES, language_of
from broker.api.console.reasons import words_for
from broker.api.console.strings import LANGUAGES, STRINGS, text
from broker.core.catalogue.death import ResponsibleParty
from broker.core.catalogue.wording import in_words
from broker.core.errors import Reason

LABEL_USE = re.compile(r"""\bt\(\s*["']([a-z_.]+)["']\s*\)""")
DYNAMIC_PREFIXES = ("role.", "type.")  # built as "role." ~ viewer.role: checked below by their values


def test_every_label_has_all_three_languages_and_each_is_written() -> None:
    for label, row in STRINGS.items():
        assert len(row) == len(LANGUAGES), label
        assert all(word.strip() for word in row), label
    # Not a copy of English: Russian and Tajik are written in Cyrillic.
    assert all(re.search("[А-Яа-яҲҳҶҷӢӣӮӯҚқҒғ]", STRINGS[label][1]) for label in ("overview", "alerts"))
    assert text("alerts", "tg") == "Огоҳиҳо"
    assert text("alerts", "xx") == "Alerts"  # an unknown language falls back to English


def test_every_label_a_template_uses_is_in_the_catalogue() -> None:
    used = set()
    for template in Path(TEMPLATES).rglob("*.html"):
        used |= set(LABEL_USE.findall(template.read_text(encoding="utf-8")))
    assert used, "the templates use labels"
    assert sorted(used - set(STRINGS)) == []
    for role in ("operator", "auditor", "consulate"):
        assert f"role.{role}" in STRINGS
    for message_type in ("worker.death", "work_permit.cancellation"):
        assert f"type.{message_type}" in STRINGS


def test_responsible_parties_are_worded_in_every_language() -> None:
    for party in ResponsibleParty:
        words = {in_words("responsible_party", party, language=language) for language in LANGUAGES}
        assert len(words) == len(LANGUAGES), party
        assert party.value not in words


def _request(query: str = "", cookie: str = "", accept: str = "") -> Request:
    headers = []
    if cookie:
        headers.append((b"cookie", f"console_lang={cookie}".encode()))
    if accept:
        headers.append((b"accept-language", accept.encode()))
    return Request(
        {
            "type": "http",
            "method": "GET",
            "path": "/console",
            "query_string": query.encode(),
            "headers": headers,
        }
    )


def test_the_language_is_the_query_then_the_cookie_then_the_browsers_then_english() -> None:
    assert language_of(_request("lang=tg", cookie="ru", accept="en")) == "tg"
    assert language_of(_request(cookie="ru", accept="tg")) == "ru"
    assert language_of(_request(accept="de-DE,tg;q=0.8,ru;q=0.5")) == "tg"
    assert language_of(_request("lang=xx", cookie="yy", accept="de")) == "en"


def test_reason_words_come_from_the_reason_codes_document() -> None:
    for reason in Reason:
        found = words_for(str(reason))
        assert found is not None, reason
        assert found.meaning
        assert found.action
    assert words_for("no.such_code") is None
