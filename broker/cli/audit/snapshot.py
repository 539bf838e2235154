"""`broker audit snapshot`: a consistent copy of a running gateway's SQLite store, for the auditor."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from broker.audit.entry import format_time
from broker.audit.stores.proving import checkpoints_of
from broker.audit.stores.snapshot import snapshot_sqlite
from broker.cli.audit.common import (
    audit_app,
    opened_source,
    run_audit,
)
from broker.cli.output import console


@audit_app.command()
def snapshot(
    store: Annotated[
        Path, typer.Option("--store", help="The gateway's SQLite audit store (it may be running).")
    ],
    out: Annotated[Path, typer.Option("--out", help="The snapshot file to create (never overwritten).")],
) -> None:
    """Copy a SQLite audit store as one transaction sees it, while its gateway goes on writing.

    SQLite's backup API, WAL included: one self-contained file, 0600, for `verify` and the other
    commands. A `cp` of a running store misses the entries still in its -wal file. PostgreSQL needs
    no snapshot: each command reads one REPEATABLE READ transaction (or use pg_dump of the schema)."""

    async def work() -> None:
        size = await asyncio.to_thread(snapshot_sqlite, store, out)
        async with opened_source(str(out)) as source:
            checkpoints = await checkpoints_of(source)
        console.print(f"{out}: {size} entries of {store}")
        if checkpoints:
            latest = max(checkpoints, key=lambda cp: cp.body.tree_size).body
            console.print(
                f"its newest checkpoint, by {latest.origin}, names the first {latest.tree_size} entries "
                f"at {format_time(latest.time)} (not yet verified: run `broker audit verify --store {out}`)"
            )
        else:
            console.print(
                "[yellow]it holds no signed checkpoint yet[/yellow]: nothing vouches for its entries"
            )

    run_audit(work)
