"""The ministry's two registries as exported rows: licensed recruitment agencies, permitted employers.

A registry export is a full snapshot: one row per licence or permission, with its current state
(active, suspended, revoked). Column headers are Tajik or Russian; so are the words in the state and
legal-form columns. Dates are ISO (2025-03-01) or as spreadsheets write them (01.03.2025).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from adapters.base import AdapterError
from adapters.tj.labels import Language, normal
from broker.core.catalogue import Payload, parse_payload
from broker.core.catalogue.base import PartyKind
from broker.core.catalogue.employer import EmployerPermit, PermissionStatus
from broker.core.catalogue.recruitment import RecruitmentAgencyLicense
from broker.core.errors import Reason, ValidationError

TJ_MINISTRY = "Вазорати меҳнат, муҳоҷират ва шуғли аҳолии Ҷумҳурии Тоҷикистон"
ROW_NUMBER = ("№", "№ п/п", "№ т/р")  # spreadsheets number their rows; the column carries nothing

E = TypeVar("E")
Fail = Callable[[str], AdapterError]


@dataclass(frozen=True)
class Column:
    key: str
    tajik: str
    russian: str
    required: bool = True  # the column must be present (a cell may still be empty if the model allows)

    def header(self, language: Language) -> str:
        return self.tajik if language is Language.TAJIK else self.russian


@dataclass(frozen=True)
class Registry:
    message_type: str
    number_field: str  # the payload field that identifies an entry across exports
    party_field: str
    columns: tuple[Column, ...]

    def number_of(self, payload: Payload) -> str:
        return str(getattr(payload, self.number_field))


def _shared(name_tajik: str, name_russian: str) -> tuple[Column, ...]:
    return (
        Column("name", name_tajik, name_russian),
        Column("kind", "Шакли ташкилию ҳуқуқӣ", "Организационно-правовая форма"),
        Column("tax_id", "РМА", "ИНН"),
        Column("region", "Минтақа", "Регион"),
        Column("issuing_authority", "Мақоми додашуда", "Выдавший орган", required=False),
        Column("valid_from", "Санаи эътибор аз", "Действует с"),
        Column("valid_until", "Санаи эътибор то", "Действует по"),
        Column("state", "Ҳолат", "Статус"),
    )


AGENCIES = Registry(
    message_type=RecruitmentAgencyLicense.MESSAGE_TYPE,
    number_field="license_number",
    party_field="agency",
    columns=(
        Column("number", "Рақами иҷозатнома", "Номер лицензии"),
        *_shared("Номи агентӣ", "Наименование агентства"),
    ),
)
EMPLOYERS = Registry(
    message_type=EmployerPermit.MESSAGE_TYPE,
    number_field="permit_number",
    party_field="employer",
    columns=(
        Column("number", "Рақами иҷозат", "Номер разрешения"),
        *_shared("Номи корфармо", "Наименование работодателя"),
        Column("quota", "Квота", "Квота", required=False),
    ),
)
REGISTRIES = (AGENCIES, EMPLOYERS)

STATE_WORDS: Mapping[PermissionStatus, tuple[str, str, tuple[str, ...]]] = {
    # status sent for the row: (Tajik, Russian, other spellings accepted)
    PermissionStatus.GRANTED: ("амалкунанда", "действует", ("active", "фаъол", "действующая", "действующее")),
    PermissionStatus.SUSPENDED: ("боздошташуда", "приостановлено", ("suspended", "приостановлена")),
    PermissionStatus.REVOKED: (
        "бекоршуда",
        "отозвано",
        ("revoked", "отозвана", "аннулировано", "аннулирована"),
    ),
}
KIND_WORDS: Mapping[PartyKind, tuple[str, str, tuple[str, ...]]] = {
    PartyKind.LEGAL_ENTITY: ("шахси ҳуқуқӣ", "юридическое лицо", ("legal_entity", "юл")),
    PartyKind.INDIVIDUAL_ENTREPRENEUR: (
        "соҳибкори инфиродӣ",
        "индивидуальный предприниматель",
        ("individual_entrepreneur", "ип"),
    ),
    PartyKind.INDIVIDUAL: ("шахси воқеӣ", "физическое лицо", ("individual",)),
}


@dataclass(frozen=True)
class Row:
    line: int
    cells: Mapping[str, object]  # header as written → value


def registry_of(headers: Sequence[str]) -> Registry | None:
    """The registry whose identifying column is among the headers (None: not a registry export)."""
    present = {normal(header) for header in headers}
    for registry in REGISTRIES:
        number = registry.columns[0]
        if normal(number.tajik) in present or normal(number.russian) in present:
            return registry
    return None


def read_rows(
    registry: Registry, headers: Sequence[str], rows: Sequence[Row], *, filename: str
) -> list[Payload]:
    """Every row as a payload whose status is the row's state (active rows say `granted`)."""
    columns = _map_columns(registry, headers, filename=filename)
    payloads: list[Payload] = []
    seen: dict[str, int] = {}
    for row in rows:
        values = {columns[normal(h)]: v for h, v in row.cells.items() if normal(h) in columns}
        if not any(_text(value) for value in values.values()):
            continue  # blank spreadsheet row
        payload = _payload(registry, values, filename=filename, line=row.line)
        number = registry.number_of(payload)
        if number in seen:
            raise AdapterError(
                Reason.ADAPTER_INVALID,
                f"number {number} is listed twice (first on line {seen[number]})",
                filename=filename,
                line=row.line,
            )
        seen[number] = row.line
        payloads.append(payload)
    return payloads


