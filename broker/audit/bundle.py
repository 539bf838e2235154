"""Everything one log says about one worker, in one archive anyone can check offline (pure).

The archive holds a manifest and one inclusion proof per entry: the messages whose payload names the
worker's identity document, and every entry about those messages (receipts, delivery, rejection).
It is a deterministic ZIP (stored, fixed times and attributes): `check_bundle` rebuilds it from its
members and requires the same bytes, so a changed byte anywhere, even in ZIP metadata no content
check would notice, fails.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from broker.audit.checkpoint import SignedCheckpoint
from broker.audit.entry import AuditEntry, EntryKind
from broker.audit.proofs import InclusionProof, ProvenEntry, check_inclusion
from broker.audit.receipt_refs import RECEIPT_KINDS, batch_of, is_ref, parse_ref
from broker.core.canonical import canonical_bytes, strict_loads
from broker.core.errors import ExchangeError, LocalError, Reason, VerificationError
from broker.core.trust import TrustStore

BUNDLE_FORMAT = "labour-exchange-audit-bundle/1"
MANIFEST = "manifest.json"
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)
MAX_MEMBERS = 100_000
# A proof holds one audit entry (a message of at most a few MiB, base64) and a short path.
MAX_MEMBER_BYTES = 16 * 1024 * 1024
MAX_BUNDLE_BYTES = 256 * 1024 * 1024
MESSAGE_KINDS = frozenset({EntryKind.SENT, EntryKind.RECEIVED, EntryKind.REJECTED})


def _invalid(diagnostic: str) -> VerificationError:
    return VerificationError(Reason.AUDIT_PROOF_INVALID, f"bundle: {diagnostic}")


def _documents(value: Any) -> list[dict[str, Any]]:
    """Every `identity_document` object anywhere in a payload."""
    found: list[dict[str, Any]] = []
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            document = item.get("identity_document")
            if isinstance(document, dict):
                found.append(document)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def names_worker(envelope: bytes, document_number: str) -> bool:
    """Whether the envelope's payload names a worker by this identity document number."""
    try:
        document = strict_loads(envelope)
    except ExchangeError:
        return False
    payload = document.get("payload") if isinstance(document, dict) else None
    return any(found.get("number") == document_number for found in _documents(payload))


def about_messages(entries: Sequence[AuditEntry], about: set[UUID]) -> list[AuditEntry]:
    """The entries about these messages: their own, and each batched receipt one of them refers to
    (the signed receipt lists other messages too, by id and hash only)."""
    chosen = [entry for entry in entries if entry.message_id in about]
    receipts = {
        parse_ref(entry.envelope).receipt_id
        for entry in chosen
        if entry.kind in RECEIPT_KINDS and is_ref(entry.envelope)
    }
    return [
        entry
        for entry in entries
        if entry.message_id in about or (entry.kind in RECEIPT_KINDS and entry.message_id in receipts)
    ]


def proof_name(index: int) -> str:
    return f"proofs/{index:012d}.json"


