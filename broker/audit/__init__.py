"""The audit log's pure core: canonical entries, the RFC 9162 Merkle tree, signed checkpoints, proofs.

Lives here: entries and their bytes, the tree, checkpoints and witness records, inclusion and
consistency proofs, whole-log verification, evidence bundles, archive segments, reconciliation.
Nothing here does I/O: importing `broker.audit` never loads asyncio or a database driver. Where the
log is kept (SQLite, PostgreSQL, archive files) and the component that signs checkpoints over a live
store are in `broker.audit.stores`.

May import: `broker.core`. Never `broker.state`, `broker.exchange` or `broker.cli`.
"""

from broker.audit.entry import (
    ENTRY_FORMAT,
    AuditEntry,
    EntryDraft,
    EntryKind,
    entry_bytes,
    entry_leaf_hash,
    format_time,
)
from broker.audit.merkle import (
    EMPTY_ROOT,
    HASH_SIZE,
    CompactRange,
    NodeId,
    consistency_path,
    consistency_ranges,
    fold_cover,
    inclusion_path,
    inclusion_ranges,
    leaf_hash,
    node_hash,
    perfect_cover,
    root_from_leaf_hashes,
    root_from_leaves,
    verify_consistency,
    verify_inclusion,
)

__all__ = [
    "EMPTY_ROOT",
    "ENTRY_FORMAT",
    "HASH_SIZE",
    "AuditEntry",
    "CompactRange",
    "EntryDraft",
    "EntryKind",
    "NodeId",
    "consistency_path",
    "consistency_ranges",
    "entry_bytes",
    "entry_leaf_hash",
    "fold_cover",
    "format_time",
    "inclusion_path",
    "inclusion_ranges",
    "leaf_hash",
    "node_hash",
    "perfect_cover",
    "root_from_leaf_hashes",
    "root_from_leaves",
    "verify_consistency",
    "verify_inclusion",
]
