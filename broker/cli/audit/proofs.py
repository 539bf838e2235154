"""`broker audit checkpoint|prove|check-proof|consistency`: signed checkpoints and the proofs under them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated
from uuid import UUID

import typer

from broker.audit.checkpoint import SignedCheckpoint
from broker.audit.entry import EntryKind, format_time
from broker.audit.proofs import (
    ConsistencyProof,
    check_consistency,
    check_inclusion,
    read_proof,
)
from broker.audit.receipt_refs import RECEIPT_KINDS, batch_of
from broker.audit.stores.proving import checkpoints_of, prove_message
from broker.audit.stores.source import consistency_proof
from broker.cli.audit.common import (
    ArchiveOption,
    BundleOption,
    DsnOption,
    KeysOption,
    SchemaOption,
    StoreOption,
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
        async with opened_source(log_locator(store, dsn, schema), schema) as source:
            found = [cp for cp in await checkpoints_of(source) if size is None or cp.body.tree_size == size]
        if not found:
            raise AuditError(Reason.AUDIT_NOT_COVERED, "no such signed checkpoint in the log")
        chosen = max(found, key=lambda cp: cp.body.tree_size)
        write_bytes(out, chosen.to_bytes())
        console.print(f"checkpoint of {chosen.body.origin}: {chosen.body.tree_size} entries -> {out}")

    run_audit(work)


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
        async with opened_source(log_locator(store, dsn, schema), schema) as source:
            proof = await prove_message(source, message_id, kind, archive=archive_dir(archive, trust))
        check_inclusion(proof, trust=trust)  # never hand out a proof that does not check
        write_bytes(out, proof.to_bytes())
        console.print(
            f"entry {proof.index} ({kind}) in the signed tree of {proof.tree_size} entries -> {out}"
        )

    run_audit(work)


@audit_app.command("check-proof")
def check_proof(
    file: Path,
    keys: KeysOption = None,
    trust_bundle: BundleOption = None,
) -> None:
    """Check an inclusion or consistency proof file with the trust bundles alone (no store)."""

    async def work() -> None:
        trust = load_trust(keys, trust_bundle)
        proof = read_proof(read_bytes(file))
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
        batch = batch_of(draft.envelope) if draft.kind in RECEIPT_KINDS else None
        for line in batch[1].lines if batch is not None else ():
            console.print(
                f"  answers {line.message_id}: {line.verdict} {line.reason or ''} sha256 {line.sha256} "
                f"audit index {line.audit_index}"
            )

    run_audit(work)


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
        old_cp = SignedCheckpoint.from_bytes(read_bytes(old))
        new_cp = SignedCheckpoint.from_bytes(read_bytes(new))
        if old_cp.body.tree_size > new_cp.body.tree_size:
            old_cp, new_cp = new_cp, old_cp
        async with opened_source(log_locator(store, dsn, schema), schema) as source:
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
            write_bytes(out, proof.to_bytes())
        console.print(
            f"[green]OK[/green] {new_cp.body.tree_size} entries extend {old_cp.body.tree_size} "
            f"({len(proof.path)} hashes)"
        )

    run_audit(work)