def _zip(members: Sequence[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, data in members:
            info = zipfile.ZipInfo(name, date_time=_FIXED_TIME)
            info.create_system = 3
            info.external_attr = 0o100644 << 16
            archive.writestr(info, data)
    return buffer.getvalue()


def _manifest(document_number: str, checkpoint: SignedCheckpoint, proofs: Sequence[InclusionProof]) -> bytes:
    return canonical_bytes(
        {
            "format": BUNDLE_FORMAT,
            "worker_document_number": document_number,
            "checkpoint": checkpoint.compact(),
            "entries": [proof_name(proof.index) for proof in proofs],
        }
    )


def build_bundle(*, document_number: str, proofs: Sequence[InclusionProof]) -> bytes:
    """The archive; every proof must be against the same signed checkpoint."""
    if not proofs:
        raise ValueError("a bundle needs at least one entry")
    ordered = sorted(proofs, key=lambda proof: proof.index)
    checkpoint = ordered[0].checkpoint
    if any(proof.checkpoint != checkpoint for proof in ordered):
        raise ValueError("every proof of a bundle must be against the same checkpoint")
    members = [(MANIFEST, _manifest(document_number, checkpoint, ordered))]
    members += [(proof_name(proof.index), proof.to_bytes()) for proof in ordered]
    return _zip(members)


@dataclass(frozen=True, kw_only=True)
class CheckedBundle:
    document_number: str
    checkpoint: SignedCheckpoint
    entries: list[ProvenEntry]


def _oversized(diagnostic: str) -> LocalError:
    return LocalError(Reason.AUDIT_BUNDLE_OVERSIZED, f"bundle: {diagnostic}; nothing of it was unpacked")


def _check_sizes(data: bytes, infos: Sequence[zipfile.ZipInfo]) -> None:
    """From the directory alone, before any member is read: a bundle stores its members, so together
    they hold at most the archive's own bytes. A compressed member (a ZIP bomb expands 1 MB into
    1 GiB), one claiming more bytes than it occupies, or members sharing their bytes are refused."""
    if len(infos) > MAX_MEMBERS:
        raise _oversized(f"more than {MAX_MEMBERS} members")
    for info in infos:
        if info.compress_type != zipfile.ZIP_STORED:
            raise _oversized(f"member {info.filename!r} is compressed (method {info.compress_type})")
        if info.file_size != info.compress_size:
            raise _oversized(
                f"member {info.filename!r} claims {info.file_size} bytes but occupies {info.compress_size}"
            )
        if info.file_size > MAX_MEMBER_BYTES:
            raise _oversized(f"member {info.filename!r} is {info.file_size} bytes, over {MAX_MEMBER_BYTES}")
    claimed = sum(info.file_size for info in infos)
    if claimed > len(data):
        raise _oversized(f"members claim {claimed} bytes, more than the archive's {len(data)}")


def _read_members(data: bytes) -> list[tuple[str, bytes]]:
    if len(data) > MAX_BUNDLE_BYTES:
        raise _oversized(f"the archive is over {MAX_BUNDLE_BYTES} bytes")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            infos = archive.infolist()
            _check_sizes(data, infos)
            return [(info.filename, archive.read(info)) for info in infos]
    except (
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        ValueError,
        EOFError,
        OSError,
        NotImplementedError,
        RuntimeError,
    ) as exc:
        raise _invalid(f"not a readable ZIP archive: {exc}") from None


def check_bundle(data: bytes, *, trust: TrustStore) -> CheckedBundle:
    members = _read_members(data)
    if _zip(members) != data:
        raise _invalid("the archive is not byte for byte the one its members make (it was altered)")
    if not members or members[0][0] != MANIFEST:
        raise _invalid(f"the first member is not {MANIFEST}")
    manifest = strict_loads(members[0][1])
    expected = {"format", "worker_document_number", "checkpoint", "entries"}
    if not isinstance(manifest, dict) or set(manifest) != expected or manifest["format"] != BUNDLE_FORMAT:
        raise _invalid(f"{MANIFEST} is not a {BUNDLE_FORMAT} manifest")
    if canonical_bytes(manifest) != members[0][1]:
        raise _invalid(f"{MANIFEST} is not canonical JSON")
    names = [name for name, _ in members[1:]]
    if manifest["entries"] != names:
        raise _invalid("the manifest does not list exactly the proofs in the archive")
    checkpoint = SignedCheckpoint.from_compact(manifest["checkpoint"])
    document_number = manifest["worker_document_number"]
    proven: list[ProvenEntry] = []
    for name, raw in members[1:]:
        proof = InclusionProof.from_bytes(raw)
        if name != proof_name(proof.index) or proof.checkpoint != checkpoint:
            raise _invalid(f"{name} is not the proof its name and the manifest announce")
        proven.append(check_inclusion(proof, trust=trust))
    _check_about_worker(proven, document_number)
    return CheckedBundle(document_number=document_number, checkpoint=checkpoint, entries=proven)


def _check_about_worker(proven: list[ProvenEntry], document_number: str) -> None:
    """Every entry concerns a message whose own bytes name the worker (a batched receipt: lists one)."""
    about = {
        entry.draft.message_id
        for entry in proven
        if entry.draft.kind in MESSAGE_KINDS and names_worker(entry.draft.envelope, document_number)
    }
    for entry in proven:
        if entry.draft.message_id in about or _answers_one_of(entry, about):
            continue
        raise _invalid(f"entry {entry.index} is not about a message naming document {document_number}")


def _answers_one_of(entry: ProvenEntry, about: set[UUID | None]) -> bool:
    if entry.draft.kind not in RECEIPT_KINDS:
        return False
    found = batch_of(entry.draft.envelope)
    return found is not None and any(line.message_id in about for line in found[1].lines)
