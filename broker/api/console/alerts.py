"""A consulate's alerts: death notices and permit cancellations about its country's nationals.

The log is the source; `ConsoleStore` keeps an index of which received entries are alerts about
whose nationals (by the worker's citizenship, read once from the opened payload), caught up with
the log on each visit. A consulate sees only its own country's nationals, and only its own
"handled" marks. A payload whose data key was erased shows as erased, never as a guess.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from uuid import UUID

from broker.api.console.store import ConsoleStore, Handled
from broker.api.models import ReceivedMessage
from broker.api.records import Records
from broker.audit.entry import AuditEntry, EntryKind
from broker.audit.stores.proving import entries_of

ALERT_TYPES = ("worker.death", "work_permit.cancellation")
# Log rows read to catch the index up in one visit; a longer backlog is read over the next visits.
CATCH_UP_ROWS = 50_000
UNKNOWN_CITIZENSHIP = "-"


@dataclass(frozen=True)
class Alert:
    message_id: UUID
    message_type: str
    received_at: datetime
    audit_index: int
    payload_state: str
    worker: str
    document: str
    event_date: str
    departure_deadline: date | None
    responsible_party: str | None
    handled: Handled | None

    def days_left(self, today: date) -> int | None:
        return None if self.departure_deadline is None else (self.departure_deadline - today).days


def _citizenship(item: ReceivedMessage) -> str:
    worker = (item.payload or {}).get("worker")
    citizenship = worker.get("citizenship") if isinstance(worker, dict) else None
    return str(citizenship) if citizenship else UNKNOWN_CITIZENSHIP


def _worker_line(worker: Any) -> tuple[str, str]:
    if not isinstance(worker, dict):
        return "", ""
    name = f"{worker.get('surname_cyrillic', '')} {worker.get('given_names_cyrillic', '')}".strip()
    latin = f"{worker.get('surname_latin', '')} {worker.get('given_names_latin', '')}".strip()
    document = worker.get("identity_document")
    number = str(document.get("number", "")) if isinstance(document, dict) else ""
    return (f"{name} ({latin})" if latin else name), number


class Alerts:
    def __init__(self, *, records: Records, store: ConsoleStore) -> None:
        self._records = records
        self._store = store

    async def catch_up(self) -> None:
        """Index the alerts the log received since the last visit."""
        cursor = await self._store.alert_cursor()
        position = cursor
        candidates: list[AuditEntry] = []
        async with self._records.log() as source:
            async for row in source.rows(cursor):
                position = row.index + 1
                if (
                    isinstance(row, AuditEntry)
                    and row.kind is EntryKind.RECEIVED
                    and row.message_type in ALERT_TYPES
                ):
                    candidates.append(row)
                if position - cursor >= CATCH_UP_ROWS:
                    break
        if position == cursor:
            return
        opened = await self._records.open_received(candidates)
        found = [(item.audit_index, item.message_id, item.type, _citizenship(item)) for item in opened]
        await self._store.add_alerts(found, position=position)

    async def page(self, *, consulate: str, country: str, before: int | None, limit: int) -> list[Alert]:
        await self.catch_up()
        listed = await self._store.alerts(country, before=before, limit=limit)
        entries: list[AuditEntry] = []
        async with self._records.log() as source:
            for _, message_id in listed:
                entries += (await entries_of(source, kind=EntryKind.RECEIVED, message_id=message_id))[:1]
        opened = await self._records.open_received(entries)
        handled = await self._store.handled(consulate, [item.message_id for item in opened])
        return [self._alert(item, handled.get(item.message_id)) for item in opened]

    async def is_alert_for(self, message_id: UUID, *, country: str) -> bool:
        await self.catch_up()
        return await self._store.citizenship_of(message_id) == country

    @staticmethod
    def _alert(item: ReceivedMessage, handled: Handled | None) -> Alert:
        payload = item.payload or {}
        worker, document = _worker_line(payload.get("worker"))
        deadline = payload.get("departure_deadline")
        party = payload.get("responsible_party")
        event = payload.get("date_of_death") or payload.get("decision_date") or ""
        return Alert(
            message_id=item.message_id,
            message_type=item.type,
            received_at=item.received_at,
            audit_index=item.audit_index,
            payload_state=item.payload_state,
            worker=worker,
            document=document,
            event_date=str(event),
            departure_deadline=date.fromisoformat(deadline) if isinstance(deadline, str) else None,
            responsible_party=str(party) if party else None,
            handled=handled,
        )
