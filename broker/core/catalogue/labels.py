"""Human-readable labels of the catalogue in the languages of the parties: English, Russian, Tajik
(Cyrillic) and Uzbek (Latin script, with the letters oʻ and gʻ written with U+02BB as the 1995
alphabet does), and a line describing a legislation change or a labour-market report in any of them.

Which language a person reads is decided where the text is shown (`language_for_peer`): an alert about
a message from Uzbekistan is worded in Uzbek, as the exchange with Uzbekistan is (issue 20). Codes stay
what machines route on; these only stand beside them. A code without a label shows as the code.
"""

from __future__ import annotations

from broker.core.catalogue.base import Payload
from broker.core.catalogue.labour_market import IndicatorCode, LabourMarketReport
from broker.core.catalogue.legislation import LegislationArea, LegislationChange

LANGUAGES = ("en", "ru", "tg", "uz")

# The language alerts about a peer's messages are worded in, where it is not English (the default
# of the consular terminal so far): Uzbekistan's, in the exchange under the TJ-UZ plan.
PEER_LANGUAGES = {"UZ": "uz"}

LABELS: dict[str, dict[str, dict[str, str]]] = {
    "message_type": {
        "legislation.change": {
            "en": "Change in legislation",
            "ru": "Изменение законодательства",
            "tg": "Тағйир дар қонунгузорӣ",
            "uz": "Qonunchilikdagi oʻzgarish",
        },
        "labour_market.report": {
            "en": "Labour-market report",
            "ru": "Отчёт о рынке труда",
            "tg": "Ҳисобот оид ба бозори меҳнат",
            "uz": "Mehnat bozori toʻgʻrisida hisobot",
        },
        "employer.permit": {
            "en": "Employer permitted to hire foreign workers",
            "ru": "Разрешение работодателю на привлечение иностранных работников",
            "tg": "Иҷозат ба корфармо барои ҷалби коргарони хориҷӣ",
            "uz": "Ish beruvchiga chet ellik xodimlarni jalb qilish uchun ruxsat",
        },
        "recruitment_agency.license": {
            "en": "Licensed recruitment agency",
            "ru": "Лицензия агентства по трудоустройству за рубежом",
            "tg": "Иҷозатномаи агентии бакоргуморӣ дар хориҷа",
            "uz": "Xorijda ishga joylashtirish agentligi litsenziyasi",
        },
        "work_permit.cancellation": {
            "en": "Work permit cancelled",
            "ru": "Аннулирование разрешения на работу",
            "tg": "Бекор кардани иҷозатномаи корӣ",
            "uz": "Ishlash uchun ruxsatnomaning bekor qilinishi",
        },
        "worker.death": {
            "en": "Death of a migrant worker",
            "ru": "Смерть трудящегося-мигранта",
            "tg": "Фавти муҳоҷири меҳнатӣ",
            "uz": "Mehnat muhojirining vafoti",
        },
    },
    "area": {
        LegislationArea.LABOUR: {"en": "labour", "ru": "труд", "tg": "меҳнат", "uz": "mehnat"},
        LegislationArea.EMPLOYMENT: {"en": "employment", "ru": "занятость", "tg": "шуғл", "uz": "bandlik"},
        LegislationArea.EMIGRATION: {"en": "emigration", "ru": "эмиграция", "tg": "эмигратсия", "uz": "emigratsiya"},
        LegislationArea.IMMIGRATION: {
            "en": "immigration", "ru": "иммиграция", "tg": "иммигратсия", "uz": "immigratsiya",
        },
    },
    "indicator": {
        IndicatorCode.VACANCIES: {
            "en": "vacancies", "ru": "вакансии", "tg": "ҷойҳои холии корӣ", "uz": "boʻsh ish oʻrinlari",
        },
        IndicatorCode.FOREIGN_WORKERS: {
            "en": "foreign workers", "ru": "иностранные работники", "tg": "коргарони хориҷӣ",
            "uz": "chet ellik xodimlar",
        },
        IndicatorCode.WORK_PERMITS_ISSUED: {
            "en": "work permits issued", "ru": "выдано разрешений на работу",
            "tg": "иҷозатномаҳои кории додашуда", "uz": "berilgan ishlash uchun ruxsatnomalar",
        },
        IndicatorCode.REGISTERED_UNEMPLOYED: {
            "en": "registered unemployed", "ru": "зарегистрированные безработные",
            "tg": "бекорони бақайдгирифташуда", "uz": "roʻyxatga olingan ishsizlar",
        },
        IndicatorCode.UNEMPLOYMENT_RATE: {
            "en": "unemployment rate", "ru": "уровень безработицы", "tg": "сатҳи бекорӣ",
            "uz": "ishsizlik darajasi",
        },
        IndicatorCode.AVERAGE_MONTHLY_WAGE: {
            "en": "average monthly wage", "ru": "средняя месячная заработная плата",
            "tg": "музди миёнаи моҳона", "uz": "oʻrtacha oylik ish haqi",
        },
    },
    "phrase": {
        "adopted": {"en": "adopted", "ru": "принят", "tg": "қабул шудааст", "uz": "qabul qilingan"},
        "in_force": {"en": "in force from", "ru": "вступает в силу", "tg": "эътибор пайдо мекунад", "uz": "kuchga kiradi"},
        "areas": {"en": "areas", "ru": "сферы", "tg": "соҳаҳо", "uz": "sohalar"},
        "period": {"en": "period", "ru": "период", "tg": "давра", "uz": "davr"},
        "regions": {"en": "regions", "ru": "регионы", "tg": "минтақаҳо", "uz": "hududlar"},
        "sender": {"en": "sender", "ru": "отправитель", "tg": "ирсолкунанда", "uz": "joʻnatuvchi"},
    },
}  # fmt: skip


def label(table: str, code: str, language: str) -> str:
    """The label of `code` in `language`; the English one, else the code, where there is none."""
    words = LABELS.get(table, {}).get(code, {})
    return words.get(language) or words.get("en") or code


def language_for_peer(country: str) -> str:
    """The language alerts about `country`'s messages are worded in."""
    return PEER_LANGUAGES.get(country, "en")


def describe(payload: Payload, *, sender: str, language: str) -> str | None:
    """One line about a legislation change or a labour-market report in `language`; None for other
    types (their alerts have wording of their own). Values (titles, names) stay as the sender wrote."""

    def say(key: str) -> str:
        return label("phrase", key, language)

    heading = label("message_type", payload.MESSAGE_TYPE, language)
    if isinstance(payload, LegislationChange):
        areas = ", ".join(label("area", area, language) for area in payload.areas)
        return (
            f"{heading}: {payload.act_title} № {payload.act_number} ({payload.issuing_body}); "
            f"{say('adopted')}: {payload.adoption_date}; {say('in_force')}: {payload.effective_date}; "
            f"{say('areas')}: {areas}; {say('sender')}: {sender}"
        )
    if isinstance(payload, LabourMarketReport):
        figures = "; ".join(
            f"{label('indicator', item.code, language)}"
            + (f" ({item.region})" if item.region else "")
            + f": {item.value} {item.unit}"
            for item in payload.indicators
        )
        return (
            f"{heading}: {say('period')}: {payload.period_start} – {payload.period_end}; "
            f"{say('regions')}: {', '.join(payload.regions)}; {figures}; {say('sender')}: {sender}"
        )
    return None
