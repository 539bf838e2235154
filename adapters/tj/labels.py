"""Tajik and Russian labels of the canonical fields, and the words of the registry columns.

Tajik ministry staff read and type these files, so keys and column headers are words of their
language, never the catalogue's English field names. One label names one field wherever the field
occurs (a `region` is «Минтақа» in a party, an address or an indicator); the reverse lookup is
checked to be unambiguous when this module loads.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType


class Language(StrEnum):
    TAJIK = "tg"
    RUSSIAN = "ru"


TYPE_LABEL = {Language.TAJIK: "Навъи паём", Language.RUSSIAN: "Тип сообщения"}

# canonical field name: (Tajik, Russian)
_FIELDS: dict[str, tuple[str, str]] = {
    # legislation.change
    "act_title": ("Номи санад", "Наименование акта"),
    "act_number": ("Рақами санад", "Номер акта"),
    "issuing_body": ("Мақоми қабулкунанда", "Принявший орган"),
    "adoption_date": ("Санаи қабул", "Дата принятия"),
    "effective_date": ("Санаи эътибор пайдо кардан", "Дата вступления в силу"),
    "areas": ("Соҳаҳо", "Сферы"),
    "summary": ("Мухтасар", "Краткое содержание"),
    "language": ("Забон", "Язык"),
    "document": ("Ҳуҷҷат", "Документ"),
    # attachments
    "media_type": ("Навъи файл", "Тип файла"),
    "sha256": ("SHA-256", "SHA-256"),
    "size": ("Андоза (байт)", "Размер (байт)"),
    "content_base64": ("Мундариҷа (base64)", "Содержимое (base64)"),
    # employer.permit and recruitment_agency.license
    "permit_number": ("Рақами иҷозат", "Номер разрешения"),
    "license_number": ("Рақами иҷозатнома", "Номер лицензии"),
    "issuing_authority": ("Мақоми додашуда", "Выдавший орган"),
    "employer": ("Корфармо", "Работодатель"),
    "agency": ("Агентии хусусии шуғл", "Частное агентство занятости"),
    "status": ("Ҳолат", "Статус"),
    "valid_from": ("Санаи эътибор аз", "Действует с"),
    "valid_until": ("Санаи эътибор то", "Действует по"),
    "quota": ("Квота", "Квота"),
    # parties
    "kind": ("Шакли ташкилию ҳуқуқӣ", "Организационно-правовая форма"),
    "name": ("Ном", "Наименование"),
    "tax_id": ("РМА", "ИНН"),
    "region": ("Минтақа", "Регион"),
    # labour_market.report
    "period_start": ("Оғози давра", "Начало периода"),
    "period_end": ("Анҷоми давра", "Конец периода"),
    "regions": ("Минтақаҳо", "Регионы"),
    "indicators": ("Нишондиҳандаҳо", "Показатели"),
    "code": ("Рамз", "Код"),
    "value": ("Қимат", "Значение"),
    "unit": ("Воҳиди ченак", "Единица измерения"),
    "living_conditions": ("Шароити зиндагӣ", "Условия проживания"),
    # work_permit.cancellation
    "worker": ("Корманд", "Работник"),
    "permit": ("Иҷозати кор", "Разрешение на работу"),
    "decision_date": ("Санаи қарор", "Дата решения"),
    "decision_authority": ("Мақоми қарорбароварда", "Орган, принявший решение"),
    "reason": ("Асос", "Основание"),
    "reason_text": ("Шарҳи асос", "Пояснение к основанию"),
    "departure_deadline": ("Мӯҳлати баромадан", "Срок выезда"),
    "number": ("Рақам", "Номер"),
    "issue_date": ("Санаи додан", "Дата выдачи"),
    "expiry_date": ("Санаи анҷоми эътибор", "Дата окончания действия"),
    # workers and their documents
    "surname_cyrillic": ("Насаб (кириллӣ)", "Фамилия (кириллица)"),
    "given_names_cyrillic": ("Ном ва номи падар (кириллӣ)", "Имя и отчество (кириллица)"),
    "surname_latin": ("Насаб (лотинӣ)", "Фамилия (латиница)"),
    "given_names_latin": ("Ном (лотинӣ)", "Имя (латиница)"),
    "date_of_birth": ("Санаи таваллуд", "Дата рождения"),
    "citizenship": ("Шаҳрвандӣ", "Гражданство"),
    "identity_document": ("Ҳуҷҷати шахсият", "Документ, удостоверяющий личность"),
    "type": ("Навъ", "Вид"),
    "issuer": ("Кӣ додааст", "Кем выдан"),
    # worker.death
    "date_of_death": ("Санаи фавт", "Дата смерти"),
    "place_of_death": ("Ҷои фавт", "Место смерти"),
    "registration_address": ("Суроғаи бақайдгирӣ", "Адрес регистрации"),
    "category": ("Категория (моддаи 2)", "Категория (статья 2)"),
    "responsible_party": ("Тарафи масъул (моддаи 15)", "Ответственная сторона (статья 15)"),
    "work_related": ("Марбут ба кор", "Связано с работой"),
    "compensation_office": ("Намояндагии пардохти ҷуброн", "Представительство для выплаты компенсации"),
    "attachments": ("Замимаҳо", "Приложения"),
    "locality": ("Маҳал", "Населённый пункт"),
    "street_address": ("Суроға", "Адрес"),
    "of_state": ("Давлати намояндагӣ", "Государство представительства"),
    "located_in": ("Давлати ҷойгиршавӣ", "Государство пребывания"),
    "city": ("Шаҳр", "Город"),
}


def label(field: str, language: Language) -> str:
    tajik, russian = _FIELDS[field]
    return tajik if language is Language.TAJIK else russian


def _reverse() -> Mapping[str, str]:
    fields: dict[str, str] = {}
    for field, names in _FIELDS.items():
        for name in names:
            key = normal(name)
            if fields.setdefault(key, field) != field:
                raise AssertionError(f"label {name!r} names both {fields[key]} and {field}")
    return MappingProxyType(fields)


def normal(text: str) -> str:
    """How labels and words are compared: case, surrounding space and ё/е do not matter."""
    return " ".join(text.split()).casefold().replace("ё", "е")


FIELD_OF_LABEL = _reverse()
TYPE_LABELS = frozenset(normal(name) for name in TYPE_LABEL.values())
