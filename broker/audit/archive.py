"""Archive segments: cold copies of old audit entries that keep every proof checkable (pure: no I/O).

Entries are never deleted. An operator copies the entries [first, end) of a log into a segment file,
and may then let the store drop their envelopes ("compaction"): the store keeps every other column,
the leaf hashes and the stored subtree hashes, so roots, inclusion and consistency proofs still come
from the store, and an entry's full record comes from its segment.

A segment file holds one line per entry, the RFC 8785 JSON `{"entry": <the entry record>, "index": i,
"leaf_hash": hex}` and a newline: deterministic, readable with any JSON tool, and each `entry` is
byte for byte the Merkle leaf input. Its manifest anchors it to a signature: the hashes of the
perfect subtrees left of the segment (`prefix`), the root at `end` that they and the segment's
leaves give, the first signed checkpoint whose size is at least `end`, and the consistency path from
`end` to it. So a segment and its manifest check with the trust bundles alone, and a changed byte
anywhere fails: in a line (named by its index), in the sequence of lines (the root), or elsewhere in
the file (its SHA-256, which the manifest and the store both record).
"""

from __future__ import annotations

import bisect
import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from broker.audit.checkpoint import SignedCheckpoint, parse_hash, verify_checkpoint
from broker.audit.entry import AuditEntry, EntryDraft, EntryKind, entry_bytes
from broker.audit.merkle import CompactRange, leaf_hash, verify_consistency
from broker.audit.proofs import decode_entry
from broker.core.canonical import canonical_bytes, strict_loads
from broker.core.errors import AuditError, ExchangeError, Reason, VerificationError
from broker.core.trust import TrustStore

SEGMENT_FORMAT = "labour-exchange-audit-segment/1"

# Compaction never empties these: they hold the signed roots, which anchor everything else.
KEPT_KINDS = frozenset({EntryKind.CHECKPOINT, EntryKind.WITNESS})

# A gateway compares a redelivered message's bytes with its RECEIVED entry for as long as the message
# is fresh (`max_message_age_s`, 7 days by default, plus clock skew); entries that young keep theirs.
COMPACTION_MIN_AGE = timedelta(days=8)

# Fields of the record besides the envelope: what a compacted row still holds and must keep.
_ROW_FIELDS = ("kind", "time", "message_id", "message_type", "peer", "verdict", "reason")


def segment_name(first_index: int, end_index: int) -> str:
    return f"segment-{first_index:012d}-{end_index:012d}.jsonl"


def manifest_name(first_index: int, end_index: int) -> str:
    return f"segment-{first_index:012d}-{end_index:012d}.manifest.json"


class SegmentInvalid(VerificationError):
    """A segment or its manifest does not check; `index` names the first bad entry when one can be."""

    def __init__(self, diagnostic: str, *, index: int | None = None) -> None:
        super().__init__(Reason.AUDIT_ARCHIVE_INVALID, diagnostic)
        self.index = index


@dataclass(frozen=True, kw_only=True)
class ArchivedRange:
    """What the store records of one segment (its `audit_archives` table): the range and the file."""

    first_index: int
    end_index: int
    segment: str
    segment_sha256: bytes
    manifest: bytes

    def __contains__(self, index: object) -> bool:
        return isinstance(index, int) and self.first_index <= index < self.end_index

    @property
    def manifest_file(self) -> str:
        return manifest_name(self.first_index, self.end_index)

    def describe(self) -> str:
        return f"segment {self.segment} (entries [{self.first_index}, {self.end_index}))"


def range_of(index: int, ranges: Sequence[ArchivedRange]) -> ArchivedRange | None:
    """The recorded range holding `index`, if any; `ranges` ordered by first index."""
    position = bisect.bisect_right(ranges, index, key=lambda archived: archived.first_index) - 1
    if position >= 0 and index in ranges[position]:
        return ranges[position]
    return None


def is_compacted(entry: AuditEntry) -> bool:
    """Whether the store dropped this entry's envelope: empty, and the record no longer hashes to the
    leaf. (An entry logged with no envelope, such as a delivery, still hashes to its leaf.)"""
    return not entry.envelope and entry.kind not in KEPT_KINDS and not entry.leaf_hash_matches()


# -- segment files ------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class SegmentRecord:
    """One line of a segment: an entry's full record, its index and its leaf hash."""

    index: int
    leaf_hash: bytes
    draft: EntryDraft

    def entry(self) -> AuditEntry:
        return AuditEntry.placed(self.draft, index=self.index, leaf_hash=self.leaf_hash)


def segment_line(entry: AuditEntry) -> bytes:
    record = strict_loads(entry_bytes(entry))
    line = {"entry": record, "index": entry.index, "leaf_hash": entry.leaf_hash.hex()}
    return canonical_bytes(line) + b"\n"


