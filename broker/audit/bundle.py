"""Everything one log says about one worker, in one archive anyone can check offline (pure).

The archive holds a manifest and one inclusion proof per entry: the messages whose payload names the
worker's identity document, and every entry about those messages (receipts, delivery, rejection).
A sealed payload found with an auditor's key is there opened too (`opened/<id>.json`, checked by
`broker.audit.sealed_evidence`), and the manifest says which sealed messages were erased (and when)
or not searched (and why): what the bundler could not look into. Format 2; format 1 bundles (no
opened payloads) still check.
It is a deterministic ZIP (stored, fixed times and attributes): `check_bundle` rebuilds it from its
members and requires the same bytes, so a changed byte anywhere, even in ZIP metadata no content
check would notice, fails.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from broker.audit.checkpoint import SignedCheckpoint
from broker.audit.entry import AuditEntry, EntryKind
from broker.audit.proofs import InclusionProof, ProvenEntry, check_inclusion
from broker.audit.receipt_refs import RECEIPT_KINDS, batch_of, is_ref, parse_ref
from broker.audit.sealed_evidence import (
    OPENED_DIR,
    Erased,
    OpenedPayload,
    SealedSearch,
    check_opened,
    opened_name,
    sealed_envelope,
)
from broker.core.canonical import canonical_bytes, strict_loads
from broker.core.errors import ExchangeError, LocalError, Reason, VerificationError
from broker.core.trust import TrustStore

BUNDLE_FORMAT = "labour-exchange-audit-bundle/2"
_FORMAT_1 = "labour-exchange-audit-bundle/1"
_MEMBERS_1 = frozenset({"format", "worker_document_number", "checkpoint", "entries"})
_MEMBERS_2 = _MEMBERS_1 | {"opened", "sealed_not_opened"}
MANIFEST = "manifest.json"
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)
MAX_MEMBERS = 100_000
# A proof holds one audit entry (a message of at most a few MiB, base64) and a short path.
MAX_MEMBER_BYTES = 16 * 1024 * 1024
MAX_BUNDLE_BYTES = 256 * 1024 * 1024
MESSAGE_KINDS = frozenset({EntryKind.SENT, EntryKind.RECEIVED, EntryKind.REJECTED})
# The entries whose envelope a proof verifies: an opened payload must be one of theirs.
_SIGNED_MESSAGE_KINDS = frozenset({EntryKind.SENT, EntryKind.RECEIVED})


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
    return payload_names_worker(
        document.get("payload") if isinstance(document, dict) else None, document_number
    )


def payload_names_worker(payload: Any, document_number: str) -> bool:
    """Whether a payload (a clear one, or a sealed one opened) names this identity document number."""
    return any(found.get("number") == document_number for found in _documents(payload))


def opened_names_worker(opened: OpenedPayload, document_number: str) -> bool:
    return payload_names_worker(strict_loads(opened.plaintext), document_number)


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


def pack_members(members: Sequence[tuple[str, bytes]]) -> bytes:
    """The deterministic archive of `members`, in order (what `check_bundle` rebuilds and compares)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, data in members:
            info = zipfile.ZipInfo(name, date_time=_FIXED_TIME)
            info.create_system = 3
            info.external_attr = 0o100644 << 16
            archive.writestr(info, data)
    return buffer.getvalue()


def _manifest(
    document_number: str,
    checkpoint: SignedCheckpoint,
    proofs: Sequence[InclusionProof],
    opened: Sequence[OpenedPayload],
    sealed: SealedSearch,
) -> bytes:
    return canonical_bytes(
        {
            "format": BUNDLE_FORMAT,
            "worker_document_number": document_number,
            "checkpoint": checkpoint.compact(),
            "entries": [proof_name(proof.index) for proof in proofs],
            "opened": [item.name for item in opened],
            # The bundler's own account of what it could not look into: not proved by anything here.
            "sealed_not_opened": {
                "erased": [
                    {"message_id": str(item.message_id), "erased_at": item.erased_at.isoformat()}
                    for item in sealed.erased
                ],
                "not_searched": dict(sealed.not_searched),
            },
        }
    )


def build_bundle(
    *,
    document_number: str,
    proofs: Sequence[InclusionProof],
    opened: Sequence[OpenedPayload] = (),
    sealed: SealedSearch | None = None,
) -> bytes:
    """The archive; every proof must be against the same signed checkpoint. `opened` are the sealed
    payloads naming the worker, `sealed` what the search of sealed messages found (erased, unsearched)."""
    if not proofs:
        raise ValueError("a bundle needs at least one entry")
    ordered = sorted(proofs, key=lambda proof: proof.index)
    checkpoint = ordered[0].checkpoint
    if any(proof.checkpoint != checkpoint for proof in ordered):
        raise ValueError("every proof of a bundle must be against the same checkpoint")
    shown = sorted(opened, key=lambda item: item.name)
    manifest = _manifest(document_number, checkpoint, ordered, shown, sealed or SealedSearch())
    members = [(MANIFEST, manifest)]
    members += [(proof_name(proof.index), proof.to_bytes()) for proof in ordered]
    members += [(item.name, item.to_bytes()) for item in shown]
    return pack_members(members)


