"""`broker audit ...`: the auditor's commands, read-only, offline on a copy of a store and trust bundles;
and the operator's two that write, `archive` and `compact` (docs/audit.md, "Archiving old entries").

Exit codes: 0 all checks passed; 1 something does not verify (the first bad index and why are
printed); 2 the command could not run (a missing file, an unreachable database, bad options).
"""

from __future__ import annotations

import asyncio
import base64
import csv
import json
import os
import re
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, TextIO, TypeVar
from uuid import UUID

import typer
from cryptography import x509
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from broker.agreement import load_agreement
from broker.audit.archive import COMPACTION_MIN_AGE, ArchivedRange
from broker.audit.archive_db import open_writer
from broker.audit.archive_io import (
    ArchiveDirectory,
    readable_entries,
    refuse_archived,
    restored_rows,
    whole_entry,
)
from broker.audit.archiver import archive_range, compact_archived
from broker.audit.bundle import MAX_BUNDLE_BYTES, MESSAGE_KINDS, build_bundle, check_bundle, names_worker
from broker.audit.checkpoint import SignedCheckpoint
from broker.audit.entry import AuditEntry, EntryKind, entry_bytes, format_time
from broker.audit.proofs import (
    ConsistencyProof,
    InclusionProof,
    check_consistency,
    check_inclusion,
    read_proof,
)
from broker.audit.reconcile import digest, reconcile
from broker.audit.source import LogSource, consistency_proof, inclusion_proof, open_source
from broker.audit.verify import (
    ArchivedRow,
    ExternalCheckpoint,
    LogVerifier,
    UnreadableRow,
    witnessed_checkpoints,
)
from broker.errors import AuditError, ConfigError, ExchangeError, LocalError, Reason
from broker.keystore import KeyStore
from broker.pki import country_of
from broker.private_files import open_private, write_private
from broker.tls_policy import check_amqp_url
from broker.trust import TrustStore

audit_app = typer.Typer(
    help="Verify, prove, replay, export and reconcile audit logs (read-only); archive and compact them.",
    no_args_is_help=True,
)
console = Console()
err_console = Console(stderr=True)
T = TypeVar("T")

EXIT_FAILED = 1
EXIT_ERROR = 2
SUBSCRIBER_QUEUE_PREFIX = "sub."
_CRL_BLOCK = re.compile(rb"-----BEGIN X509 CRL-----.+?-----END X509 CRL-----", re.DOTALL)

StoreOption = Annotated[Path | None, typer.Option("--store", help="A copy of a SQLite audit store.")]
DsnOption = Annotated[str | None, typer.Option("--dsn", help="PostgreSQL URL of an audit database.")]
SchemaOption = Annotated[
    str, typer.Option("--schema", help="PostgreSQL schema of the log (gateways use audit_tj, audit_ru).")
]
KeysOption = Annotated[
    Path | None, typer.Option("--keys", help="A keys directory holding both countries' CA certificates.")
]
BundleOption = Annotated[
    list[Path] | None, typer.Option("--trust-bundle", help="A country's trust bundle (PEM); repeatable.")
]
OriginOption = Annotated[
    str | None, typer.Option("--origin", help="The gateway whose log this is, e.g. RU-GATEWAY.")
]
ArchiveOption = Annotated[
    Path | None,
    typer.Option(
        "--archive", help="The directory holding the log's archive segments (what `archive` wrote)."
    ),
]


class VerificationFailed(Exception):
    """A check failed: printed and turned into exit code 1."""


def _run(work: Callable[[], Awaitable[T]]) -> T:
    try:
        return asyncio.run(_call(work))
    except VerificationFailed as failed:
        err_console.print(f"[red]FAILED[/red] {escape(str(failed))}")
        raise typer.Exit(EXIT_FAILED) from None
    except LocalError as error:
        err_console.print(f"[red]error[/red] {escape(f'[{error.reason}] {error.diagnostic}')}")
        raise typer.Exit(EXIT_ERROR) from None
    except ExchangeError as error:  # a remote-family error: something did not verify
        err_console.print(f"[red]FAILED[/red] {escape(f'[{error.reason}] {error.diagnostic}')}")
        raise typer.Exit(EXIT_FAILED) from None


async def _call(work: Callable[[], Awaitable[T]]) -> T:
    return await work()


