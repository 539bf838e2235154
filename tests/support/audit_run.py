"""Two gateways exchanging real signed messages over in-memory brokers, each with a checkpointer.

`run_exchange` fills two audit stores the way production does (SENT, RECEIVED, DELIVERED,
CHECKPOINT, RECEIPT_SENT, RECEIPT_RECEIVED, WITNESS, and the countersignatures each side sends back
and the other receives), so the auditor's tests check real logs. The
"shovel" is a loop that moves what one side published to its outbound queue into the other's
inbound exchange. Clocks are fake and start inside the session PKI's validity.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

from broker.audit.entry import EntryKind
from broker.audit.stores.base import AuditStore
from broker.audit.stores.checkpointer import Checkpointer
from broker.audit.stores.sqlite import SqliteAuditStore
from broker.audit.witnessing import WITNESS_TYPE
from broker.core.agreement import Agreement
from broker.core.catalogue.samples import sample_payloads
from broker.core.trust import TrustStore
from broker.core.trust_update import TrustChange
from broker.exchange.fake_transport import FakeTransport
from broker.exchange.gateway import Gateway, GatewayContext
from broker.exchange.topology import INBOUND, outbound_queue, vhost_declarations
from broker.state.keystore import KeyStore
from broker.state.outbox import Outbox
from broker.state.settings import ExchangeSettings

WORKER_DOCUMENT = "400123456"  # the worker of the catalogue's samples


class FakeClock:
    """Advances a millisecond per reading, so entries of one run never share a time."""

    def __init__(self, start: datetime) -> None:
        self._now = start

    def __call__(self) -> datetime:
        self._now += timedelta(milliseconds=1)
        return self._now


@dataclass
class Side:
    country: str
    gateway: Gateway
    transport: FakeTransport
    store: AuditStore
    checkpointer: Checkpointer


async def build_side(
    country: str,
    *,
    store: AuditStore,
    state_dir: Path,
    keys: KeyStore,
    agreement: Agreement,
    trust: TrustStore,
    clock: Callable[[], datetime],
    at: datetime,
    transport: FakeTransport | None = None,
    remember_trust: Callable[[str, TrustChange], object] | None = None,
    settings: Mapping[str, Any] | None = None,
) -> Side:
    """One country's gateway over an in-memory broker, with a checkpointer, not yet started."""
    peer = agreement.peer_country(country)
    transport = transport or FakeTransport(name=country)
    await transport.declare(vhost_declarations(country.lower(), [peer.lower()]))
    gateway_id = agreement.gateway(country).id
    gateway_signer = keys.signer(gateway_id, at=at)
    checkpointer = Checkpointer(
        store=store, signer=gateway_signer, trust=trust, every_entries=5, poll_seconds=0.01, clock=clock
    )
    await asyncio.to_thread(state_dir.mkdir, parents=True, exist_ok=True)
    gateway = Gateway(
        context=GatewayContext(
            country=country,
            agreement=agreement,
            trust=trust,
            gateway_signer=gateway_signer,
            signer_for=lambda authority: keys.signer(authority, at=at),
            transport=transport,
            audit=store,
            outbox=Outbox.open(state_dir / "outbox.sqlite"),
            settings=ExchangeSettings.load(
                None,
                country=country,
                amqp_url="amqp://127.0.0.1/unused",
                state_dir=state_dir,
                **(settings or {}),
            ),
            clock=clock,
            checkpointer=checkpointer,
        ),
        remember_trust=remember_trust,
    )
    return Side(country=country, gateway=gateway, transport=transport, store=store, checkpointer=checkpointer)


async def _shovel(source: Side, destination: Side) -> int:
    moved = 0
    while (message := await source.transport.get(outbound_queue(destination.country.lower()))) is not None:
        await destination.transport.publish(
            exchange=INBOUND,
            routing_key=destination.country.lower(),
            body=message.body,
            message_id=message.message_id or "",
            headers=message.headers,
        )
        moved += 1
    return moved


async def witness_counts(side: Side) -> tuple[int, int, int]:
    """WITNESS entries, countersignatures sent back, and countersignatures received, in one log."""
    kinds = [
        entry.kind
        async for entry in side.store.entries()
        if entry.kind is EntryKind.WITNESS or entry.message_type == WITNESS_TYPE
    ]
    return kinds.count(EntryKind.WITNESS), kinds.count(EntryKind.SENT), kinds.count(EntryKind.RECEIVED)


