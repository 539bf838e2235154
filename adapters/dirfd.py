"""Files in a folder someone else can write to, handled through directory descriptors.

The folder drop's inbox belongs to a ministry system: whoever writes there can plant symbolic links
and FIFOs, or swap a sub-folder for a link between our check and our use. So each folder is opened
once (`O_DIRECTORY|O_NOFOLLOW`), and everything after that is relative to its descriptor: files are
created with `O_EXCL|O_NOFOLLOW`, read with `O_NOFOLLOW|O_NONBLOCK` and checked to be regular files,
renamed by descriptor. A rename never follows a link and a descriptor keeps pointing at the folder it
opened, whatever happens to the name, so nothing outside the opened folders is read or written.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from broker.core.errors import ConfigError, LocalError, Reason

_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO for reading must not wait for a writer that never comes.
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_LINK_ERRORS = (errno.ELOOP, errno.EMLINK)  # what O_NOFOLLOW gives on a link (Linux; the BSDs)
_CHUNK = 1 << 20


def unsafe(diagnostic: str) -> LocalError:
    return LocalError(Reason.ADAPTER_UNSAFE_PATH, diagnostic)


@dataclass(frozen=True)
class Folder:
    path: Path  # for messages only: every operation goes through `fd`
    fd: int

    def close(self) -> None:
        os.close(self.fd)

    def device(self) -> int:
        return os.fstat(self.fd).st_dev


def open_folder(path: Path, *, follow: bool, mode: int = 0o777) -> Folder:
    """A folder the operator named (created if missing); unless `follow`, its last component may not
    be a symbolic link."""
    try:
        path.mkdir(parents=True, exist_ok=True, mode=mode)
        return Folder(path=path, fd=os.open(path, _DIRECTORY | (0 if follow else os.O_NOFOLLOW)))
    except OSError as exc:
        if exc.errno in (*_LINK_ERRORS, errno.ENOTDIR):
            raise unsafe(f"{path} is a symbolic link or not a folder; refusing to write through it") from None
        raise ConfigError(Reason.CONFIG_INVALID, f"cannot open folder {path}: {exc.strerror}") from None


def open_subfolder(parent: Folder, name: str, *, mode: int = 0o777) -> Folder:
    """`parent/name`, created if missing; a link or a file of that name is refused, never followed."""
    path = parent.path / name
    try:
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, mode, dir_fd=parent.fd)
        return Folder(path=path, fd=os.open(name, _DIRECTORY | os.O_NOFOLLOW, dir_fd=parent.fd))
    except OSError as exc:
        if exc.errno in (*_LINK_ERRORS, errno.ENOTDIR):
            raise unsafe(f"{path} is a symbolic link or not a folder; refusing to write through it") from None
        raise ConfigError(Reason.CONFIG_INVALID, f"cannot open folder {path}: {exc.strerror}") from None


def listing(folder: Folder) -> list[tuple[str, os.stat_result]]:
    """Every entry but sub-folders, with its own status (a link is not followed), oldest first."""
    found: list[tuple[str, os.stat_result]] = []
    for name in os.listdir(folder.fd):
        try:
            status = os.stat(name, dir_fd=folder.fd, follow_symlinks=False)
        except FileNotFoundError:
            continue  # gone meanwhile
        if not stat.S_ISDIR(status.st_mode):
            found.append((name, status))
    return sorted(found, key=lambda item: (item[1].st_mtime_ns, item[0]))


def kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISDIR(mode):
        return "a folder"
    return "a regular file"


def read_regular(folder: Folder, name: str, *, limit: int) -> bytes:
    """At most `limit + 1` bytes of `folder/name`, which must be a regular file (not a link, a FIFO,
    a device)."""
    try:
        fd = os.open(name, _READ, dir_fd=folder.fd)
    except OSError as exc:
        if exc.errno in _LINK_ERRORS:
            raise unsafe(f"{name} is {_described_link(folder, name)}; it was not read") from None
        if exc.errno == errno.ENXIO:  # a socket or a device without its driver
            raise unsafe(f"{name} is not a regular file; it was not read") from None
        raise
    try:
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode):
            raise unsafe(f"{name} is {kind(status.st_mode)}, not a regular file; it was not read")
        chunks: list[bytes] = []
        left = limit + 1
        while left > 0:
            chunk = os.read(fd, min(left, _CHUNK))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _described_link(folder: Folder, name: str) -> str:
    try:
        return f"a symbolic link (to {os.readlink(name, dir_fd=folder.fd)!r})"
    except OSError:
        return "a symbolic link"


def remove(folder: Folder, name: str) -> None:
    """Unlink an entry (a link itself, never its target)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(name, dir_fd=folder.fd)


