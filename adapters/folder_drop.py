"""Folder drop: how a ministry system without Python hands files to the exchange.

The system writes a file into the inbox (under a temporary name, `.part`/`.tmp` or a leading dot,
then renames it). Each poll first moves a ready file into a private work folder by one rename, so a
next file the system drops under the same name stays in the inbox for the next poll; then it reads
and sends the copy in the work folder. A file that was sent moves to `done/`; a file we refuse moves
to `failed/` with `<name>.reason.txt` beside it, saying the reason code and the line. A file that
could not be sent because of our own side (broker or store down) waits in the work folder and is
sent first at the next poll; so is a file found there after a crash.

Whoever can write to the inbox must not reach anything outside it: every folder is opened once
without following links and used through its descriptor (`adapters.dirfd`). An inbox entry that is
not a regular file (a symbolic link, a FIFO) is never read: it is removed, and `failed/` gets its
`.reason.txt` (`adapter.unsafe_path`). A `done/`, `failed/` or work folder that is a link is
refused and nothing is taken. The operator may keep `done/` and `failed/` outside the inbox.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import structlog

from adapters import dirfd
from adapters.base import MAX_FILE_BYTES, AdapterError, check_size
from adapters.dirfd import Folder
from broker.core.errors import (
    AuditError,
    ConfigError,
    ExchangeError,
    LocalError,
    Reason,
    TransportError,
)

log = structlog.get_logger("adapters.folder_drop")

DONE = "done"
FAILED = "failed"
WORK = ".folder-drop-work"
REASON_SUFFIX = ".reason.txt"
_TEMPORARY_SUFFIXES = (".part", ".tmp", "~")
_PRIVATE_FOLDER_MODE = 0o700

Handler = Callable[[str, bytes], Awaitable[object]]  # (file name, its bytes)


@dataclass(frozen=True)
class DropOutcome:
    name: str
    # Where the file went; None: it waits in the work folder for the next poll, or (error
    # `adapter.unsafe_path`) it was no regular file and was removed unread.
    moved_to: Path | None
    error: ExchangeError | None


@dataclass(frozen=True)
class _Folders:
    inbox: Folder
    work: Folder
    done: Folder
    failed: Folder


class FolderDrop:
    def __init__(
        self,
        *,
        inbox: Path,
        handle: Handler,
        poll_interval_s: float = 2.0,
        done: Path | None = None,
        failed: Path | None = None,
        work: Path | None = None,
        max_bytes: int = MAX_FILE_BYTES,
    ) -> None:
        """`done`, `failed` and `work` default to folders inside the inbox; `work` must be on the
        inbox's file system (a file is taken from the inbox by one rename)."""
        self.inbox = inbox
        self._outside = {DONE: done, FAILED: failed, WORK: work}
        self.done = done or inbox / DONE
        self.failed = failed or inbox / FAILED
        self.work = work or inbox / WORK
        self._handle = handle
        self._poll_interval_s = poll_interval_s
        self._max_bytes = max_bytes

    def check_folders(self) -> None:
        """Open (and create) every folder once, so a wrong one is reported before anything is sent."""
        with self._opened():
            pass

    async def process_once(self) -> list[DropOutcome]:
        try:
            return await self._poll()
        except OSError as exc:  # our folders: full disk, permissions; the file waits for the next poll
            where = f" ({exc.filename})" if exc.filename else ""
            raise LocalError(
                Reason.CONFIG_INVALID, f"folder drop {self.inbox}: {exc.strerror}{where}"
            ) from exc

    async def _poll(self) -> list[DropOutcome]:
        outcomes: list[DropOutcome] = []
        with self._opened() as folders:
            # Left over from a crash or our side being down: these go first, in their order.
            for name, _ in dirfd.listing(folders.work):
                outcomes.append(await self._process(folders, name))
                if _ours(outcomes[-1]):
                    return outcomes
            for name in _ready(folders.inbox):
                if not dirfd.take(folders.inbox, name, folders.work):
                    continue  # gone meanwhile, or its name still waits in the work folder
                outcomes.append(await self._process(folders, name))
                if _ours(outcomes[-1]):
                    break  # our side is down: the rest stays in the inbox
        return outcomes

    async def run(self, *, stop: asyncio.Event) -> None:
        """Poll until `stop` is set; a poll that cannot open its folders is logged and tried again."""
        log.info("folder_drop.watching", inbox=str(self.inbox))
        while not stop.is_set():
            try:
                await self.process_once()
            except LocalError as error:
                log.error(  # noqa: TRY400 - the reason code says what is wrong; a traceback would not
                    "folder_drop.poll_refused",
                    inbox=str(self.inbox),
                    reason=str(error.reason),
                    diagnostic=error.diagnostic,
                )
            try:
                await asyncio.wait_for(stop.wait(), self._poll_interval_s)
            except TimeoutError:
                continue

    @contextmanager
    def _opened(self) -> Iterator[_Folders]:
        with ExitStack() as stack:
            inbox = dirfd.open_folder(self.inbox, follow=True)
            stack.callback(inbox.close)
            opened: dict[str, Folder] = {}
            for name, outside in self._outside.items():
                mode = _PRIVATE_FOLDER_MODE if name == WORK else 0o777
                if outside is None:
                    folder = dirfd.open_subfolder(inbox, name, mode=mode)
                else:
                    folder = dirfd.open_folder(outside, follow=False, mode=mode)
                stack.callback(folder.close)
                opened[name] = folder
            if opened[WORK].device() != inbox.device():
                raise ConfigError(
                    Reason.CONFIG_INVALID,
                    f"the work folder {self.work} is not on the file system of the inbox {self.inbox}; "
                    "files are taken from the inbox by a rename, which cannot cross file systems",
                )
            yield _Folders(inbox=inbox, work=opened[WORK], done=opened[DONE], failed=opened[FAILED])

    async def _process(self, folders: _Folders, name: str) -> DropOutcome:
        try:
            data = dirfd.read_regular(folders.work, name, limit=self._max_bytes)
        except LocalError as error:
            return self._refuse_entry(folders, name, error)
        except OSError as exc:  # e.g. a file its writer left unreadable to us
            unreadable = AdapterError(
                Reason.ADAPTER_INVALID, f"cannot read: {exc.strerror}", filename=name, line=1
            )
            return self._refuse(folders, name, unreadable)
        try:
            check_size(data, filename=name, limit=self._max_bytes)
            await self._handle(name, data)
        except (TransportError, AuditError) as error:
            # Our side is down: nothing is wrong with the file, so it waits for the next poll.
            log.warning("folder_drop.retry_later", file=name, reason=str(error.reason))
            return DropOutcome(name=name, moved_to=None, error=error)
        except ExchangeError as error:
            return self._refuse(folders, name, error)
        except Exception as exc:
            log.exception("folder_drop.crashed", file=name)
            return self._refuse(
                folders, name, LocalError(Reason.HANDLER_CRASHED, f"{type(exc).__name__}: {exc}")
            )
        moved, _ = dirfd.move(folders.work, name, folders.done)
        log.info("folder_drop.done", file=name, moved_to=str(self.done / moved))
        return DropOutcome(name=name, moved_to=self.done / moved, error=None)

    def _refuse(self, folders: _Folders, name: str, error: ExchangeError) -> DropOutcome:
        moved, reason_fd = dirfd.move(folders.work, name, folders.failed, companion=REASON_SUFFIX)
        assert reason_fd is not None  # asked for with `companion`
        _write_reason(reason_fd, error)
        log.warning("folder_drop.failed", file=name, reason=str(error.reason), diagnostic=error.diagnostic)
        return DropOutcome(name=name, moved_to=self.failed / moved, error=error)

    def _refuse_entry(self, folders: _Folders, name: str, error: LocalError) -> DropOutcome:
        """Not a regular file: removed unread (a link's target is untouched); the reason is kept."""
        dirfd.remove(folders.work, name)
        _, fd = dirfd.new_file(folders.failed, name, suffix=REASON_SUFFIX)
        _write_reason(fd, error)
        log.warning(
            "folder_drop.unsafe_entry", file=name, reason=str(error.reason), diagnostic=error.diagnostic
        )
        return DropOutcome(name=name, moved_to=None, error=error)


def _ours(outcome: DropOutcome) -> bool:
    return outcome.moved_to is None and isinstance(outcome.error, TransportError | AuditError)


def _ready(inbox: Folder) -> list[str]:
    """Names in the inbox ready to take, oldest first (anything but a folder: a link is taken, then
    refused)."""
    return [
        name
        for name, _ in dirfd.listing(inbox)
        if not name.startswith(".") and not name.endswith(_TEMPORARY_SUFFIXES)
    ]


def _write_reason(fd: int, error: ExchangeError) -> None:
    try:
        dirfd.write_all(fd, _reason_text(error).encode("utf-8"))
    finally:
        os.close(fd)


def _reason_text(error: ExchangeError) -> str:
    lines = [f"reason: {error.reason}"]
    if isinstance(error, AdapterError):
        lines += [f"file: {error.filename}", f"line: {error.line}"]
    if error.article:
        lines.append(f"article: {error.article}")
    lines.append(f"diagnostic: {error.diagnostic}")
    return "\n".join(lines) + "\n"
