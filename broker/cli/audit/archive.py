"""`broker audit archive|compact`: the operator's two commands that write (docs/audit.md, "Archiving old entries")."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer

from broker.audit.archive import COMPACTION_MIN_AGE
from broker.audit.entry import format_time
from broker.audit.stores.archive_db import open_writer
from broker.audit.stores.archiver import archive_range, compact_archived
from broker.cli.audit.common import (
    BundleOption,
    DsnOption,
    KeysOption,
    SchemaOption,
    audit_app,
    load_trust,
    log_locator,
    opened_source,
    run_audit,
)
from broker.cli.output import console
from broker.core.trust import TrustStore

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
        async with opened_source(locator, schema) as source:
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
        locator = log_locator(store, dsn, schema)
        writer = await open_writer(locator, schema=schema)
        try:
            async with opened_source(locator, schema) as source:
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

    run_audit(work)


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
            log_locator(store, dsn, schema), schema, directory=archive, trust=trust, min_age_days=min_age_days
        )

    run_audit(work)