def take(source: Folder, name: str, target: Folder) -> bool:
    """Move `source/name` to `target/name` by one rename, unless that name is in `target` (then False).

    Whatever sits at the name is moved as it is, link or FIFO alike; it is judged once in `target`,
    where the writer of `source` cannot swap it any more. Both folders must be on one file system.
    Only we write to `target`, so a look before the rename is enough to overwrite nothing.
    """
    try:
        os.stat(name, dir_fd=target.fd, follow_symlinks=False)
    except FileNotFoundError:
        pass
    else:
        return False
    try:
        os.rename(name, name, src_dir_fd=source.fd, dst_dir_fd=target.fd)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.EISDIR, errno.ENOTDIR, errno.ENOTEMPTY):
            return False  # gone, or swapped for a folder, meanwhile
        raise
    return True


def move(
    source: Folder, name: str, target: Folder, *, companion: str | None = None
) -> tuple[str, int | None]:
    """Move `source/name` (a regular file) into `target` under a name not yet taken there.

    A name already in `target` is never overwritten: the time is added to the new one. With a
    `companion` suffix, the name plus that suffix is created too (empty, `O_EXCL`) and its descriptor
    returned for the caller to fill. Across file systems the file is copied, then removed.
    """
    for candidate in _candidates(name):
        extra = None
        if companion is not None:
            extra = _reserve(target, candidate + companion, mode=0o644)
            if extra is None:  # e.g. a link planted under the companion's name
                continue
        placed = False
        try:
            placed = _place(source, name, target, candidate)
        finally:
            if extra is not None and not placed:
                os.close(extra)
                remove(target, f"{candidate}{companion}")
        if placed:
            return candidate, extra
    raise AssertionError("unreachable: there is always another candidate name")


def _place(source: Folder, name: str, target: Folder, candidate: str) -> bool:
    """`source/name` as `target/candidate`, or False if that name is taken.

    A hard link fails rather than replace anything, and a crash leaves the file whole in one place or
    both; where links are not supported, the name is reserved with `O_EXCL` and renamed over.
    """
    try:
        os.link(name, candidate, src_dir_fd=source.fd, dst_dir_fd=target.fd, follow_symlinks=False)
    except FileExistsError:
        return False
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
            raise
        return _place_reserved(source, name, target, candidate)
    remove(source, name)
    return True


def _place_reserved(source: Folder, name: str, target: Folder, candidate: str) -> bool:
    reserved = _reserve(target, candidate, mode=0o600)
    if reserved is None:
        return False
    try:
        try:
            os.rename(name, candidate, src_dir_fd=source.fd, dst_dir_fd=target.fd)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            _copy(source, name, reserved)  # another file system: copy into the reserved file
            remove(source, name)
    except BaseException:
        remove(target, candidate)
        raise
    finally:
        os.close(reserved)
    return True


def _copy(source: Folder, name: str, into: int) -> None:
    fd = os.open(name, _READ, dir_fd=source.fd)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise unsafe(f"{name} is not a regular file; it was not copied")
        while chunk := os.read(fd, _CHUNK):
            write_all(into, chunk)
        os.fsync(into)
    finally:
        os.close(fd)


def new_file(folder: Folder, name: str, *, suffix: str = "", mode: int = 0o644) -> tuple[str, int]:
    """A new file `name + suffix` in `folder`, or with the time added to `name` if that is taken."""
    for candidate in _candidates(name):
        reserved = _reserve(folder, candidate + suffix, mode=mode)
        if reserved is not None:
            return candidate + suffix, reserved
    raise AssertionError("unreachable: there is always another candidate name")


def _reserve(folder: Folder, name: str, *, mode: int) -> int | None:
    """A new empty file of that name, or None when the name is taken (by anything, a link too)."""
    try:
        return os.open(name, _NEW_FILE, mode, dir_fd=folder.fd)
    except FileExistsError:
        return None


def _candidates(name: str) -> Iterator[str]:
    """`name`, then `stem.<time>.suffix`, then the same with a counter: names to try in turn."""
    yield name
    path = Path(name)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    yield f"{path.stem}.{stamp}{path.suffix}"
    for counter in itertools.count(2):
        yield f"{path.stem}.{stamp}-{counter}{path.suffix}"


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
