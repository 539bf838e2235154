"""`broker audit reconcile|bundle|check-bundle`: compare both sides' logs; per-worker evidence bundles."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from broker.audit.bundle import (
    MAX_BUNDLE_BYTES,
    MESSAGE_KINDS,
    about_messages,
    build_bundle,
    check_bundle,
    names_worker,
)
from broker.audit.entry import format_time
from broker.audit.reconcile import digest, reconcile
from broker.audit.stores.archive_files import (
    readable_entries,
)
from broker.audit.stores.proving import covering_checkpoint, prove_entry
from broker.cli.audit.common import (
    ArchiveOption,
    BundleOption,
    DsnOption,
    KeysOption,
    SchemaOption,
    StoreOption,
    VerificationFailed,
    archive_dir,
    audit_app,
    load_trust,
    log_locator,
    opened_source,
    read_bytes,
    run_audit,
    write_bytes,
)
from broker.cli.output import console
from broker.core.errors import AuditError, Reason

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
            async with opened_source(locator) as source:
                rows = [row async for row in readable_entries(source, archive=archive_dir(archive))]
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

    run_audit(work)


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
        async with opened_source(log_locator(store, dsn, schema), schema) as source:
            rows = [row async for row in readable_entries(source, archive=archive_dir(archive, trust))]
            about = {
                row.message_id
                for row in rows
                if row.kind in MESSAGE_KINDS
                and row.message_id is not None
                and names_worker(row.envelope, worker)
            }
            chosen = about_messages(rows, about)
            if not chosen:
                raise AuditError(Reason.AUDIT_OUT_OF_RANGE, f"no message in the log names document {worker}")
            covering = await covering_checkpoint(source, max(row.index for row in chosen))
            proofs = [await prove_entry(source, row, covering) for row in chosen]
        data = build_bundle(document_number=worker, proofs=proofs)
        check_bundle(data, trust=trust)  # never hand out an archive that does not check
        write_bytes(out, data)
        console.print(f"{len(proofs)} entries about {len(about)} messages -> {out}")

    run_audit(work)


@audit_app.command("check-bundle")
def check_bundle_command(
    file: Path,
    keys: KeysOption = None,
    trust_bundle: BundleOption = None,
) -> None:
    """Check a worker's archive offline: every proof, signature and the archive's own bytes."""

    async def work() -> None:
        data = read_bytes(file, limit=MAX_BUNDLE_BYTES)  # a larger file is refused, not read into memory
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

    run_audit(work)
