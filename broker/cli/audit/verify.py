"""`broker audit verify`: the whole log against its checkpoints, witnesses and archive."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from broker.audit.archive import ArchivedRange
from broker.audit.checkpoint import SignedCheckpoint
from broker.audit.entry import EntryKind, format_time
from broker.audit.stores.archive_files import (
    restored_rows,
)
from broker.audit.stores.proving import checkpoints_of, entries_of
from broker.audit.stores.snapshot import wal_copy_warning
from broker.audit.verify import (
    ArchivedRow,
    ExternalCheckpoint,
    LogVerifier,
    VerifyReport,
    witnessed_checkpoints,
)
from broker.cli.audit.common import (
    ArchiveOption,
    BundleOption,
    DsnOption,
    KeysOption,
    OriginOption,
    SchemaOption,
    StoreOption,
    VerificationFailed,
    archive_dir,
    audit_app,
    load_trust,
    log_locator,
    opened_source,
    progress_bar,
    read_bytes,
    run_audit,
)
from broker.cli.output import console
from broker.core.errors import ConfigError, Reason
from broker.core.trust import TrustStore

# -- verify ------------------------------------------------------------------------------------------


async def _external_checkpoints(
    *, origin: str | None, witness_stores: list[str], known: list[Path], trust: TrustStore, schema: str
) -> list[ExternalCheckpoint]:
    external = [
        ExternalCheckpoint(
            checkpoint=SignedCheckpoint.from_bytes(read_bytes(path)), source=f"checkpoint file {path}"
        )
        for path in known
    ]
    if witness_stores and origin is None:
        raise ConfigError(
            Reason.CONFIG_INVALID, "--witness-store needs --origin (or a checkpoint in the log)"
        )
    for locator in witness_stores:
        async with opened_source(locator, schema) as peer:
            rows = await entries_of(peer, kind=EntryKind.WITNESS)
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
        locator = log_locator(store, dsn, schema)
        # Before the source opens: reading a WAL-mode file may create its -wal file.
        copied_without_wal = wal_copy_warning(store) if store is not None else None
        async with opened_source(locator, schema) as source:
            log_origin = origin
            if log_origin is None:
                checkpoints = await checkpoints_of(source)
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
            with progress_bar(enabled=progress) as bar:
                task = bar.add_task("verifying", total=total)
                async for row in restored_rows(source, archive=archive_dir(archive, trust), ranges=ranges):
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
        if copied_without_wal is not None:
            console.print(f"[yellow]warning[/yellow] {copied_without_wal}")
        if report.finding is not None:
            raise VerificationFailed(str(report.finding))
        console.print(f"[green]OK[/green] the log verifies: {_reach(report)}")

    run_audit(work)


def _reach(report: VerifyReport) -> str:
    """How far the verified log goes: a copy that holds a prefix of the log shows as one."""
    reached = f"{report.size} entries, [0, {report.size})"
    if report.latest_checkpoint is None:
        return f"{reached}; no signed checkpoint covers them"
    signed = report.latest_checkpoint.body
    after = report.size - signed.tree_size
    return (
        f"{reached}; the last signed checkpoint covers the first {signed.tree_size}, signed by "
        f"{signed.origin} at {format_time(signed.time)}; "
        + ("1 entry after it is" if after == 1 else f"{after} entries after it are")
        + " not yet covered by a signed root"
    )


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
