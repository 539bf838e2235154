"""Small tools the chaos tests share: polling, proxied URLs, and honest messages from Russia."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from urllib.parse import urlencode, urlsplit, urlunsplit

from broker.core.catalogue.labour_market import LabourMarketReport
from broker.core.catalogue.samples import sample_payloads
from broker.core.sealing import SealedMessage, seal
from broker.exchange.transport import RabbitTransport

from .conftest import ChaosExchange


async def eventually(
    check: Callable[[], Awaitable[bool]], *, seconds: float = 30.0, every: float = 0.2
) -> None:
    """Poll `check` until it holds; a TimeoutError names the broker state the test was waiting for."""
    async with asyncio.timeout(seconds):
        while not await check():  # noqa: ASYNC110 - polls the broker, which sends no event
            await asyncio.sleep(every)


def via_proxy(url: str, port: int, **query: str | int) -> str:
    """The same login and vhost, reached through a proxy on `port`, with extra connection options."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit(":", 1)[0] + f":{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, urlencode(query), ""))


def report_from_russia(exchange: ChaosExchange, *, living_conditions: str | None = None) -> SealedMessage:
    """A labour-market report RU-MINTRUD signed for TJ-MOL, as it would arrive over the shovel."""
    payload = sample_payloads()["labour_market.report"]
    assert isinstance(payload, LabourMarketReport)
    if living_conditions is not None:
        payload = payload.model_copy(update={"living_conditions": living_conditions})
    return seal(
        payload,
        sender="RU-MINTRUD",
        recipient="TJ-MOL",
        signer=exchange.dev.keystore.signer("RU-MINTRUD"),
        created_at=datetime.now(UTC),
    )


async def put_in_tj_inbound(exchange: ChaosExchange, messages: list[SealedMessage]) -> None:
    """Publish straight into the Tajik inbound queue, as the RU → TJ shovel would."""
    transport = await RabbitTransport.connect(url=exchange.dev.gateway_url("TJ"), name="chaos-peer")
    try:
        for message in messages:
            await transport.publish(
                exchange="inbound", routing_key="tj", body=message.raw, message_id=str(message.envelope.id)
            )
    finally:
        await transport.close()


async def queue_state(exchange: ChaosExchange, country: str, queue: str) -> dict[str, int]:
    """ready / unacked / consumers of one queue, as `rabbitmqctl list_queues` reports them."""
    return (await asyncio.to_thread(exchange.node.queues, exchange.vhost(country)))[queue]
