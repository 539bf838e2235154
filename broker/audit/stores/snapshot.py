"""A consistent copy of a live SQLite audit store, for an auditor to take away.

A gateway's store is in WAL mode: committed entries sit in the `-wal` file until SQLite folds them
into the database file, so a `cp` of the database file alone while the gateway runs holds only a
prefix of the log (or none of it). SQLite's online backup API copies the database as one read
transaction sees it, WAL included, while the gateway goes on writing. The copy is switched to a
rollback journal so that it is one self-contained file, written 0600 under a temporary name and
linked into place only when complete: a snapshot that exists is whole.

PostgreSQL needs no such copy: every auditor's read of a PostgreSQL log runs in one REPEATABLE READ
transaction (`broker.audit.stores.source`), and `pg_dump` of the schema is consistent by design.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path

from broker.core.errors import AuditError, ConfigError, Reason
from broker.state.private_files import open_private

# The database header's "write version" byte (offset 18): 2 for a database in WAL mode.
_WRITE_VERSION_OFFSET = 18
_WAL_WRITE_VERSION = 2


def snapshot_sqlite(store: Path, out: Path) -> int:
    """Copy `store` to the new file `out` (0600) as one transaction sees it; return its entry count."""
    if not store.is_file():
        raise ConfigError(Reason.CONFIG_INVALID, f"no audit store at {store}")
    if out.exists() or out.is_symlink():
        raise ConfigError(Reason.CONFIG_INVALID, f"{out} exists; a snapshot never overwrites a file")
    partial = out.with_name(f".{out.name}.{os.getpid()}.partial")
    try:
        os.close(open_private(partial, os.O_RDWR | os.O_CREAT | os.O_EXCL))
        size = _backup(store, partial)
        _publish(partial, out)
    except OSError as exc:
        raise ConfigError(Reason.CONFIG_INVALID, f"cannot write the snapshot {out}: {exc}") from exc
    finally:
        for leftover in (partial, partial.with_name(partial.name + "-journal")):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()
    return size


def _backup(store: Path, target: Path) -> int:
    source = None
    copy = None
    try:
        source = sqlite3.connect(f"{store.resolve().as_uri()}?mode=ro", uri=True)
        copy = sqlite3.connect(target, isolation_level=None)
        # pages=-1: the whole database in one step, so in one read transaction of the source.
        source.backup(copy, pages=-1)
        mode = copy.execute("PRAGMA journal_mode=DELETE").fetchone()[0]
        if mode != "delete":
            raise AuditError(Reason.AUDIT_UNAVAILABLE, f"the snapshot kept journal mode {mode}")
        [(check,)] = copy.execute("PRAGMA quick_check").fetchall()
        if check != "ok":
            raise AuditError(Reason.AUDIT_UNAVAILABLE, f"the snapshot does not check out: {check}")
        [(size,)] = copy.execute("SELECT coalesce(max(idx) + 1, 0) FROM audit_entries").fetchall()
        return int(size)
    except sqlite3.Error as exc:
        raise AuditError(Reason.AUDIT_UNAVAILABLE, f"cannot snapshot {store}: {exc}") from exc
    finally:
        for connection in (copy, source):
            if connection is not None:
                connection.close()


def _publish(partial: Path, out: Path) -> None:
    """Flush the finished copy, then give it its name; a link refuses a name taken meanwhile."""
    descriptor = os.open(partial, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    try:
        os.link(partial, out)
    except FileExistsError:
        raise ConfigError(
            Reason.CONFIG_INVALID, f"{out} exists; a snapshot never overwrites a file"
        ) from None
    directory = os.open(out.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def wal_copy_warning(path: Path) -> str | None:
    """A warning when `path` is a WAL-mode database with no `-wal` file beside it: what `cp` of a
    running gateway's store leaves, missing whatever the WAL held (a closed store looks the same)."""
    try:
        with path.open("rb") as handle:
            header = handle.read(_WRITE_VERSION_OFFSET + 1)
    except OSError:
        return None
    if len(header) <= _WRITE_VERSION_OFFSET or header[_WRITE_VERSION_OFFSET] != _WAL_WRITE_VERSION:
        return None
    if path.with_name(path.name + "-wal").exists():
        return None
    return (
        f"{path} is a WAL-mode database without its -wal file: if it was copied from a running "
        f"gateway (cp), entries still in the WAL are missing from it; copy with `broker audit snapshot`"
    )