def _locator(store: Path | None, dsn: str | None, schema: str) -> str:
    if (store is None) == (dsn is None):
        raise ConfigError(Reason.CONFIG_INVALID, "name the log with exactly one of --store or --dsn")
    return str(store) if store is not None else f"{dsn}#{schema}"


@asynccontextmanager
async def _opened(locator: str, schema: str = "audit") -> AsyncIterator[LogSource]:
    source = await open_source(locator, schema=schema)
    try:
        yield source
    finally:
        await source.close()


def load_trust(keys: Path | None, bundles: list[Path] | None) -> TrustStore:
    """Anchors from a keys directory, or from trust bundle files grouped by their CA's country."""
    if keys is not None:
        return KeyStore(root=keys).trust_store(load_agreement().countries)
    if not bundles:
        raise ConfigError(
            Reason.CONFIG_INVALID, "give the trust anchors with --keys DIR or --trust-bundle FILE"
        )
    anchors: dict[str, list[x509.Certificate]] = {}
    crls: dict[str, list[x509.CertificateRevocationList]] = {}
    for path in bundles:
        try:
            data = path.read_bytes()
            certs = x509.load_pem_x509_certificates(data)
            bundle_crls = [x509.load_pem_x509_crl(block) for block in _CRL_BLOCK.findall(data)]
        except (OSError, ValueError) as exc:
            raise ConfigError(Reason.CONFIG_INVALID, f"trust bundle {path}: {exc}") from exc
        countries = {country_of(cert) for cert in certs}
        if len(countries) != 1 or None in countries:
            raise ConfigError(Reason.CONFIG_INVALID, f"trust bundle {path}: not the CAs of one country")
        [country] = countries
        assert country is not None
        anchors.setdefault(country, []).extend(certs)
        crls.setdefault(country, []).extend(bundle_crls)
    return TrustStore(anchors=anchors, crls=crls)


def _archive(directory: Path | None, trust: TrustStore | None = None) -> ArchiveDirectory | None:
    return None if directory is None else ArchiveDirectory(directory, trust=trust)


def _read(path: Path, *, limit: int | None = None) -> bytes:
    """The file's bytes; with a `limit`, at most one byte more than it is read."""
    try:
        with path.open("rb") as handle:
            return handle.read() if limit is None else handle.read(limit + 1)
    except OSError as exc:
        raise ConfigError(Reason.CONFIG_INVALID, f"cannot read {path}: {exc}") from exc


def _write(path: Path, data: bytes) -> None:
    """Proofs and bundles quote audit entries: written 0600 (`broker.private_files`)."""
    try:
        write_private(path, data)
    except OSError as exc:
        raise ConfigError(Reason.CONFIG_INVALID, f"cannot write {path}: {exc}") from exc


async def _entries(source: LogSource, **where: Any) -> list[AuditEntry]:
    """Readable entries selected by kind and/or message id (unreadable rows are `verify`'s business)."""
    return [row async for row in source.select(**where) if isinstance(row, AuditEntry)]


async def _checkpoints(source: LogSource) -> list[SignedCheckpoint]:
    found = []
    for entry in await _entries(source, kind=EntryKind.CHECKPOINT):
        try:
            found.append(SignedCheckpoint.from_bytes(entry.envelope))
        except ExchangeError:
            continue  # a broken checkpoint is reported by `verify`, not used here
    return found


async def _covering_checkpoint(source: LogSource, index: int) -> SignedCheckpoint:
    candidates = [cp for cp in await _checkpoints(source) if cp.body.tree_size > index]
    if not candidates:
        raise AuditError(
            Reason.AUDIT_NOT_COVERED,
            f"entry {index} is newer than every signed checkpoint in {source.name}; "
            f"copy the store again after the gateway's next checkpoint",
        )
    return max(candidates, key=lambda cp: cp.body.tree_size)


async def _prove(source: LogSource, entry: AuditEntry, checkpoint: SignedCheckpoint) -> InclusionProof:
    size = checkpoint.body.tree_size
    return InclusionProof(
        entry=entry_bytes(entry),
        index=entry.index,
        tree_size=size,
        path=tuple(await inclusion_proof(source, entry.index, size)),
        checkpoint=checkpoint,
    )


# -- verify ------------------------------------------------------------------------------------------


