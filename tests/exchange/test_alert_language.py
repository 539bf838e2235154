"""Alerts about Uzbekistan's messages are worded in Uzbek (Latin script); others stay English unless
another language is asked for (issue 20)."""

from __future__ import annotations

from datetime import UTC, datetime

from broker.core.catalogue import sample_payloads
from broker.core.catalogue.labels import describe, language_for_peer
from broker.core.ids import uuid7
from broker.exchange.subscriber import Alert


def _alert(message_type: str, sender: str) -> Alert:
    return Alert(
        message_id=uuid7(),
        message_type=message_type,
        sender=sender,
        recipient="TJ-MOL",
        created_at=datetime.now(UTC),
        citizenship=None,
        payload=sample_payloads()[message_type],
        raw=b"{}",
    )


def test_an_alert_about_uzbekistans_message_is_worded_in_uzbek() -> None:
    law = _alert("legislation.change", "UZ-MEHNAT").headline()
    assert law.startswith("Qonunchilikdagi oʻzgarish: ")
    assert "qabul qilingan: " in law
    assert "kuchga kiradi: " in law
    assert "joʻnatuvchi: UZ-MEHNAT" in law
    report = _alert("labour_market.report", "UZ-MEHNAT").headline()
    assert report.startswith("Mehnat bozori toʻgʻrisida hisobot: davr: ")
    assert "boʻsh ish oʻrinlari (RU-MOW): 215000 persons" in report


def test_other_peers_alerts_stay_english_and_any_language_can_be_asked_for() -> None:
    assert language_for_peer("RU") == "en"
    assert _alert("legislation.change", "RU-MINTRUD").headline().startswith("Change in legislation: ")
    tajik = _alert("legislation.change", "RU-MINTRUD").headline(language="tg")
    assert tajik.startswith("Тағйир дар қонунгузорӣ: ")
    assert "соҳаҳо: " in tajik
    assert (
        _alert("labour_market.report", "UZ-MEHNAT").headline(language="ru").startswith("Отчёт о рынке труда")
    )
    # Deaths keep their own wording (Art. 15), whoever sends them.
    assert _alert("worker.death", "RU-MVD").headline().startswith("Death of ")
    assert describe(sample_payloads()["worker.death"], sender="RU-MVD", language="uz") is None
