"""Proof files an auditor can hand to anyone: checked with the trust bundles alone, no store (pure).

An inclusion proof carries the entry's canonical bytes (the Merkle leaf input), its index, the tree
size, the audit path and the signed checkpoint of that size. A consistency proof carries two signed
checkpoints of one log and the path between them. Both files are RFC 8785 JSON and are refused in
any other spelling, so that every byte of a file is covered by a check: a changed byte fails.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from broker.audit.checkpoint import SignedCheckpoint, parse_hash, parse_time, verify_checkpoint
from broker.audit.entry import EntryDraft, EntryKind, entry_bytes
from broker.audit.merkle import leaf_hash, verify_consistency, verify_inclusion
from broker.audit.receipt_refs import RECEIPT_KINDS, is_ref, parse_ref
from broker.audit.stored_envelopes import SIGNED_KINDS, verify_envelope
from broker.core.canonical import canonical_bytes, strict_loads
from broker.core.errors import ExchangeError, Reason, VerificationError
from broker.core.trust import TrustStore

INCLUSION_FORMAT = "labour-exchange-inclusion-proof/1"
CONSISTENCY_FORMAT = "labour-exchange-consistency-proof/1"


def _invalid(diagnostic: str) -> VerificationError:
    return VerificationError(Reason.AUDIT_PROOF_INVALID, diagnostic)


def _canonical_document(raw: bytes, *, members: set[str], what: str) -> dict[str, Any]:
    try:
        document = strict_loads(raw)
    except ExchangeError as exc:
        raise _invalid(f"{what}: {exc.diagnostic}") from None
    if not isinstance(document, dict) or set(document) != members:
        raise _invalid(f"{what}: not a JSON object with the members {sorted(members)}")
    if canonical_bytes(document) != raw:
        raise _invalid(f"{what}: not RFC 8785 canonical JSON (the file was edited)")
    return document


def _count(value: object, *, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise _invalid(f"{what} is not a count")
    return value


def _path(value: object) -> tuple[bytes, ...]:
    if not isinstance(value, list):
        raise _invalid("path is not a list")
    try:
        return tuple(parse_hash(item, what="path") for item in value)
    except VerificationError as exc:
        raise _invalid(exc.diagnostic) from None


def _checkpoint(value: object) -> SignedCheckpoint:
    if not isinstance(value, str):
        raise _invalid("checkpoint is not a compact JWS")
    return SignedCheckpoint.from_compact(value)


def decode_entry(raw: bytes) -> EntryDraft:
    """The entry record from its canonical bytes; refuses any other spelling of it."""
    members = {"v", "kind", "time", "message_id", "message_type", "peer", "envelope", "verdict", "reason"}
    record = _canonical_document(raw, members=members, what="entry")
    try:
        envelope = base64.b64decode(record["envelope"], validate=True)
        draft = EntryDraft(
            kind=EntryKind(record["kind"]),
            time=parse_time(record["time"], what="entry"),
            message_id=None if record["message_id"] is None else UUID(record["message_id"]),
            message_type=record["message_type"],
            peer=record["peer"],
            envelope=envelope,
            verdict=record["verdict"],
            reason=record["reason"],
        )
    except (ValueError, TypeError, binascii.Error, VerificationError) as exc:
        raise _invalid(f"entry: {exc}") from None
    if entry_bytes(draft) != raw:
        raise _invalid("entry: the record is not in its canonical form")
    return draft


@dataclass(frozen=True, kw_only=True)
class InclusionProof:
    entry: bytes  # entry_bytes(draft): the Merkle leaf input
    index: int
    tree_size: int
    path: tuple[bytes, ...]
    checkpoint: SignedCheckpoint

    def to_bytes(self) -> bytes:
        return canonical_bytes(
            {
                "format": INCLUSION_FORMAT,
                "entry": base64.b64encode(self.entry).decode("ascii"),
                "index": self.index,
                "tree_size": self.tree_size,
                "path": [node.hex() for node in self.path],
                "checkpoint": self.checkpoint.compact(),
            }
        )

    @classmethod
    def from_bytes(cls, raw: bytes) -> InclusionProof:
        members = {"format", "entry", "index", "tree_size", "path", "checkpoint"}
        document = _canonical_document(raw, members=members, what="inclusion proof")
        if document["format"] != INCLUSION_FORMAT:
            raise _invalid(f"format {document['format']!r} is not {INCLUSION_FORMAT}")
        try:
            entry = base64.b64decode(document["entry"], validate=True)
        except (binascii.Error, ValueError, TypeError):
            raise _invalid("entry is not base64") from None
        if base64.b64encode(entry).decode("ascii") != document["entry"]:
            raise _invalid("entry is not in canonical base64")
        return cls(
            entry=entry,
            index=_count(document["index"], what="index"),
            tree_size=_count(document["tree_size"], what="tree_size"),
            path=_path(document["path"]),
            checkpoint=_checkpoint(document["checkpoint"]),
        )


@dataclass(frozen=True, kw_only=True)
class ProvenEntry:
    """An entry shown to sit at `index` of the log that `checkpoint` signs."""

    index: int
    draft: EntryDraft
    checkpoint: SignedCheckpoint


def check_inclusion(proof: InclusionProof, *, trust: TrustStore, origin: str | None = None) -> ProvenEntry:
    """Checkpoint signature, the path to its root, and the signature of the envelope inside."""
    # The hashes first: they are cheap, and a wrong proof needs no certificate checks to fail.
    if proof.tree_size != proof.checkpoint.body.tree_size:
        raise _invalid(
            f"the proof is for size {proof.tree_size}, the checkpoint for {proof.checkpoint.body.tree_size}"
        )
    if not verify_inclusion(
        leaf_hash(proof.entry), proof.index, proof.tree_size, proof.path, proof.checkpoint.body.root_hash
    ):
        raise _invalid(f"entry {proof.index} is not in the signed tree of size {proof.tree_size}")
    verify_checkpoint(proof.checkpoint, trust=trust, origin=origin)
    draft = decode_entry(proof.entry)
    if draft.kind in RECEIPT_KINDS and is_ref(draft.envelope):
        try:  # a message's pointer to its batched receipt: signed by nobody, the receipt it names is
            parse_ref(draft.envelope)
        except ValueError as exc:
            raise _invalid(f"entry: {exc}") from None
    elif draft.kind in SIGNED_KINDS:
        verify_envelope(draft.envelope, trust=trust)
    return ProvenEntry(index=proof.index, draft=draft, checkpoint=proof.checkpoint)


@dataclass(frozen=True, kw_only=True)
class ConsistencyProof:
    old: SignedCheckpoint
    new: SignedCheckpoint
    path: tuple[bytes, ...]

    def to_bytes(self) -> bytes:
        return canonical_bytes(
            {
                "format": CONSISTENCY_FORMAT,
                "old": self.old.compact(),
                "new": self.new.compact(),
                "path": [node.hex() for node in self.path],
            }
        )

    @classmethod
    def from_bytes(cls, raw: bytes) -> ConsistencyProof:
        document = _canonical_document(
            raw, members={"format", "old", "new", "path"}, what="consistency proof"
        )
        if document["format"] != CONSISTENCY_FORMAT:
            raise _invalid(f"format {document['format']!r} is not {CONSISTENCY_FORMAT}")
        return cls(
            old=_checkpoint(document["old"]), new=_checkpoint(document["new"]), path=_path(document["path"])
        )


def check_consistency(proof: ConsistencyProof, *, trust: TrustStore) -> None:
    """Both checkpoints signed by the same log's gateway, and the new tree extends the old one."""
    old, new = proof.old.body, proof.new.body
    if old.tree_size > new.tree_size:
        raise _invalid(
            f"the old checkpoint ({old.tree_size} entries) is larger than the new ({new.tree_size})"
        )
    if not verify_consistency(old.tree_size, new.tree_size, old.root_hash, new.root_hash, proof.path):
        raise _invalid(
            f"the tree of {new.tree_size} entries does not extend the tree of {old.tree_size}: "
            f"{old.origin}'s log was rewritten between the two checkpoints"
        )
    verify_checkpoint(proof.old, trust=trust)
    verify_checkpoint(proof.new, trust=trust, origin=old.origin)


def read_proof(raw: bytes) -> InclusionProof | ConsistencyProof:
    """Either kind of proof file, told apart by its `format`."""
    try:
        document = strict_loads(raw)
    except ExchangeError as exc:
        raise _invalid(f"proof file: {exc.diagnostic}") from None
    kind = document.get("format") if isinstance(document, dict) else None
    if kind == CONSISTENCY_FORMAT:
        return ConsistencyProof.from_bytes(raw)
    return InclusionProof.from_bytes(raw)