async def _external_checkpoints(
    *, origin: str | None, witness_stores: list[str], known: list[Path], trust: TrustStore, schema: str
) -> list[ExternalCheckpoint]:
    external = [
        ExternalCheckpoint(
            checkpoint=SignedCheckpoint.from_bytes(_read(path)), source=f"checkpoint file {path}"
        )
        for path in known
    ]
    if witness_stores and origin is None:
        raise ConfigError(
            Reason.CONFIG_INVALID, "--witness-store needs --origin (or a checkpoint in the log)"
        )
    for locator in witness_stores:
        async with _opened(locator, schema) as peer:
            rows = await _entries(peer, kind=EntryKind.WITNESS)
            external += witnessed_checkpoints(rows, origin=origin or "", trust=trust, source=peer.name)
    return external


@audit_app.command()
def verify(
    store: StoreOption = None,
    dsn: DsnOption = None,
    schema: SchemaOption = "audit",
    keys: KeysOption = None,
    trust_bundle: BundleOption = None,
    origin: OriginOption = None,
    witness_store: Annotated[
        list[str] | None,
        typer.Option("--witness-store", help="The peer's log (path or URL#schema): its WITNESS entries."),
    ] = None,
    known_checkpoint: Annotated[
        list[Path] | None,
        typer.Option("--known-checkpoint", help="A checkpoint file kept from an earlier audit."),
    ] = None,
    archive: ArchiveOption = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
) -> None:
    """Every leaf, every checkpoint and every envelope signature; exit 1 naming the first bad index.

    Entries whose envelopes were compacted are checked against their segments in --archive; without
    it they count by their stored leaf hashes alone, and the ranges concerned are listed."""

    async def work() -> None:
        trust = load_trust(keys, trust_bundle)
        async with _opened(_locator(store, dsn, schema), schema) as source:
            log_origin = origin
            if log_origin is None:
                checkpoints = await _checkpoints(source)
                log_origin = checkpoints[0].body.origin if checkpoints else None
            external = await _external_checkpoints(
                origin=log_origin,
                witness_stores=witness_store or [],
                known=known_checkpoint or [],
                trust=trust,
                schema=schema,
            )
            verifier = LogVerifier(trust=trust, origin=log_origin, external=external)
            total = await source.size()
            ranges = await source.segments()
            hash_only: dict[str, int] = {}
            with _progress(enabled=progress) as bar:
                task = bar.add_task("verifying", total=total)
                async for row in restored_rows(source, archive=_archive(archive, trust), ranges=ranges):
                    if isinstance(row, ArchivedRow):
                        hash_only[row.segment] = hash_only.get(row.segment, 0) + 1
                    if verifier.feed(row) is not None:
                        break
                    bar.advance(task)
            report = verifier.finish()
        console.print(
            f"{report.size} entries, root {report.root.hex()}; {report.checkpoints} checkpoints, "
            f"{report.envelopes} envelope signatures, {report.witnesses} witness records, "
            f"{report.countersigned} of our checkpoints countersigned by the peer, "
            f"{report.external_matched} of {len(external)} external checkpoints matched"
        )
        _print_archived(ranges, hash_only=hash_only, archive=archive, reached=report.size)
        if report.finding is not None:
            raise VerificationFailed(str(report.finding))
        console.print("[green]OK[/green] the log verifies")

    _run(work)


def _print_archived(
    ranges: list[ArchivedRange], *, hash_only: dict[str, int], archive: Path | None, reached: int
) -> None:
    """What verification made of each archived range it got through: checked against its segment, or
    by hash only."""
    for archived in ranges:
        if archived.end_index > reached:
            continue
        if archive is not None:
            console.print(
                f"entries [{archived.first_index}, {archived.end_index}): checked against {archived.segment}"
            )
        elif hash_only.get(archived.segment):
            console.print(
                f"[yellow]entries [{archived.first_index}, {archived.end_index}): "
                f"{hash_only[archived.segment]} compacted entries checked by their stored leaf hashes only"
                f"[/yellow] (their records and signatures are in {archived.segment}: pass --archive DIR)"
            )
        else:
            console.print(
                f"entries [{archived.first_index}, {archived.end_index}): archived in {archived.segment}, "
                f"not compacted (pass --archive DIR to check the segment too)"
            )


def _progress(*, enabled: bool) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err_console,
        disable=not enabled,
        transient=True,
    )


# -- checkpoints and proofs -------------------------------------------------------------------------


