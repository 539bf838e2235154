"""What the `broker audit` commands share: options, exit codes, opening a log, reading trust anchors.

Exit codes: 0 all checks passed; 1 something does not verify (the first bad index and why are
printed); 2 the command could not run (a missing file, an unreachable database, bad options).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from cryptography import x509
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from broker.audit.stores.archive_files import (
    ArchiveDirectory,
)
from broker.audit.stores.source import LogSource, open_source
from broker.cli.output import console_for, err_console
from broker.core.agreement import load_agreement
from broker.core.errors import ConfigError, ExchangeError, LocalError, Reason
from broker.core.trust import TrustStore
from broker.state.keystore import KeyStore
from broker.state.private_files import write_private
from broker.state.trust_bundles import read_bundle

audit_app = typer.Typer(
    help="Verify, prove, replay, export and reconcile audit logs (read-only); archive and compact them.",
    no_args_is_help=True,
)
T = TypeVar("T")

EXIT_FAILED = 1
EXIT_ERROR = 2
SUBSCRIBER_QUEUE_PREFIX = "sub."

StoreOption = Annotated[
    Path | None,
    typer.Option(
        "--store",
        help="A SQLite audit store: a snapshot (`broker audit snapshot`), or the store itself; "
        "never a cp of a running one (it misses the -wal file).",
    ),
]
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


def run_audit(work: Callable[[], Awaitable[T]]) -> T:
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


def log_locator(store: Path | None, dsn: str | None, schema: str) -> str:
    if (store is None) == (dsn is None):
        raise ConfigError(Reason.CONFIG_INVALID, "name the log with exactly one of --store or --dsn")
    return str(store) if store is not None else f"{dsn}#{schema}"


@asynccontextmanager
async def opened_source(locator: str, schema: str = "audit") -> AsyncIterator[LogSource]:
    source = await open_source(locator, schema=schema)
    try:
        yield source
    finally:
        await source.close()


def load_trust(keys: Path | None, bundles: list[Path] | None) -> TrustStore:
    """Anchors from a keys directory, or from trust bundle files grouped by their CA's country."""
    if keys is not None:
        store = KeyStore(root=keys)
        # Every country whose CA the directory holds (own or imported): a log with a second peer
        # (TJ with RU and UZ) names certificates of all of them, not only the default agreement's.
        held = sorted({record.country for record in store.inventory() if record.kind in ("ca", "peer-ca")})
        return store.trust_store(held or load_agreement().countries)
    if not bundles:
        raise ConfigError(
            Reason.CONFIG_INVALID, "give the trust anchors with --keys DIR or --trust-bundle FILE"
        )
    anchors: dict[str, list[x509.Certificate]] = {}
    crls: dict[str, list[x509.CertificateRevocationList]] = {}
    for path in bundles:
        try:
            bundle = read_bundle(path.read_bytes())
        except OSError as exc:
            raise ConfigError(Reason.CONFIG_INVALID, f"trust bundle {path}: {exc.strerror}") from exc
        except ConfigError as exc:
            raise ConfigError(exc.reason, f"trust bundle {path}: {exc.diagnostic}") from exc
        # Only the CAs are anchors; the authorities' certificates a bundle also carries are not needed
        # (every signed envelope brings its signer's certificate).
        anchors.setdefault(bundle.country, []).extend(bundle.cas)
        crls.setdefault(bundle.country, []).extend(bundle.crls)
    return TrustStore(anchors=anchors, crls=crls)


def archive_dir(directory: Path | None, trust: TrustStore | None = None) -> ArchiveDirectory | None:
    return None if directory is None else ArchiveDirectory(directory, trust=trust)


def read_bytes(path: Path, *, limit: int | None = None) -> bytes:
    """The file's bytes; with a `limit`, at most one byte more than it is read."""
    try:
        with path.open("rb") as handle:
            return handle.read() if limit is None else handle.read(limit + 1)
    except OSError as exc:
        raise ConfigError(Reason.CONFIG_INVALID, f"cannot read {path}: {exc}") from exc


def write_bytes(path: Path, data: bytes) -> None:
    """Proofs and bundles quote audit entries: written 0600 (`broker.state.private_files`)."""
    try:
        write_private(path, data)
    except OSError as exc:
        raise ConfigError(Reason.CONFIG_INVALID, f"cannot write {path}: {exc}") from exc


def progress_bar(*, enabled: bool) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        # The console of standard error itself: rich's Live enters it as a context manager, which
        # the err_console stand-in (resolved per call) is not.
        console=console_for(sys.stderr),
        disable=not enabled,
        transient=True,
    )
