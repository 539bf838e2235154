"""`broker audit reconcile|bundle|check-bundle`: compare both sides' logs; per-worker evidence bundles."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from broker.audit.bundle import (
    MAX_BUNDLE_BYTES,
    check_bundle,
)
from broker.audit.entry import format_time
from broker.audit.reconcile import digest, reconcile
from broker.audit.sealed_evidence import Erased, SealedSearch
from broker.audit.stores.archive_files import (
    readable_entries,
)
from broker.audit.stores.worker_evidence import worker_bundle
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
from broker.core.errors import ConfigError, Reason
from broker.state.key_files import load_agreement_keys
from broker.state.key_vault import VAULT_FILE

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
    between: Annotated[
        str | None,
        typer.Option(
            "--between",
            help="Two countries, e.g. TJ,UZ: only the messages exchanged between them (a gateway "
            "with several peers keeps one log for all).",
        ),
    ] = None,
) -> None:
    """Every message one side sent is received (or rejected) and receipted by the other; list each gap."""

    async def work() -> None:
        pair = _country_pair(between)
        digests = []
        for locator, archive in ((store_a, archive_a), (store_b, archive_b)):
            async with opened_source(locator) as source:
                rows = [row async for row in readable_entries(source, archive=archive_dir(archive))]
                digests.append(digest(source.name, rows, between=pair))
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


def _country_pair(between: str | None) -> tuple[str, ...]:
    if between is None:
        return ()
    pair = tuple(part.strip().upper() for part in between.split(","))
    if len(pair) != 2 or pair[0] == pair[1] or not all(len(c) == 2 and c.isalpha() for c in pair):
        raise ConfigError(Reason.CONFIG_INVALID, f"--between {between!r} must name two countries, e.g. TJ,UZ")
    return pair


KeyOption = Annotated[
    list[Path] | None,
    typer.Option(
        "--key",
        help="The auditor's key-agreement private key (PEM), or its authority's `encryption` folder "
        "(every generation); repeatable. Opens sealed payloads, with --vault.",
    ),
]
VaultOption = Annotated[
    Path | None,
    typer.Option(
        "--vault",
        help=f"The gateway's key vault (<state>/<cc>/{VAULT_FILE}) or a copy: the wrapped data keys.",
    ),
]


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
    key: KeyOption = None,
    vault: VaultOption = None,
) -> None:
    """Every message, receipt and inclusion proof about one worker, in one archive; sealed payloads
    opened with the auditor's key (--key, --vault) and shown beside their ciphertext."""

    async def work() -> None:
        if key and vault is None:
            raise ConfigError(
                Reason.CONFIG_INVALID, "--key needs --vault: the wrapped data keys are in the key vault"
            )
        auditor_keys = load_agreement_keys(key or [])
        trust = load_trust(keys, trust_bundle)
        async with opened_source(log_locator(store, dsn, schema), schema) as source:
            found = await worker_bundle(
                source, worker=worker, archive=archive_dir(archive, trust), keys=auditor_keys, vault=vault
            )
        check_bundle(found.data, trust=trust)  # never hand out an archive that does not check
        write_bytes(out, found.data)
        console.print(f"{found.entries} entries about {found.messages} messages -> {out}")
        _report_sealed(found.sealed, opened=found.opened)

    run_audit(work)


def _report_sealed(sealed: SealedSearch, *, opened: int) -> None:
    if sealed.opened:
        console.print(
            f"{opened} of {len(sealed.opened)} sealed messages opened with the auditor's key name the worker"
        )
    _report_unopened(sealed.erased, sealed.not_searched)


def _report_unopened(erased: Sequence[Erased], not_searched: Mapping[str, int], *, said: str = "") -> None:
    for item in erased:
        console.print(
            f"erased{said}: sealed message {item.message_id}, data key destroyed {item.erased_at.isoformat()}"
        )
    for reason, count in not_searched.items():
        console.print(f"[yellow]not searched[/yellow]{said}: {count} sealed message(s), {reason}")


@audit_app.command("check-bundle")
def check_bundle_command(
    file: Path,
    keys: KeysOption = None,
    trust_bundle: BundleOption = None,
) -> None:
    """Check a worker's archive offline: every proof, signature and opened payload, and the archive's bytes."""

    async def work() -> None:
        data = read_bytes(file, limit=MAX_BUNDLE_BYTES)  # a larger file is refused, not read into memory
        checked = check_bundle(data, trust=load_trust(keys, trust_bundle))
        for entry in checked.entries:
            draft = entry.draft
            console.print(
                f"entry {entry.index}: {draft.kind} {draft.message_type or ''} {draft.message_id} "
                f"at {format_time(draft.time)}"
            )
        for item in checked.opened:
            console.print(
                f"opened {item.message_id}: its data key decrypts the signed ciphertext to the payload in {item.name}"
            )
        _report_unopened(checked.erased, checked.not_searched, said=" (as the bundler states)")
        console.print(
            f"[green]OK[/green] {len(checked.entries)} entries about document {checked.document_number}, "
            f"{len(checked.opened)} sealed payloads opened, "
            f"in {checked.checkpoint.body.origin}'s log of {checked.checkpoint.body.tree_size} entries"
        )

    run_audit(work)