@audit_app.command()
def checkpoint(
    out: Annotated[Path, typer.Option("--out", help="Where to write the checkpoint file.")],
    store: StoreOption = None,
    dsn: DsnOption = None,
    schema: SchemaOption = "audit",
    size: Annotated[int | None, typer.Option("--size", help="The checkpoint of this tree size.")] = None,
) -> None:
    """Copy a signed checkpoint out of the log (the latest by default), e.g. to keep for later audits."""

    async def work() -> None:
        async with _opened(_locator(store, dsn, schema), schema) as source:
            found = [cp for cp in await _checkpoints(source) if size is None or cp.body.tree_size == size]
        if not found:
            raise AuditError(Reason.AUDIT_NOT_COVERED, "no such signed checkpoint in the log")
        chosen = max(found, key=lambda cp: cp.body.tree_size)
        _write(out, chosen.to_bytes())
        console.print(f"checkpoint of {chosen.body.origin}: {chosen.body.tree_size} entries -> {out}")

    _run(work)


@audit_app.command()
def prove(
    message_id: UUID,
    out: Annotated[Path, typer.Option("--out", help="Where to write the proof file.")],
    kind: Annotated[
        EntryKind, typer.Option("--kind", help="Which entry about the message.")
    ] = EntryKind.RECEIVED,
    store: StoreOption = None,
    dsn: DsnOption = None,
    schema: SchemaOption = "audit",
    keys: KeysOption = None,
    trust_bundle: BundleOption = None,
    archive: ArchiveOption = None,
) -> None:
    """Write an inclusion proof of one entry against the latest signed checkpoint covering it."""

    async def work() -> None:
        trust = load_trust(keys, trust_bundle)
        async with _opened(_locator(store, dsn, schema), schema) as source:
            entries = await _entries(source, kind=kind, message_id=message_id)
            if not entries:
                raise AuditError(Reason.AUDIT_OUT_OF_RANGE, f"no {kind} entry for message {message_id}")
            entry = await whole_entry(source, entries[0], archive=_archive(archive, trust))
            covering = await _covering_checkpoint(source, entry.index)
            proof = await _prove(source, entry, covering)
        check_inclusion(proof, trust=trust)  # never hand out a proof that does not check
        _write(out, proof.to_bytes())
        console.print(
            f"entry {proof.index} ({kind}) in the signed tree of {proof.tree_size} entries -> {out}"
        )

    _run(work)


@audit_app.command("check-proof")
def check_proof(
    file: Path,
    keys: KeysOption = None,
    trust_bundle: BundleOption = None,
) -> None:
    """Check an inclusion or consistency proof file with the trust bundles alone (no store)."""

    async def work() -> None:
        trust = load_trust(keys, trust_bundle)
        proof = read_proof(_read(file))
        if isinstance(proof, ConsistencyProof):
            check_consistency(proof, trust=trust)
            console.print(
                f"[green]OK[/green] {proof.old.body.origin}'s log of {proof.new.body.tree_size} entries "
                f"extends the one of {proof.old.body.tree_size}"
            )
            return
        proven = check_inclusion(proof, trust=trust)
        draft = proven.draft
        console.print(
            f"[green]OK[/green] entry {proven.index}: {draft.kind} {draft.message_type or ''} "
            f"{draft.message_id or ''} at {format_time(draft.time)}, in {proven.checkpoint.body.origin}'s "
            f"log of {proof.tree_size} entries signed at {format_time(proven.checkpoint.body.time)}"
        )

    _run(work)


