"""The operator's reach into RabbitMQ and the gateway: readiness, queue depths, the quarantine.

The console acts on the broker as the gateway's own RabbitMQ user, as `broker quarantine` does from
the same host with the same settings and secrets file: requeue and purge are the operator's
actions on the gateway's queues. Readiness is the gateway's own `/readyz` (its status port,
`metrics_port`). Every action is recorded by `ActionLog` before and after it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass
from typing import Any

import httpx

from broker.core.errors import ExchangeError
from broker.exchange.quarantine import requeue
from broker.exchange.topology import INBOUND, QUARANTINE, SUBMIT, outbound_queue, subscriber_queue
from broker.exchange.transport import RabbitTransport
from broker.exchange.transport_api import IncomingMessage
from broker.state.settings import ExchangeSettings

READINESS_TIMEOUT_S = 5.0
QUARANTINE_PAGE = 200


@dataclass(frozen=True)
class Quarantined:
    message_id: str
    reason: str
    diagnostic: str
    rejected_at: str
    audit_index: str
    size: int
    headers: dict[str, str]
    body: str  # escaped: unverified bytes are never rendered as they are


def _printable(text: str) -> str:
    return "".join(
        c if c.isprintable() or c in "\n\t" else c.encode("unicode_escape").decode("ascii") for c in text
    )


def quarantined(message: IncomingMessage) -> Quarantined:
    headers = {str(k): _printable(str(v)) for k, v in message.headers.items()}
    return Quarantined(
        message_id=_printable(message.message_id or ""),
        reason=headers.get("x-reason", message.death_reason or ""),
        diagnostic=headers.get("x-diagnostic", ""),
        rejected_at=headers.get("x-rejected-at", ""),
        audit_index=headers.get("x-audit-index", ""),
        size=len(message.body),
        headers=headers,
        body=_printable(message.body.decode("utf-8", errors="backslashreplace")),
    )


class OperatorDesk:
    def __init__(
        self,
        settings: ExchangeSettings,
        *,
        peer_countries: tuple[str, ...],
        local_authorities: tuple[str, ...],
    ) -> None:
        self._settings = settings
        self._peers = peer_countries
        self._local = local_authorities
        self._transport: RabbitTransport | None = None
        self._lock = asyncio.Lock()

    async def _connected(self) -> RabbitTransport:
        async with self._lock:
            if self._transport is None:
                self._transport = await RabbitTransport.connect(
                    url=self._settings.broker_url(), name=f"{self._settings.country}-console"
                )
            return self._transport

    async def readiness(self) -> dict[str, Any] | None:
        """The gateway's `/readyz` report, or None when it has no status port configured."""
        port = self._settings.metrics_port
        if port is None:
            return None
        host = self._settings.metrics_address
        host = "127.0.0.1" if host in ("0.0.0.0", "") else host  # noqa: S104 - where it listens, we ask locally
        try:
            async with httpx.AsyncClient(timeout=READINESS_TIMEOUT_S) as client:
                response = await client.get(f"http://{host}:{port}/readyz")
            report = json.loads(response.text)
        except (httpx.HTTPError, ValueError) as exc:
            return {
                "ready": False,
                "checks": {"gateway": {"ok": False, "detail": f"no answer from /readyz: {exc}"}},
            }
        return report if isinstance(report, dict) else None

    async def depths(self) -> list[tuple[str, int | None]]:
        """Messages waiting in each of the gateway's queues (None: the queue is not there)."""
        queues = [INBOUND, QUARANTINE, SUBMIT, *(outbound_queue(peer.lower()) for peer in self._peers)]
        queues += [subscriber_queue(authority) for authority in self._local]
        transport = await self._connected()
        found: list[tuple[str, int | None]] = []
        for queue in queues:
            try:
                found.append((queue, (await transport.queue_counts(queue))[0]))
            except ExchangeError:
                found.append((queue, None))
        return found

    async def quarantine(self) -> list[Quarantined]:
        transport = await self._connected()
        return [quarantined(m) for m in await transport.peek(QUARANTINE, limit=QUARANTINE_PAGE)]

    async def quarantined_one(self, message_id: str) -> Quarantined | None:
        for item in await self.quarantine():
            if item.message_id == message_id:
                return item
        return None

    async def requeue(self, message_id: str) -> None:
        await requeue(await self._connected(), message_id=message_id, country=self._settings.country)

    async def purge(self) -> int:
        return await (await self._connected()).purge(QUARANTINE)

    async def close(self) -> None:
        if self._transport is not None:
            with contextlib.suppress(ExchangeError):
                await self._transport.close()
            self._transport = None
