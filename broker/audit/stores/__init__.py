"""Where the audit log is kept: the store interface, SQLite and PostgreSQL, archive files, checkpointing.

Lives here: `AuditStore` and its group commit (`base`), the embedded SQLite store and the PostgreSQL
store (each backend in its own module, so using one never loads the other's driver), archived
segments on disk and in the database, the log sources auditors read, and the `Checkpointer` that
signs checkpoints over a live store.

May import: `broker.audit` and `broker.core`.
"""

from broker.audit.stores.base import AuditStore, GroupCommitter, StoreBase

__all__ = ["AuditStore", "GroupCommitter", "StoreBase"]