@audit_app.command()
def consistency(
    old: Path,
    new: Path,
    store: StoreOption = None,
    dsn: DsnOption = None,
    schema: SchemaOption = "audit",
    keys: KeysOption = None,
    trust_bundle: BundleOption = None,
    out: Annotated[Path | None, typer.Option("--out", help="Also write the proof file here.")] = None,
) -> None:
    """Prove from the store that the log of the NEW checkpoint extends the log of the OLD one."""

    async def work() -> None:
        trust = load_trust(keys, trust_bundle)
        old_cp = SignedCheckpoint.from_bytes(_read(old))
        new_cp = SignedCheckpoint.from_bytes(_read(new))
        if old_cp.body.tree_size > new_cp.body.tree_size:
            old_cp, new_cp = new_cp, old_cp
        async with _opened(_locator(store, dsn, schema), schema) as source:
            stored = await source.size()
            if new_cp.body.tree_size > stored:
                raise AuditError(
                    Reason.AUDIT_OUT_OF_RANGE, f"the store has {stored} entries, fewer than the checkpoint"
                )
            path = await consistency_proof(source, old_cp.body.tree_size, new_cp.body.tree_size)
        proof = ConsistencyProof(old=old_cp, new=new_cp, path=tuple(path))
        for node in proof.path:
            console.print(node.hex())
        check_consistency(proof, trust=trust)
        if out is not None:
            _write(out, proof.to_bytes())
        console.print(
            f"[green]OK[/green] {new_cp.body.tree_size} entries extend {old_cp.body.tree_size} "
            f"({len(proof.path)} hashes)"
        )

    _run(work)


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
        async with _opened(_locator(store, dsn, schema), schema) as source:
            rows = readable_entries(source, archive=_archive(archive), wanted=wanted)
            if jsonl is not None:
                count = await _replay_jsonl(rows, jsonl)
            elif to_queue is not None and amqp_url is not None:
                count = await _replay_queue(rows, queue=to_queue, url=amqp_url)
            else:
                raise ConfigError(Reason.CONFIG_INVALID, "--to-queue needs --amqp-url")
        err_console.print(f"replayed {count} messages")

    _run(work)


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
    from broker.transport import RabbitTransport  # noqa: PLC0415 - only this command needs a broker

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
        async with _opened(_locator(store, dsn, schema), schema) as source, _output(out) as handle:
            writer: csv.DictWriter[str] | None = None
            async for row in restored_rows(source, archive=_archive(archive)):
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

    _run(work)


# -- reconcile and bundles ---------------------------------------------------------------------------


@audit_app.command("reconcile")
def reconcile_command(
    store_a: Annotated[str, typer.Argument(help="One country's log: a SQLite path or URL#schema.")],
    store_b: Annotated[str, typer.Argument(help="The other country's log.")],
    archive_a: Annotated[
        Path | None, typer.Option("--archive-a", help="The archive segments of the first log.")
    ] = None,
    archive_b: Annotated[
        Path | None, typer.Option("--archive-b", help="The archive segments of the second log.")
    ] = None,
) -> None:
    """Every message one side sent is received (or rejected) and receipted by the other; list each gap."""

    async def work() -> None:
        digests = []
        for locator, archive in ((store_a, archive_a), (store_b, archive_b)):
            async with _opened(locator) as source:
                rows = [row async for row in readable_entries(source, archive=_archive(archive))]
                digests.append(digest(source.name, rows))
        gaps = reconcile(digests[0], digests[1])
        for gap in gaps:
            console.print(f"[yellow]gap[/yellow] {escape(str(gap))}")
        if gaps:
            raise VerificationFailed(
                f"[{Reason.AUDIT_RECONCILE_GAP}] {len(gaps)} gap(s) between the two logs"
            )
        console.print(
            f"[green]OK[/green] {len(digests[0].sent)} + {len(digests[1].sent)} messages reconciled, no gaps"
        )

    _run(work)


@audit_app.command()
def bundle(
    worker: Annotated[str, typer.Option("--worker", help="The worker's identity document number.")],
    out: Annotated[Path, typer.Option("--out", help="The archive to write (.zip).")],
    store: StoreOption = None,
    dsn: DsnOption = None,
    schema: SchemaOption = "audit",
    keys: KeysOption = None,
    trust_bundle: BundleOption = None,
    archive: ArchiveOption = None,
) -> None:
    """Every message, receipt and inclusion proof about one worker, in one archive."""

    async def work() -> None:
        trust = load_trust(keys, trust_bundle)
        async with _opened(_locator(store, dsn, schema), schema) as source:
            rows = [row async for row in readable_entries(source, archive=_archive(archive, trust))]
            about = {
                row.message_id
                for row in rows
                if row.kind in MESSAGE_KINDS
                and row.message_id is not None
                and names_worker(row.envelope, worker)
            }
            chosen = [row for row in rows if row.message_id in about]
            if not chosen:
                raise AuditError(Reason.AUDIT_OUT_OF_RANGE, f"no message in the log names document {worker}")
            covering = await _covering_checkpoint(source, max(row.index for row in chosen))
            proofs = [await _prove(source, row, covering) for row in chosen]
        data = build_bundle(document_number=worker, proofs=proofs)
        check_bundle(data, trust=trust)  # never hand out an archive that does not check
        _write(out, data)
        console.print(f"{len(proofs)} entries about {len(about)} messages -> {out}")

    _run(work)


