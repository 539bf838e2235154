"""Incremental sync of registry exports: send the partner only what changed since the last export.

The state is what the partner was last told about each licence or permission (the payload as sent),
in a small SQLite file in the country's state directory. It is written after each send, so an import
that stops halfway sends the rest next time, and an export imported twice sends nothing.

What a change becomes, for an entry of the new export compared with what was last sent:
- not sent before: its row state (active → `granted`, or `suspended`, `revoked`);
- active again after a revocation: `granted` (a new permission);
- active, and its dates, quota, name or other fields changed, or active again after a suspension:
  `renewed`;
- now suspended or revoked (or changed while so): `suspended` / `revoked`;
- absent from the new export but not revoked yet: `revoked` (the registry lists what is in force);
- unchanged: nothing.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from adapters.tj.registry import Registry
from broker.core.catalogue import Payload, parse_payload, payload_to_json
from broker.core.catalogue.employer import PermissionStatus
from broker.core.errors import AuditError, Reason
from broker.state.private_files import prepare_database

ACTIVE = frozenset({PermissionStatus.GRANTED, PermissionStatus.RENEWED})

_SCHEMA = """
CREATE TABLE IF NOT EXISTS told (
    message_type TEXT NOT NULL,
    number TEXT NOT NULL,
    status TEXT NOT NULL,
    content_sha256 TEXT NOT NULL,
    payload TEXT NOT NULL,
    PRIMARY KEY (message_type, number)
)
"""


@dataclass(frozen=True)
class Told:
    """What the partner was last told about one entry."""

    status: PermissionStatus
    content_sha256: str
    payload: Payload


def content_sha256(payload: Payload) -> str:
    """Fingerprint of everything but the status, which the diff compares on its own."""
    data = payload_to_json(payload)
    data.pop("status", None)
    return hashlib.sha256(json.dumps(data, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()


def with_status(payload: Payload, status: PermissionStatus) -> Payload:
    return payload.model_copy(update={"status": status})


def changes(registry: Registry, snapshot: Sequence[Payload], told: Mapping[str, Told]) -> list[Payload]:
    """The messages that bring the partner from `told` to `snapshot` (pure: no state is read or written)."""
    out: list[Payload] = []
    listed: set[str] = set()
    for entry in snapshot:
        number = registry.number_of(entry)
        listed.add(number)
        row_state = PermissionStatus(getattr(entry, "status"))  # noqa: B009 - both registry types have it
        before = told.get(number)
        if before is None:
            out.append(entry)
            continue
        same_content = before.content_sha256 == content_sha256(entry)
        if row_state is PermissionStatus.GRANTED:
            if before.status is PermissionStatus.REVOKED:
                out.append(entry)
            elif before.status not in ACTIVE or not same_content:
                out.append(with_status(entry, PermissionStatus.RENEWED))
        elif before.status is not row_state or not same_content:
            out.append(entry)
    for number, before in sorted(told.items()):
        if number not in listed and before.status is not PermissionStatus.REVOKED:
            out.append(with_status(before.payload, PermissionStatus.REVOKED))
    return out


class SyncState:
    """The SQLite file of what was told; one per country adapter."""

    def __init__(self, *, path: Path) -> None:
        self.path = path

    def told(self, registry: Registry) -> dict[str, Told]:
        rows = self._query(
            "SELECT number, status, content_sha256, payload FROM told WHERE message_type = ?",
            (registry.message_type,),
        )
        return {
            number: Told(
                status=PermissionStatus(status),
                content_sha256=digest,
                payload=parse_payload(registry.message_type, 1, payload.encode("utf-8")),
            )
            for number, status, digest, payload in rows
        }

    def remember(self, registry: Registry, payload: Payload) -> None:
        self._query(
            "INSERT INTO told (message_type, number, status, content_sha256, payload) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (message_type, number) DO UPDATE SET status = excluded.status, "
            "content_sha256 = excluded.content_sha256, payload = excluded.payload",
            (
                registry.message_type,
                registry.number_of(payload),
                str(getattr(payload, "status")),  # noqa: B009 - both registry types have it
                content_sha256(payload),
                json.dumps(payload_to_json(payload), ensure_ascii=False),
            ),
        )

    def _query(self, sql: str, params: tuple[object, ...]) -> list[tuple[str, ...]]:
        try:
            prepare_database(self.path)  # 0600 in 0700 before SQLite creates it
            connection = sqlite3.connect(self.path)
            try:
                with connection:
                    connection.execute(_SCHEMA)
                    rows: list[tuple[str, ...]] = connection.execute(sql, params).fetchall()
                return rows
            finally:
                connection.close()
        except (OSError, sqlite3.Error) as exc:
            raise AuditError(Reason.AUDIT_UNAVAILABLE, f"registry sync state {self.path}: {exc}") from None