def build_segment(entries: Sequence[AuditEntry]) -> bytes:
    """The segment file of consecutive entries, each of which must hash to its stored leaf hash."""
    for offset, entry in enumerate(entries):
        if entry.index != entries[0].index + offset:
            raise ValueError(f"segment entries are not consecutive at entry {entry.index}")
        if not entry.leaf_hash_matches():
            raise ValueError(f"entry {entry.index} does not hash to its stored leaf hash")
    return b"".join(segment_line(entry) for entry in entries)


def _read_line(line: bytes, *, index: int, name: str) -> SegmentRecord:
    where = f"{name}, entry {index}"

    def invalid(detail: str) -> SegmentInvalid:
        return SegmentInvalid(f"{where}: {detail}", index=index)

    try:
        document = strict_loads(line)
    except ExchangeError as exc:
        raise invalid(exc.diagnostic) from None
    if not isinstance(document, dict) or set(document) != {"entry", "index", "leaf_hash"}:
        raise invalid("the line is not a JSON object with the members entry, index and leaf_hash")
    if canonical_bytes(document) != line:
        raise invalid("the line is not RFC 8785 canonical JSON (it was edited)")
    stated = document["index"]
    if type(stated) is not int or stated != index:
        raise invalid(f"the line holds entry {stated!r}: lines were removed, added or moved")
    if not isinstance(document["entry"], dict):
        raise invalid("the entry is not a JSON object")
    raw = canonical_bytes(document["entry"])
    try:
        draft = decode_entry(raw)
        stated_leaf = parse_hash(document["leaf_hash"], what="leaf_hash")
    except VerificationError as exc:
        raise invalid(exc.diagnostic) from None
    if not hmac.compare_digest(leaf_hash(raw), stated_leaf):
        raise invalid("the record does not hash to the leaf hash beside it (the line was edited)")
    return SegmentRecord(index=index, leaf_hash=stated_leaf, draft=draft)


def read_segment(data: bytes, *, first_index: int, end_index: int, name: str) -> list[SegmentRecord]:
    """Every line of a segment file, each checked in itself; the first bad one is named by index."""
    lines = data.split(b"\n")
    if lines[-1]:
        raise SegmentInvalid(f"{name}: the last line has no newline (the file was cut short or edited)")
    records = [
        _read_line(line, index=first_index + offset, name=name) for offset, line in enumerate(lines[:-1])
    ]
    if len(records) != end_index - first_index:
        raise SegmentInvalid(
            f"{name}: holds {len(records)} entries, not the {end_index - first_index} of "
            f"[{first_index}, {end_index})",
            index=first_index + min(len(records), end_index - first_index),
        )
    return records


# -- manifests ----------------------------------------------------------------------------------------


def _hashes(value: object, *, what: str) -> tuple[bytes, ...]:
    if not isinstance(value, list):
        raise SegmentInvalid(f"manifest: {what} is not a list")
    try:
        return tuple(parse_hash(item, what=what) for item in value)
    except VerificationError as exc:
        raise SegmentInvalid(f"manifest: {exc.diagnostic}") from None


def _count(value: object, *, what: str) -> int:
    if type(value) is not int or value < 0:
        raise SegmentInvalid(f"manifest: {what} is not a count")
    return value


@dataclass(frozen=True, kw_only=True)
class SegmentManifest:
    first_index: int
    end_index: int
    segment: str
    segment_sha256: bytes
    prefix: tuple[bytes, ...]  # hashes of perfect_cover(0, first_index), largest first
    root: bytes  # MTH of the first end_index entries
    checkpoint: SignedCheckpoint  # the first signed checkpoint of size >= end_index
    consistency: tuple[bytes, ...]  # PROOF(end_index, D[checkpoint.tree_size])

    @property
    def origin(self) -> str:
        return self.checkpoint.body.origin

    def to_bytes(self) -> bytes:
        return canonical_bytes(
            {
                "format": SEGMENT_FORMAT,
                "first_index": self.first_index,
                "end_index": self.end_index,
                "segment": self.segment,
                "segment_sha256": self.segment_sha256.hex(),
                "prefix": [node.hex() for node in self.prefix],
                "root": self.root.hex(),
                "checkpoint": self.checkpoint.compact(),
                "consistency": [node.hex() for node in self.consistency],
            }
        )

    @classmethod
    def from_bytes(cls, raw: bytes) -> SegmentManifest:
        members = {
            "format",
            "first_index",
            "end_index",
            "segment",
            "segment_sha256",
            "prefix",
            "root",
            "checkpoint",
            "consistency",
        }
        try:
            document: Any = strict_loads(raw)
        except ExchangeError as exc:
            raise SegmentInvalid(f"manifest: {exc.diagnostic}") from None
        if not isinstance(document, dict) or set(document) != members:
            raise SegmentInvalid(f"manifest: not a JSON object with the members {sorted(members)}")
        if document["format"] != SEGMENT_FORMAT:
            raise SegmentInvalid(f"manifest: format {document['format']!r} is not {SEGMENT_FORMAT}")
        if canonical_bytes(document) != raw:
            raise SegmentInvalid("manifest: not RFC 8785 canonical JSON (the file was edited)")
        if not isinstance(document["segment"], str) or not isinstance(document["checkpoint"], str):
            raise SegmentInvalid("manifest: segment and checkpoint must be strings")
        try:
            checkpoint = SignedCheckpoint.from_compact(document["checkpoint"])
            sha = parse_hash(document["segment_sha256"], what="segment_sha256")
            root = parse_hash(document["root"], what="root")
        except VerificationError as exc:
            raise SegmentInvalid(f"manifest: {exc.diagnostic}") from None
        return cls(
            first_index=_count(document["first_index"], what="first_index"),
            end_index=_count(document["end_index"], what="end_index"),
            segment=document["segment"],
            segment_sha256=sha,
            prefix=_hashes(document["prefix"], what="prefix"),
            root=root,
            checkpoint=checkpoint,
            consistency=_hashes(document["consistency"], what="consistency"),
        )


