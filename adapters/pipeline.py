"""From a national file to sent messages, and from received alerts to national files.

A file is parsed and validated completely before its first message is sent, so a file with one
bad line sends nothing. Each message is recorded with the adapter right after the gateway sent it,
so an import that stops halfway (the broker went down) sends only the rest when the file comes again.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from uuid import UUID

import structlog

import adapters
from adapters.base import MAX_FILE_BYTES, AdapterError, NationalAdapter, check_size
from broker.core.catalogue import Payload
from broker.core.errors import ConfigError, LocalError, Reason
from broker.state.private_files import private_directory, write_private

log = structlog.get_logger("adapters.pipeline")


class SentMessage(Protocol):
    @property
    def message_id(self) -> UUID: ...


class Sender(Protocol):
    """What a pipeline needs of a gateway (`broker.exchange.gateway.Gateway` is one)."""

    async def send(
        self, payload: Payload, *, to: str, sender: str | None = None, wait_receipt: bool = False
    ) -> SentMessage: ...


@dataclass(frozen=True)
class ImportResult:
    filename: str
    sent: tuple[tuple[str, UUID], ...]  # (message type, message id) of each message sent


def country_codes() -> list[str]:
    """Every country package under `adapters/` (a two-letter package name)."""
    return sorted(
        info.name.upper()
        for info in pkgutil.iter_modules(adapters.__path__)
        if info.ispkg and len(info.name) == 2
    )


def load_adapter(country: str, *, state_dir: Path) -> NationalAdapter:
    """The adapter of `adapters/<country>/`, from the `adapter(state_dir=...)` factory each package has."""
    if country.upper() not in country_codes():
        raise ConfigError(
            Reason.CONFIG_INVALID, f"no adapter for {country}; known: {', '.join(country_codes())}"
        )
    module = importlib.import_module(f"adapters.{country.lower()}")
    built: NationalAdapter = module.adapter(state_dir=state_dir)
    return built


def read_file(path: Path, *, limit: int = MAX_FILE_BYTES) -> bytes:
    """The file's bytes, reading at most one byte past the limit (an oversized file is not slurped)."""
    try:
        with path.open("rb") as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise AdapterError(
            Reason.ADAPTER_INVALID, f"cannot read: {exc.strerror}", filename=path.name, line=1
        ) from None
    check_size(data, filename=path.name, limit=limit)
    return data


async def import_file(
    path: Path,
    *,
    adapter: NationalAdapter,
    gateway: Sender,
    to: str,
    sender: str | None = None,
    wait_receipt: bool = False,
) -> ImportResult:
    data = read_file(path)
    return await import_bytes(
        data,
        filename=path.name,
        adapter=adapter,
        gateway=gateway,
        to=to,
        sender=sender,
        wait_receipt=wait_receipt,
    )


async def import_bytes(
    data: bytes,
    *,
    filename: str,
    adapter: NationalAdapter,
    gateway: Sender,
    to: str,
    sender: str | None = None,
    wait_receipt: bool = False,
) -> ImportResult:
    outgoing = adapter.outgoing(data, filename=filename)
    _check_supported(adapter, outgoing, filename=filename)
    sent: list[tuple[str, UUID]] = []
    for payload in outgoing:
        result = await gateway.send(payload, to=to, sender=sender, wait_receipt=wait_receipt)
        adapter.record_sent(payload)
        sent.append((payload.MESSAGE_TYPE, result.message_id))
        log.info(
            "adapter.sent",
            country=adapter.country,
            file=filename,
            type=payload.MESSAGE_TYPE,
            message_id=str(result.message_id),
        )
    log.info("adapter.imported", country=adapter.country, file=filename, sent=len(sent))
    return ImportResult(filename=filename, sent=tuple(sent))


def render_to_folder(
    adapter: NationalAdapter, payload: Payload, *, message_id: UUID, out_dir: Path, fmt: str
) -> Path:
    """Write one received payload as a national file; the name says its type and message id."""
    content = adapter.render(payload, fmt=fmt)
    extension = fmt.split("-", 1)[0]
    target = out_dir / f"{payload.MESSAGE_TYPE}-{message_id}.{extension}"
    partial = target.with_name(f".{target.name}.part")  # a watcher of out_dir never sees half a file
    try:
        # Decrypted personal data: 0600 in a 0700 folder whatever the umask (docs/adapters.md).
        private_directory(out_dir)
        write_private(partial, content)
        partial.replace(target)
    except OSError as exc:
        raise LocalError(Reason.CONFIG_INVALID, f"cannot write {target}: {exc.strerror}") from None
    return target


def _check_supported(adapter: NationalAdapter, payloads: Sequence[Payload], *, filename: str) -> None:
    for payload in payloads:
        if payload.MESSAGE_TYPE not in adapter.supported_types:
            raise AdapterError(
                Reason.ADAPTER_INVALID,
                f"the {adapter.country} adapter does not send {payload.MESSAGE_TYPE}",
                filename=filename,
                line=1,
            )
