"""One worker's evidence bundle read from a log: every message naming the worker's document, its
receipts and their inclusion proofs, sealed payloads opened with the auditor's keys where the key
vault's wraps allow. Shared by `broker audit bundle` and the console's auditor page.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from broker.audit.bundle import MESSAGE_KINDS, about_messages, build_bundle, names_worker, opened_names_worker
from broker.audit.entry import AuditEntry
from broker.audit.sealed_evidence import SealedSearch, sealed_envelope, search_sealed
from broker.audit.stores.archive_files import ArchiveDirectory, readable_entries
from broker.audit.stores.proving import covering_checkpoint, prove_entry
from broker.audit.stores.source import LogSource
from broker.core.errors import AuditError, Reason
from broker.state.key_vault import VaultRows, read_vault


@dataclass(frozen=True)
class WorkerBundle:
    data: bytes  # the archive (zip), not yet checked: the caller checks it with its trust anchors
    entries: int
    messages: int
    opened: int
    sealed: SealedSearch


def search_log_sealed(
    messages: list[AuditEntry], *, vault: Path | None, keys: Sequence[X25519PrivateKey]
) -> SealedSearch:
    """Open the log's sealed messages with the auditor's keys and the vault's wraps (without a vault:
    none opened, each counted as not searched)."""
    envelopes = {}
    for row in messages:
        envelope = sealed_envelope(row.envelope) if row.message_id not in envelopes else None
        if envelope is not None and envelope.id == row.message_id:
            envelopes[envelope.id] = envelope
    held = read_vault(vault, envelopes) if vault is not None else VaultRows()
    return search_sealed(envelopes, wrapped=held.wrapped, erased=held.erased, keys=keys)


def unsearched_note(sealed: SealedSearch) -> str:
    if not sealed.unsearched and not sealed.erased:
        return ""
    return (
        f"; {sealed.unsearched} sealed message(s) not searched, {len(sealed.erased)} erased "
        "(open sealed payloads with --key and --vault)"
    )


async def worker_bundle(
    source: LogSource,
    *,
    worker: str,
    archive: ArchiveDirectory | None,
    keys: Sequence[X25519PrivateKey],
    vault: Path | None,
) -> WorkerBundle:
    """The bundle about the worker with identity document `worker`; `audit.out_of_range` if none."""
    rows = [row async for row in readable_entries(source, archive=archive)]
    messages = [row for row in rows if row.kind in MESSAGE_KINDS and row.message_id is not None]
    about = {row.message_id for row in messages if row.message_id and names_worker(row.envelope, worker)}
    sealed = search_log_sealed(messages, vault=vault, keys=keys)
    opened = [item for item in sealed.opened if opened_names_worker(item, worker)]
    about |= {item.message_id for item in opened}
    chosen = about_messages(rows, about)
    if not chosen:
        raise AuditError(
            Reason.AUDIT_OUT_OF_RANGE,
            f"no message in the log names document {worker}{unsearched_note(sealed)}",
        )
    covering = await covering_checkpoint(source, max(row.index for row in chosen))
    proofs = [await prove_entry(source, row, covering) for row in chosen]
    data = build_bundle(document_number=worker, proofs=proofs, opened=opened, sealed=sealed)
    return WorkerBundle(
        data=data, entries=len(proofs), messages=len(about), opened=len(opened), sealed=sealed
    )
