"""Coded values of the catalogue in words, for people: the consul's terminal, rendered alerts, pages.

Codes stay what machines route on; these are what a person reads beside them. One table per coded
field, keyed by language (`en`, and `ru` and `tg` where the console shows them to a consul).
"""

from __future__ import annotations

from broker.core.catalogue.death import ResponsibleParty, WorkerCategory
from broker.core.catalogue.work_permit import CancellationReason

WORDS: dict[str, dict[str, dict[str, str]]] = {
    "category": {
        WorkerCategory.A_WORKS_CONTRACT: {
            "en": "employed by a home-state legal entity under a works contract (Art. 2 a)"
        },
        WorkerCategory.B_CIVIL_LAW_CONTRACT: {
            "en": "civil-law contract with a customer in the host state (Art. 2 b)"
        },
        WorkerCategory.C_EMPLOYMENT_CONTRACT: {
            "en": "employment contract with a host-state employer (Art. 2 c)"
        },
    },
    "responsible_party": {
        ResponsibleParty.HOME_STATE_EMPLOYER: {
            "en": "the home-state employer (Art. 15.1)",
            "ru": "работодатель государства постоянного проживания (ст. 15.1)",
            "tg": "корфармои давлати истиқомати доимӣ (моддаи 15.1)",
        },
        ResponsibleParty.HOST_STATE_CUSTOMER: {
            "en": "the customer in the host state (Art. 15.2)",
            "ru": "заказчик в государстве трудоустройства (ст. 15.2)",
            "tg": "фармоишгар дар давлати қабулкунанда (моддаи 15.2)",
        },
        ResponsibleParty.HOST_STATE_EMPLOYER: {
            "en": "the host-state employer (Art. 15.3)",
            "ru": "работодатель государства трудоустройства (ст. 15.3)",
            "tg": "корфармои давлати қабулкунанда (моддаи 15.3)",
        },
    },
    "reason": {
        CancellationReason.ART12_2_OTHER_PAID_WORK: {
            "en": "other paid work than the permit allows (Art. 12.2)"
        },
        CancellationReason.ART12_2_UNAUTHORISED_CHANGE_OF_EMPLOYER: {
            "en": "change of employer without permission (Art. 12.2)"
        },
        CancellationReason.OTHER: {"en": "a ground of the host state's law"},
    },
}


def in_words(field: str, code: str, *, language: str = "en") -> str:
    """The words for `code` of `field`; the code itself where the table has none (never a KeyError)."""
    return WORDS.get(field, {}).get(code, {}).get(language, code)
