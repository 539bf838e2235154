"""Folder drop: how a ministry system without Python hands files to the exchange.

The system writes a file into the inbox (under a temporary name, `.part`/`.tmp` or a leading dot,
then renames it). Each poll takes the files in the order they arrived: a file that was sent moves
to `done/`; a file we refuse moves to `failed/` with `<name>.reason.txt` beside it, saying the reason
code and the line. A file that could not be sent because of our own side (broker or store down)
stays in the inbox and is tried again at the next poll.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import structlog

from adapters.base import AdapterError
from broker.core.errors import AuditError, ExchangeError, LocalError, Reason, TransportError

log = structlog.get_logger("adapters.folder_drop")

DONE = "done"
FAILED = "failed"
REASON_SUFFIX = ".reason.txt"
_TEMPORARY_SUFFIXES = (".part", ".tmp", "~")

Handler = Callable[[Path], Awaitable[object]]


@dataclass(frozen=True)
class DropOutcome:
    name: str
    moved_to: Path | None  # None: left in the inbox for the next poll
    error: ExchangeError | None


class FolderDrop:
    def __init__(self, *, inbox: Path, handle: Handler, poll_interval_s: float = 2.0) -> None:
        self.inbox = inbox
        self.done = inbox / DONE
        self.failed = inbox / FAILED
        self._handle = handle
        self._poll_interval_s = poll_interval_s

    def pending(self) -> list[Path]:
        """Files ready in the inbox, oldest first."""
        self.inbox.mkdir(parents=True, exist_ok=True)
        ready = [
            path
            for path in self.inbox.iterdir()
            if path.is_file()
            and not path.name.startswith(".")
            and not path.name.endswith(_TEMPORARY_SUFFIXES)
        ]
        return sorted(ready, key=lambda path: (path.stat().st_mtime_ns, path.name))

    async def process_once(self) -> list[DropOutcome]:
        return [await self._process(path) for path in self.pending()]

    async def run(self, *, stop: asyncio.Event) -> None:
        """Poll until `stop` is set."""
        log.info("folder_drop.watching", inbox=str(self.inbox))
        while not stop.is_set():
            await self.process_once()
            try:
                await asyncio.wait_for(stop.wait(), self._poll_interval_s)
            except TimeoutError:
                continue

    async def _process(self, path: Path) -> DropOutcome:
        try:
            await self._handle(path)
        except (TransportError, AuditError) as error:
            # Our side is down: nothing is wrong with the file, so it waits for the next poll.
            log.warning("folder_drop.retry_later", file=path.name, reason=str(error.reason))
            return DropOutcome(name=path.name, moved_to=None, error=error)
        except ExchangeError as error:
            return self._refuse(path, error)
        except Exception as exc:
            log.exception("folder_drop.crashed", file=path.name)
            return self._refuse(path, LocalError(Reason.HANDLER_CRASHED, f"{type(exc).__name__}: {exc}"))
        moved = _move(path, self.done)
        log.info("folder_drop.done", file=path.name, moved_to=str(moved))
        return DropOutcome(name=path.name, moved_to=moved, error=None)

    def _refuse(self, path: Path, error: ExchangeError) -> DropOutcome:
        moved = _move(path, self.failed)
        moved.with_name(moved.name + REASON_SUFFIX).write_text(_reason_text(error), encoding="utf-8")
        log.warning(
            "folder_drop.failed", file=path.name, reason=str(error.reason), diagnostic=error.diagnostic
        )
        return DropOutcome(name=path.name, moved_to=moved, error=error)


def _reason_text(error: ExchangeError) -> str:
    lines = [f"reason: {error.reason}"]
    if isinstance(error, AdapterError):
        lines += [f"file: {error.filename}", f"line: {error.line}"]
    if error.article:
        lines.append(f"article: {error.article}")
    lines.append(f"diagnostic: {error.diagnostic}")
    return "\n".join(lines) + "\n"


def _move(path: Path, folder: Path) -> Path:
    """Move into `folder`; a name already there gets the time appended instead of being overwritten."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / path.name
    if target.exists():
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        target = folder / f"{path.stem}.{stamp}{path.suffix}"
    return path.replace(target)
