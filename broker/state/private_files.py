"""Files that hold state or personal data, private to the service's user whatever the umask.

The audit log, the outbox, the key vault and the subscriber ledgers keep message bytes and data
keys; a rendered alert holds decrypted personal data. Each is created 0600 in a folder that is
0700, and an existing file (a store made by an older release, 0644 in 0755) is tightened when it is
opened. SQLite gives its `-wal`, `-shm` and `-journal` files the mode of the database file, so they
follow it; any left from an older release are tightened too.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

PRIVATE_FILE_MODE = 0o600
PRIVATE_DIR_MODE = 0o700
SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")
_NO_FOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC


def private_directory(path: Path) -> None:
    """Create `path` and its missing parents 0700; an existing `path` itself is tightened to 0700
    (its parents are the operator's and are left as they are)."""
    missing: list[Path] = []
    current = path
    while not current.exists():
        missing.append(current)
        current = current.parent
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):  # made meanwhile by another process of ours
            folder.mkdir(mode=PRIVATE_DIR_MODE)
    descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        _tighten(descriptor, PRIVATE_DIR_MODE)
    finally:
        os.close(descriptor)


def open_private(path: Path, flags: int) -> int:
    """`os.open` for a private file: created 0600, an existing one tightened, a symbolic link refused."""
    descriptor = os.open(path, flags | _NO_FOLLOW, PRIVATE_FILE_MODE)
    try:
        _tighten(descriptor, PRIVATE_FILE_MODE)
    except BaseException:
        os.close(descriptor)
        raise
    return descriptor


def write_private(path: Path, data: bytes) -> None:
    """Write (or overwrite) a private file, flushed to disk."""
    descriptor = open_private(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def prepare_database(path: Path) -> None:
    """Before SQLite opens `path`: its folder 0700, the file (created empty if missing) and any side
    file 0600, so SQLite never creates one with the umask's mode."""
    private_directory(path.parent)
    os.close(open_private(path, os.O_RDWR | os.O_CREAT))
    for suffix in SQLITE_SIDE_FILES:
        side = path.with_name(path.name + suffix)
        try:
            os.close(open_private(side, os.O_RDONLY))
        except FileNotFoundError:
            continue


def _tighten(descriptor: int, mode: int) -> None:
    if stat.S_IMODE(os.fstat(descriptor).st_mode) != mode:
        os.fchmod(descriptor, mode)