def render_row(registry: Registry, payload: Payload, language: Language) -> dict[str, str]:
    """A registry row (the Tajik spreadsheet form) of a licence or permission: used for samples."""
    data = payload.model_dump(mode="json")
    party = data[registry.party_field]
    index = 0 if language is Language.TAJIK else 1
    state = PermissionStatus(data["status"])
    row_state = PermissionStatus.GRANTED if state is PermissionStatus.RENEWED else state
    values = {
        "number": data[registry.number_field],
        "name": party["name"],
        "kind": KIND_WORDS[PartyKind(party["kind"])][index],
        "tax_id": party["tax_id"],
        "region": party["region"],
        "issuing_authority": data["issuing_authority"],
        "valid_from": data["valid_from"],
        "valid_until": data.get("valid_until") or "",
        "state": STATE_WORDS[row_state][index],
        "quota": "" if data.get("quota") is None else str(data["quota"]),
    }
    return {column.header(language): str(values[column.key]) for column in registry.columns}


def _map_columns(registry: Registry, headers: Sequence[str], *, filename: str) -> dict[str, str]:
    """normal(header) → column key; refuses unknown and missing columns (reported on line 1)."""
    by_header: dict[str, str] = {}
    for column in registry.columns:
        by_header[normal(column.tajik)] = column.key
        by_header[normal(column.russian)] = column.key
    language = _language(registry, headers)
    found: dict[str, str] = {}
    for header in headers:
        key = normal(header)
        if key in (normal(n) for n in ROW_NUMBER) or not key:
            continue
        if key not in by_header:
            raise AdapterError(
                Reason.ADAPTER_INVALID, f"unknown column «{header.strip()}»", filename=filename, line=1
            )
        if by_header[key] in found.values():
            raise AdapterError(
                Reason.ADAPTER_INVALID, f"column «{header.strip()}» repeated", filename=filename, line=1
            )
        found[key] = by_header[key]
    missing = [c.header(language) for c in registry.columns if c.required and c.key not in found.values()]
    if missing:
        raise AdapterError(
            Reason.ADAPTER_INVALID,
            "missing column " + ", ".join(f"«{name}»" for name in missing),
            filename=filename,
            line=1,
        )
    return found


def _language(registry: Registry, headers: Sequence[str]) -> Language:
    number = registry.columns[0]
    present = {normal(header) for header in headers}
    return Language.TAJIK if normal(number.tajik) in present else Language.RUSSIAN


def _payload(registry: Registry, values: Mapping[str, object], *, filename: str, line: int) -> Payload:
    def where(message: str) -> AdapterError:
        return AdapterError(Reason.ADAPTER_INVALID, message, filename=filename, line=line)

    until = _text(values.get("valid_until"))
    quota = _text(values.get("quota"))
    data: dict[str, object] = {
        registry.number_field: _text(values.get("number")),
        "issuing_authority": _text(values.get("issuing_authority")) or TJ_MINISTRY,
        registry.party_field: {
            "kind": _word(KIND_WORDS, values.get("kind"), what="legal form", fail=where).value,
            "name": _text(values.get("name")),
            "tax_id": _text(values.get("tax_id")),
            "region": _text(values.get("region")),
        },
        "status": _word(STATE_WORDS, values.get("state"), what="state", fail=where).value,
        "valid_from": _date(values.get("valid_from"), fail=where),
        "valid_until": _date(until, fail=where) if until else None,
    }
    if registry is EMPLOYERS and quota:
        try:
            data["quota"] = int(quota)
        except ValueError:
            raise where(f"quota «{quota}» is not a whole number") from None
    try:
        return parse_payload(registry.message_type, 1, json.dumps(data, ensure_ascii=False).encode("utf-8"))
    except ValidationError as error:
        raise AdapterError.wrap(error, filename=filename, line=line) from None


def _text(value: object) -> str:
    if value is None:
        return ""
    return str(value).strip()


def _word(words: Mapping[E, tuple[str, str, tuple[str, ...]]], value: object, *, what: str, fail: Fail) -> E:
    text = normal(_text(value))
    for meaning, (tajik, russian, others) in words.items():
        if text in {normal(tajik), normal(russian), *(normal(other) for other in others)}:
            return meaning
    known = ", ".join(f"«{tajik}»/«{russian}»" for tajik, russian, _ in words.values())
    raise fail(f"unknown {what} «{_text(value)}»; expected one of {known}")


def _date(value: object, *, fail: Fail) -> str:
    text = _text(value)
    for pattern in ("%Y-%m-%d", "%d.%m.%Y"):
        try:
            return datetime.strptime(text, pattern).date().isoformat()
        except ValueError:
            continue
    if not text:
        raise fail("a date is missing")
    raise fail(f"«{text}» is not a date (YYYY-MM-DD or DD.MM.YYYY) that exists")