def check_manifest(manifest: SegmentManifest, *, trust: TrustStore | None) -> None:
    """The manifest in itself: it names its own range, and its root leads to a signed root.

    Without trust anchors the checkpoint's signature is not checked (replay and export only read)."""
    name = segment_name(manifest.first_index, manifest.end_index)
    if manifest.end_index <= manifest.first_index or manifest.segment != name:
        raise SegmentInvalid(f"manifest: names {manifest.segment!r}, not {name}")
    if len(manifest.prefix) != manifest.first_index.bit_count():
        raise SegmentInvalid(
            f"manifest: {len(manifest.prefix)} prefix hashes for a prefix of {manifest.first_index}"
        )
    signed = manifest.checkpoint.body
    if not verify_consistency(
        manifest.end_index, signed.tree_size, manifest.root, signed.root_hash, manifest.consistency
    ):
        raise SegmentInvalid(
            f"{name}: the root at {manifest.end_index} does not lead to the signed root of "
            f"{signed.tree_size} entries (the manifest was altered)",
            index=manifest.first_index,
        )
    if trust is not None:
        verify_checkpoint(manifest.checkpoint, trust=trust)


def check_segment(manifest: SegmentManifest, data: bytes, *, trust: TrustStore | None) -> list[SegmentRecord]:
    """A segment file against its manifest: every line, the root its leaves give, its SHA-256."""
    check_manifest(manifest, trust=trust)
    records = read_segment(
        data, first_index=manifest.first_index, end_index=manifest.end_index, name=manifest.segment
    )
    tree = CompactRange.from_border(size=manifest.first_index, hashes=manifest.prefix)
    for record in records:
        tree.append(record.leaf_hash)
    if not hmac.compare_digest(tree.root(), manifest.root):
        raise SegmentInvalid(
            f"{manifest.segment}: its entries do not give the root its manifest names",
            index=manifest.first_index,
        )
    if not hmac.compare_digest(hashlib.sha256(data).digest(), manifest.segment_sha256):
        raise SegmentInvalid(f"{manifest.segment}: the file's SHA-256 is not the one its manifest names")
    return records


def manifest_for(archived: ArchivedRange, raw: bytes) -> SegmentManifest:
    """The manifest file of a recorded range: byte for byte the one the store recorded."""
    if raw != archived.manifest:
        raise SegmentInvalid(
            f"{archived.describe()}: the manifest file is not the one the store recorded",
            index=archived.first_index,
        )
    manifest = SegmentManifest.from_bytes(raw)
    recorded = (archived.first_index, archived.end_index, archived.segment, archived.segment_sha256)
    if (manifest.first_index, manifest.end_index, manifest.segment, manifest.segment_sha256) != recorded:
        raise SegmentInvalid(f"{archived.describe()}: the store's record disagrees with its manifest")
    return manifest


# -- the store's rows against the segment ------------------------------------------------------------


def restore(row: AuditEntry, record: SegmentRecord, *, segment: str) -> AuditEntry:
    """A stored row of an archived range, whole: the row as it is if it still holds its envelope,
    else the segment's record. Either way both must agree on the leaf hash and every stored column."""
    if record.index != row.index or not hmac.compare_digest(record.leaf_hash, row.leaf_hash):
        raise SegmentInvalid(
            f"entry {row.index}: {segment} holds leaf hash {record.leaf_hash.hex()}, the store "
            f"{row.leaf_hash.hex()}",
            index=row.index,
        )
    for name in _ROW_FIELDS:
        stored, archived = getattr(row, name), getattr(record.draft, name)
        if stored != archived:
            raise VerificationError(
                Reason.AUDIT_TAMPERED,
                f"entry {row.index}: the stored {name} {stored!s} is not the {archived!s} archived in "
                f"{segment}: the row was edited",
            )
    return row if row.envelope else record.entry()


def check_compaction_age(
    newest: datetime, *, now: datetime, min_age: timedelta, archived: ArchivedRange
) -> None:
    if now - newest < min_age:
        raise AuditError(
            Reason.AUDIT_ARCHIVE_REFUSED,
            f"{archived.describe()} holds entries from {newest:%Y-%m-%d %H:%M}Z, younger than {min_age}: "
            f"a gateway may still compare a redelivered message with them; compact it later",
        )