@dataclass(frozen=True, kw_only=True)
class CheckedBundle:
    document_number: str
    checkpoint: SignedCheckpoint
    entries: list[ProvenEntry]
    opened: list[OpenedPayload] = field(default_factory=list)
    # As the bundler stated them (format 2): sealed messages erased, and those not searched by reason.
    erased: list[Erased] = field(default_factory=list)
    not_searched: dict[str, int] = field(default_factory=dict)


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


def _read_manifest(raw: bytes) -> dict[str, Any]:
    manifest = strict_loads(raw)
    if (
        not isinstance(manifest, dict)
        or (manifest.get("format"), frozenset(manifest))
        not in ((_FORMAT_1, _MEMBERS_1), (BUNDLE_FORMAT, _MEMBERS_2))
        or canonical_bytes(manifest) != raw
    ):
        raise _invalid(f"{MANIFEST} is not the canonical JSON of a {BUNDLE_FORMAT} (or /1) manifest")
    manifest.setdefault("opened", [])
    for listing in ("entries", "opened"):
        if not isinstance(manifest[listing], list) or not all(isinstance(n, str) for n in manifest[listing]):
            raise _invalid(f"{MANIFEST}: {listing} is not a list of member names")
    return manifest


def check_bundle(data: bytes, *, trust: TrustStore) -> CheckedBundle:
    members = _read_members(data)
    if pack_members(members) != data:
        raise _invalid("the archive is not byte for byte the one its members make (it was altered)")
    if not members or members[0][0] != MANIFEST:
        raise _invalid(f"the first member is not {MANIFEST}")
    manifest = _read_manifest(members[0][1])
    names = [name for name, _ in members[1:]]
    if manifest["entries"] + manifest["opened"] != names:
        raise _invalid("the manifest does not list exactly the proofs and opened payloads in the archive")
    checkpoint = SignedCheckpoint.from_compact(manifest["checkpoint"])
    document_number = manifest["worker_document_number"]
    proven: list[ProvenEntry] = []
    for name, raw in members[1 : 1 + len(manifest["entries"])]:
        proof = InclusionProof.from_bytes(raw)
        if name != proof_name(proof.index) or proof.checkpoint != checkpoint:
            raise _invalid(f"{name} is not the proof its name and the manifest announce")
        proven.append(check_inclusion(proof, trust=trust))
    opened = _check_opened(proven, members[1 + len(manifest["entries"]) :])
    _check_about_worker(proven, document_number, opened)
    erased, not_searched = _sealed_not_opened(manifest.get("sealed_not_opened"))
    return CheckedBundle(
        document_number=document_number,
        checkpoint=checkpoint,
        entries=proven,
        opened=opened,
        erased=erased,
        not_searched=not_searched,
    )


def _check_opened(proven: list[ProvenEntry], members: Sequence[tuple[str, bytes]]) -> list[OpenedPayload]:
    """Each opened payload is what the key shown decrypts a proven, signed sealed message to."""
    signed = {
        entry.draft.message_id: entry.draft.envelope
        for entry in proven
        if entry.draft.kind in _SIGNED_MESSAGE_KINDS
    }
    opened = []
    for name, raw in members:
        try:
            stored = signed.get(UUID(name.removeprefix(OPENED_DIR).removesuffix(".json")))
        except ValueError:
            stored = None
        envelope = sealed_envelope(stored) if stored is not None else None
        if envelope is None or name != opened_name(envelope.id):
            raise _invalid(f"{name} opens no sealed message sent or received among the bundle's entries")
        opened.append(check_opened(raw, envelope))
    return opened


def _sealed_not_opened(statement: Any) -> tuple[list[Erased], dict[str, int]]:
    """The manifest's account of the sealed messages it did not open (format 1 has none)."""
    if statement is None:
        return [], {}
    try:
        erased = [
            Erased(message_id=UUID(item["message_id"]), erased_at=datetime.fromisoformat(item["erased_at"]))
            for item in statement["erased"]
        ]
        not_searched = {str(reason): int(count) for reason, count in statement["not_searched"].items()}
    except (KeyError, TypeError, ValueError, AttributeError):
        raise _invalid(f"{MANIFEST}: sealed_not_opened is not a list of erasures and counts") from None
    return erased, not_searched


def _check_about_worker(proven: list[ProvenEntry], document_number: str, opened: list[OpenedPayload]) -> None:
    """Every entry concerns a message whose own bytes name the worker (a batched receipt: lists one),
    in clear or opened; and every opened payload names the worker (a bundle discloses no one else's)."""
    for item in opened:
        if not opened_names_worker(item, document_number):
            raise _invalid(
                f"the opened payload of {item.message_id} does not name document {document_number}"
            )
    about = {
        entry.draft.message_id
        for entry in proven
        if entry.draft.kind in MESSAGE_KINDS and names_worker(entry.draft.envelope, document_number)
    } | {item.message_id for item in opened}
    for entry in proven:
        if entry.draft.message_id in about or _answers_one_of(entry, about):
            continue
        raise _invalid(f"entry {entry.index} is not about a message naming document {document_number}")


def _answers_one_of(entry: ProvenEntry, about: set[UUID | None]) -> bool:
    if entry.draft.kind not in RECEIPT_KINDS:
        return False
    found = batch_of(entry.draft.envelope)
    return found is not None and any(line.message_id in about for line in found[1].lines)