@audit_app.command("check-bundle")
def check_bundle_command(
    file: Path,
    keys: KeysOption = None,
    trust_bundle: BundleOption = None,
) -> None:
    """Check a worker's archive offline: every proof, signature and the archive's own bytes."""

    async def work() -> None:
        data = _read(file, limit=MAX_BUNDLE_BYTES)  # a larger file is refused, not read into memory
        checked = check_bundle(data, trust=load_trust(keys, trust_bundle))
        for entry in checked.entries:
            draft = entry.draft
            console.print(
                f"entry {entry.index}: {draft.kind} {draft.message_type or ''} {draft.message_id} "
                f"at {format_time(draft.time)}"
            )
        console.print(
            f"[green]OK[/green] {len(checked.entries)} entries about document {checked.document_number}, "
            f"in {checked.checkpoint.body.origin}'s log of {checked.checkpoint.body.tree_size} entries"
        )

    _run(work)


# -- archiving (the operator's; these two write to the store) ---------------------------------------

MinAgeOption = Annotated[
    float,
    typer.Option(
        "--min-age-days",
        help="Compact only ranges whose newest entry is at least this old (the gateway's replay window).",
    ),
]


async def _compact(
    locator: str, schema: str, *, directory: Path, trust: TrustStore, min_age_days: float
) -> None:
    writer = await open_writer(locator, schema=schema)
    try:
        async with _opened(locator, schema) as source:
            done = await compact_archived(
                source,
                writer,
                directory=directory,
                trust=trust,
                now=datetime.now(UTC),
                min_age=timedelta(days=min_age_days),
            )
    finally:
        await writer.close()
    for item in done:
        archived = item.archived
        console.print(
            f"entries [{archived.first_index}, {archived.end_index}): "
            + (f"{item.emptied} envelopes dropped" if item.emptied else "compacted already")
            + f", records in {directory / archived.segment}"
        )


@audit_app.command("archive")
def archive_command(
    up_to: Annotated[
        int,
        typer.Option(
            "--up-to", help="Archive the entries below this index; a signed checkpoint must cover it."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="The archive directory: one per log, kept for good.")],
    store: Annotated[Path | None, typer.Option("--store", help="The gateway's SQLite audit store.")] = None,
    dsn: DsnOption = None,
    schema: SchemaOption = "audit",
    keys: KeysOption = None,
    trust_bundle: BundleOption = None,
    compact_after: Annotated[
        bool,
        typer.Option("--compact", help="Then drop the archived envelopes from the store (see `compact`)."),
    ] = False,
    min_age_days: MinAgeOption = COMPACTION_MIN_AGE.days,
) -> None:
    """Operator: copy the entries from the first unarchived one up to --up-to into a segment file.

    The segment and its manifest are fsynced, read back and checked against the store and a signed
    checkpoint before the range is recorded in the store. The store keeps every entry."""

    async def work() -> None:
        trust = load_trust(keys, trust_bundle)
        locator = _locator(store, dsn, schema)
        writer = await open_writer(locator, schema=schema)
        try:
            async with _opened(locator, schema) as source:
                manifest = await archive_range(source, writer, up_to=up_to, directory=out, trust=trust)
        finally:
            await writer.close()
        signed = manifest.checkpoint.body
        console.print(
            f"entries [{manifest.first_index}, {manifest.end_index}) -> {out / manifest.segment}, "
            f"anchored to {signed.origin}'s checkpoint of {signed.tree_size} entries signed at "
            f"{format_time(signed.time)}"
        )
        if compact_after:
            await _compact(locator, schema, directory=out, trust=trust, min_age_days=min_age_days)

    _run(work)


@audit_app.command()
def compact(
    archive: Annotated[Path, typer.Option("--archive", help="The directory holding the log's segments.")],
    store: Annotated[Path | None, typer.Option("--store", help="The gateway's SQLite audit store.")] = None,
    dsn: DsnOption = None,
    schema: SchemaOption = "audit",
    keys: KeysOption = None,
    trust_bundle: BundleOption = None,
    min_age_days: MinAgeOption = COMPACTION_MIN_AGE.days,
) -> None:
    """Operator: drop from the store the envelopes of archived entries, each range only after its
    segment was read from --archive and checked entry by entry against the store."""

    async def work() -> None:
        trust = load_trust(keys, trust_bundle)
        await _compact(
            _locator(store, dsn, schema), schema, directory=archive, trust=trust, min_age_days=min_age_days
        )

    _run(work)
