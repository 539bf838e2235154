"""`broker audit replay|export`: a range of the log to a sandbox queue, a JSON-lines file or CSV."""

from __future__ import annotations

import base64
import csv
import json
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TextIO

import typer

from broker.audit.entry import AuditEntry, EntryKind, format_time
from broker.audit.stores.archive_files import (
    readable_entries,
    refuse_archived,
    restored_rows,
)
from broker.audit.verify import (
    ArchivedRow,
    UnreadableRow,
)
from broker.cli.audit.common import (
    SUBSCRIBER_QUEUE_PREFIX,
    ArchiveOption,
    DsnOption,
    SchemaOption,
    StoreOption,
    archive_dir,
    audit_app,
    log_locator,
    opened_source,
    run_audit,
)
from broker.cli.output import err_console
from broker.core.errors import AuditError, ConfigError, Reason
from broker.core.tls_policy import check_amqp_url
from broker.state.private_files import open_private

# -- replay and export -------------------------------------------------------------------------------


def _moment(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(Reason.CONFIG_INVALID, f"{text!r} is not an ISO 8601 time") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _entry_json(entry: AuditEntry) -> dict[str, Any]:
    return {
        "index": entry.index,
        "kind": str(entry.kind),
        "time": format_time(entry.time),
        "message_id": None if entry.message_id is None else str(entry.message_id),
        "message_type": entry.message_type,
        "peer": entry.peer,
        "verdict": entry.verdict,
        "reason": entry.reason,
        "leaf_hash": entry.leaf_hash.hex(),
        "envelope_b64": base64.b64encode(entry.envelope).decode("ascii"),
    }


@asynccontextmanager
async def _output(path: Path | None) -> AsyncIterator[TextIO]:
    if path is None:
        yield sys.stdout
        return
    try:  # an export holds every entry's envelope: 0600 like the store it comes from
        handle = os.fdopen(
            open_private(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), "w", encoding="utf-8", newline=""
        )
    except OSError as exc:
        raise ConfigError(Reason.CONFIG_INVALID, f"cannot write {path}: {exc}") from exc
    with handle:
        yield handle


@audit_app.command()
def replay(
    since: Annotated[
        str | None, typer.Option("--since", help="ISO 8601; UTC when no offset is given.")
    ] = None,
    until: Annotated[str | None, typer.Option("--until", help="ISO 8601, exclusive.")] = None,
    message_type: Annotated[
        list[str] | None, typer.Option("--type", help="Only these message types.")
    ] = None,
    kind: Annotated[
        list[EntryKind] | None,
        typer.Option("--kind", help="Entry kinds to replay (default: sent, received)."),
    ] = None,
    jsonl: Annotated[
        Path | None, typer.Option("--jsonl", help="Write the replay as JSON lines here.")
    ] = None,
    to_queue: Annotated[str | None, typer.Option("--to-queue", help="Publish to this sandbox queue.")] = None,
    amqp_url: Annotated[
        str | None, typer.Option("--amqp-url", help="The sandbox broker (vhost in the URL).")
    ] = None,
    allow_subscriber_queue: Annotated[
        bool, typer.Option("--allow-subscriber-queue", help="Allow a production subscriber queue (sub.*).")
    ] = False,
    store: StoreOption = None,
    dsn: DsnOption = None,
    schema: SchemaOption = "audit",
    archive: ArchiveOption = None,
) -> None:
    """Replay stored messages, original bytes in original order, marked `x-replay: true`."""
    kinds = set(kind or [EntryKind.SENT, EntryKind.RECEIVED])
    types = set(message_type or [])
    start, end = _moment(since), _moment(until)

    def wanted(entry: AuditEntry) -> bool:
        return (
            entry.kind in kinds
            and (not types or entry.message_type in types)
            and (start is None or entry.time >= start)
            and (end is None or entry.time < end)
        )

    async def work() -> None:
        if (jsonl is None) == (to_queue is None):
            raise ConfigError(Reason.CONFIG_INVALID, "replay to exactly one of --jsonl or --to-queue")
        if to_queue is not None:
            check_replay_queue(to_queue, allow_subscriber_queue=allow_subscriber_queue)
        if amqp_url is not None:
            check_amqp_url(amqp_url)  # verified TLS to a sandbox on another host
        async with opened_source(log_locator(store, dsn, schema), schema) as source:
            rows = readable_entries(source, archive=archive_dir(archive), wanted=wanted)
            if jsonl is not None:
                count = await _replay_jsonl(rows, jsonl)
            elif to_queue is not None and amqp_url is not None:
                count = await _replay_queue(rows, queue=to_queue, url=amqp_url)
            else:
                raise ConfigError(Reason.CONFIG_INVALID, "--to-queue needs --amqp-url")
        err_console.print(f"replayed {count} messages")

    run_audit(work)


def check_replay_queue(queue: str, *, allow_subscriber_queue: bool) -> None:
    if queue.startswith(SUBSCRIBER_QUEUE_PREFIX) and not allow_subscriber_queue:
        raise ConfigError(
            Reason.AUDIT_REPLAY_REFUSED,
            f"{queue} is a production subscriber queue; replay into a sandbox, or pass --allow-subscriber-queue",
        )


async def _replay_jsonl(rows: AsyncIterator[AuditEntry], path: Path) -> int:
    count = 0
    async with _output(path) as handle:
        async for entry in rows:
            handle.write(json.dumps({**_entry_json(entry), "x-replay": True}, ensure_ascii=False) + "\n")
            count += 1
    return count


async def _replay_queue(rows: AsyncIterator[AuditEntry], *, queue: str, url: str) -> int:
    from broker.exchange.transport import RabbitTransport  # noqa: PLC0415 - only this command needs a broker

    transport = await RabbitTransport.connect(url=url, name="audit-replay")
    count = 0
    try:
        await transport.queue_counts(queue)  # refuses a queue that does not exist
        async for entry in rows:
            # One at a time, each confirmed before the next: the order is the log's.
            await transport.publish(
                exchange="",
                routing_key=queue,
                body=entry.envelope,
                message_id=str(entry.message_id),
                headers={
                    "x-replay": "true",
                    "x-audit-index": entry.index,
                    "x-audit-kind": str(entry.kind),
                    "x-type": entry.message_type or "",
                },
            )
            count += 1
    finally:
        await transport.close()
    return count


@audit_app.command()
def export(
    export_format: Annotated[str, typer.Option("--format", help="jsonl or csv")] = "jsonl",
    out: Annotated[
        Path | None, typer.Option("--out", help="File to write (default: standard output).")
    ] = None,
    store: StoreOption = None,
    dsn: DsnOption = None,
    schema: SchemaOption = "audit",
    archive: ArchiveOption = None,
) -> None:
    """Every entry with its leaf hash and base64 envelope, as JSON lines or CSV."""

    async def work() -> None:
        if export_format not in ("jsonl", "csv"):
            raise ConfigError(Reason.CONFIG_INVALID, f"--format {export_format!r}: use jsonl or csv")
        async with opened_source(log_locator(store, dsn, schema), schema) as source, _output(out) as handle:
            writer: csv.DictWriter[str] | None = None
            async for row in restored_rows(source, archive=archive_dir(archive)):
                if isinstance(row, ArchivedRow):
                    raise refuse_archived(row)
                if isinstance(row, UnreadableRow):
                    raise AuditError(row.reason, f"entry {row.index}: {row.diagnostic}")
                record = _entry_json(row)
                if export_format == "jsonl":
                    handle.write(json.dumps(record, ensure_ascii=False) + "\n")
                    continue
                if writer is None:
                    writer = csv.DictWriter(handle, fieldnames=list(record))
                    writer.writeheader()
                writer.writerow(record)

    run_audit(work)