async def _witnesses_landed(tj: Side, ru: Side) -> bool:
    """Every countersignature made was sent back, and the other side has logged it."""
    tj_made, tj_sent, tj_got = await witness_counts(tj)
    ru_made, ru_sent, ru_got = await witness_counts(ru)
    return tj_made == tj_sent == ru_got and ru_made == ru_sent == tj_got


async def _settle(tj: Side, ru: Side, run: ExchangeRun) -> None:
    """Shovel both ways until every message sent so far has its receipt back at its sender, and
    every countersignature those receipts caused is logged by the side it vouches for."""
    waiting = [(ru, message_id) for message_id in run.sent_by_ru] + [(tj, m) for m in run.sent_by_tj]
    for _ in range(3000):
        # Quiet means: no handler was running, and then nothing was left to carry either way. A
        # handler still running could yet countersign and send back after the counts matched.
        idle = tj.transport.deliveries_in_flight == 0 and ru.transport.deliveries_in_flight == 0
        moved = await _shovel(tj, ru) + await _shovel(ru, tj)
        waiting = [
            (side, message_id)
            for side, message_id in waiting
            if not await side.store.find(message_id, kinds=[EntryKind.RECEIPT_RECEIVED])
        ]
        if idle and moved == 0 and not waiting and await _witnesses_landed(tj, ru):
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"the fake exchange did not settle: {len(waiting)} receipts missing")


@dataclass(frozen=True)
class ExchangeRun:
    sent_by_ru: list[UUID]
    sent_by_tj: list[UUID]


async def run_exchange(
    *,
    tj_store: AuditStore,
    ru_store: AuditStore,
    state_dir: Path,
    keys: KeyStore,
    agreement: Agreement,
    trust: TrustStore,
    start: datetime,
    rounds: int = 3,
) -> ExchangeRun:
    """RU reports deaths and permit cancellations of the sample worker, TJ sends legislation changes."""
    clock = FakeClock(start)
    tj, ru = [
        await build_side(
            country,
            store=store,
            state_dir=state_dir / country.lower(),
            keys=keys,
            agreement=agreement,
            trust=trust,
            clock=clock,
            at=start,
        )
        for country, store in (("TJ", tj_store), ("RU", ru_store))
    ]
    samples = sample_payloads()
    run = ExchangeRun(sent_by_ru=[], sent_by_tj=[])
    await tj.gateway.start()
    await ru.gateway.start()
    try:
        for _ in range(rounds):
            for message_type in ("worker.death", "work_permit.cancellation"):
                result = await ru.gateway.send(samples[message_type], to="TJ-MOL", sender="RU-MVD")
                run.sent_by_ru.append(result.message_id)
            result = await tj.gateway.send(samples["legislation.change"], to="RU-MINTRUD", sender="TJ-MOL")
            run.sent_by_tj.append(result.message_id)
            await _settle(tj, ru, run)
    finally:
        for side in (tj, ru):
            await side.gateway.stop()
            await side.transport.close()
            side.gateway.outbox.close()
    return run


@asynccontextmanager
async def exchange_in_stores(
    open_store: Callable[[str], Awaitable[AuditStore]],
    directory: Path,
    *,
    keys: KeyStore,
    agreement: Agreement,
    trust: TrustStore,
    start: datetime,
    rounds: int,
) -> AsyncIterator[tuple[dict[str, AuditStore], ExchangeRun]]:
    """Run an exchange into stores `open_store(country)` opens; they stay open inside the block."""
    stores = {country: await open_store(country) for country in ("TJ", "RU")}
    try:
        run = await run_exchange(
            tj_store=stores["TJ"], ru_store=stores["RU"], state_dir=directory, keys=keys,
            agreement=agreement, trust=trust, start=start, rounds=rounds,
        )  # fmt: skip
        yield stores, run
    finally:
        for opened in stores.values():
            await opened.close()


@asynccontextmanager
async def sqlite_exchange(directory: Path, **options: Any) -> AsyncIterator[dict[str, AuditStore]]:
    """`exchange_in_stores` into fresh SQLite stores of both countries in `directory`."""

    async def open_store(country: str) -> AuditStore:
        return await SqliteAuditStore.open(directory / f"{country}.sqlite")

    async with exchange_in_stores(open_store, directory, **options) as (stores, _):
        yield stores
