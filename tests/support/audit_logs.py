"""Both countries' audit logs of one exchange, in SQLite or PostgreSQL, with raw SQL access for tampering."""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import asyncpg  # asyncpg ships no type information
import pytest
from typer.testing import CliRunner

from broker.audit.stores.base import StoreBase
from broker.audit.stores.postgres import PostgresAuditStore
from broker.audit.stores.sqlite import SqliteAuditStore
from broker.cli.audit import audit_app
from broker.core.agreement import Agreement
from broker.core.trust import TrustStore
from broker.state.keystore import KeyStore
from tests.support.audit_run import ExchangeRun, exchange_in_stores

PG_DSN = os.environ.get("AUDIT_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
RABBIT_URL = os.environ.get("AUDIT_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
runner = CliRunner()
TRUSTING_COMMANDS = {"verify", "prove", "check-proof", "consistency", "bundle", "check-bundle"}

ENTRY_GUARDS = {
    "sqlite": [
        f"DROP TRIGGER {t}_no_{a}" for t in ("audit_entries", "audit_subtrees") for a in ("update", "delete")
    ],
    "postgres": [f"DROP TRIGGER {t}_append_only ON {t}" for t in ("audit_entries", "audit_subtrees")],
}


@dataclass
class Logs:
    """Both countries' logs of one exchange, in one backend, with raw SQL access for tampering."""

    backend: str
    locator: dict[str, str]
    run: ExchangeRun
    keys_dir: Path
    tmp: Path

    def sql(self, country: str, statement: str, *params: Any) -> list[tuple[Any, ...]]:
        """One statement straight to the database; `?` placeholders in both backends."""
        if self.backend == "sqlite":
            connection = sqlite3.connect(self.locator[country])
            try:
                rows = connection.execute(statement, params).fetchall()
                connection.commit()
            finally:
                connection.close()
            return rows
        numbered = statement
        for number in range(1, len(params) + 1):
            numbered = numbered.replace("?", f"${number}", 1)
        schema = self.locator[country].partition("#")[2]

        async def execute() -> list[tuple[Any, ...]]:
            connection = await asyncpg.connect(PG_DSN, server_settings={"search_path": schema})
            try:
                return [tuple(row.values()) for row in await connection.fetch(numbered, *params)]
            finally:
                await connection.close()

        return asyncio.run(execute())

    def unguard(self, country: str) -> None:
        for statement in ENTRY_GUARDS[self.backend]:
            self.sql(country, statement)

    def kinds(self, country: str) -> list[str]:
        return [kind for (kind,) in self.sql(country, "SELECT kind FROM audit_entries ORDER BY idx")]

    def audit(self, *args: str) -> Any:
        trusted = args[0] in TRUSTING_COMMANDS
        return runner.invoke(audit_app, [*args, "--keys", str(self.keys_dir)] if trusted else list(args))

    def verify(self, country: str, *extra: str) -> Any:
        return self.audit("verify", *self.store_args(country), "--no-progress", *extra)

    def store_args(self, country: str) -> list[str]:
        if self.backend == "sqlite":
            return ["--store", self.locator[country]]
        dsn, _, schema = self.locator[country].partition("#")
        return ["--dsn", dsn, "--schema", schema]


async def open_store(backend: str, locator: str) -> StoreBase:
    if backend == "sqlite":
        return await SqliteAuditStore.open(locator)
    dsn, _, schema = locator.partition("#")
    return await PostgresAuditStore.open(dsn, schema=schema)


def drop_schemas(schemas: list[str]) -> None:
    async def drop() -> None:
        connection = await asyncpg.connect(PG_DSN)
        try:
            for schema in schemas:
                await connection.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        finally:
            await connection.close()

    asyncio.run(drop())


@dataclass(frozen=True)
class BaseLogs:
    backend: str
    locator: dict[str, str]
    run: ExchangeRun


def locators(backend: str, directory: Path, tag: str) -> dict[str, str]:
    if backend == "sqlite":
        return {country: str(directory / f"{country.lower()}.sqlite") for country in ("TJ", "RU")}
    return {country: f"{PG_DSN}#audit_t{tag}_{country.lower()}" for country in ("TJ", "RU")}


def copy_store(backend: str, source: str, target: str) -> None:
    """A faithful copy: for PostgreSQL a new schema made by the store (triggers included), then filled."""
    if backend == "sqlite":
        shutil.copyfile(source, target)
        return
    source_schema, target_schema = source.partition("#")[2], target.partition("#")[2]

    async def copy() -> None:
        await (await open_store(backend, target)).close()
        connection = await asyncpg.connect(PG_DSN)
        try:
            for table in ("audit_entries", "audit_subtrees"):
                await connection.execute(
                    f"INSERT INTO {target_schema}.{table} SELECT * FROM {source_schema}.{table}"
                )
        finally:
            await connection.close()

    asyncio.run(copy())


@contextmanager
def exchanged_logs(backend: str, directory: Path, **options: Any) -> Iterator[BaseLogs]:
    """Both logs of an exchange (`exchange_in_stores` options) in fresh stores of `backend`; PostgreSQL
    schemas dropped after."""
    locator = locators(backend, directory, uuid4().hex[:12])

    async def build() -> ExchangeRun:
        async with exchange_in_stores(
            lambda country: open_store(backend, locator[country]), directory / "state", **options
        ) as (_, run):
            return run

    try:
        yield BaseLogs(backend=backend, locator=locator, run=asyncio.run(build()))
    finally:
        if backend == "postgres":
            drop_schemas([place.partition("#")[2] for place in locator.values()])


def module_logs_fixture(*, rounds: int, tag: str) -> Any:
    """A module-scoped fixture: one exchange of `rounds` rounds per backend, shared by the module's tests."""

    @pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
    def fixture(
        request: pytest.FixtureRequest,
        tmp_path_factory: pytest.TempPathFactory,
        dev_pki: KeyStore,
        agreement: Agreement,
        trust: TrustStore,
        pki_now: datetime,
    ) -> Iterator[BaseLogs]:
        with exchanged_logs(
            request.param,
            tmp_path_factory.mktemp(f"{tag}-{request.param}"),
            keys=dev_pki,
            agreement=agreement,
            trust=trust,
            start=pki_now + timedelta(days=30),
            rounds=rounds,
        ) as logs:
            yield logs

    return fixture
