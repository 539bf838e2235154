"""Tamper-evident audit log: canonical entries under an RFC 9162 Merkle tree, in SQLite or PostgreSQL.

Importing this package loads only the pure core (entries and the tree). The store interface is
loaded on first use, so `import broker.audit.merkle` never pulls in asyncio; the backends are
imported from their own modules (`broker.audit.sqlite_store`, `broker.audit.postgres_store`) so
that using one never loads the other's driver.
"""

from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from broker.audit.store import AuditStore, GroupCommitter, StoreBase

_STORE_NAMES = frozenset({"AuditStore", "GroupCommitter", "StoreBase"})


def __getattr__(name: str) -> Any:
    if name in _STORE_NAMES:
        from broker.audit import store  # noqa: PLC0415 - deferred so the core stays free of asyncio

        return getattr(store, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "EMPTY_ROOT",
    "ENTRY_FORMAT",
    "HASH_SIZE",
    "AuditEntry",
    "AuditStore",
    "CompactRange",
    "EntryDraft",
    "EntryKind",
    "GroupCommitter",
    "NodeId",
    "StoreBase",
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
