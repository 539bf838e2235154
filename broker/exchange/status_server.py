"""A gateway's HTTP status port: `/metrics` (Prometheus), `/healthz` and `/readyz`; 404 for the rest.

`/healthz` answers 200 while the process serves requests at all (liveness); `/readyz` answers 200
or 503 with a JSON body naming each check (`health`). A small asyncio server in the gateway's own
event loop, so readiness can ask the gateway's connection and audit store directly; it reads one
request head of bounded size per connection, answers, and closes.
"""

from __future__ import annotations

import asyncio
import errno
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from http import HTTPStatus
from typing import Protocol

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from broker.core.errors import ConfigError, Reason
from broker.exchange.gateway import Gateway
from broker.exchange.gateway.standby import ActiveRole, Role
from broker.exchange.health import Check, PeerLink, Readiness
from broker.exchange.metrics import GatewayMetrics
from broker.state.settings import ExchangeSettings

_log = structlog.get_logger(__name__)

MAX_REQUEST_HEAD = 8 * 1024
REQUEST_TIMEOUT_S = 10.0
JSON = "application/json"


class StatusServer:
    def __init__(
        self,
        *,
        metrics: GatewayMetrics,
        readiness: Callable[[], Awaitable[Readiness]],
        address: str,
        port: int,
    ) -> None:
        self._metrics = metrics
        self._readiness = readiness
        self._address = address
        self._requested_port = port
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the status server is not started")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        where = f"{self._address}:{self._requested_port}"
        try:
            self._server = await asyncio.start_server(
                self._serve, self._address, self._requested_port, limit=MAX_REQUEST_HEAD
            )
        except OSError as exc:
            problem = {
                errno.EADDRINUSE: "is already in use (another gateway's metrics_port?)",
                errno.EACCES: "may not be used by this user",
                errno.EADDRNOTAVAIL: "names an address this host does not have",
            }.get(exc.errno or 0, f"cannot be listened on: {exc.strerror or exc}")
            raise ConfigError(
                Reason.CONFIG_INVALID, f"metrics_address:metrics_port {where} {problem}"
            ) from None
        _log.info("status.listening", address=self._address, port=self.port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                head = await reader.readuntil(b"\r\n\r\n")
                status, content_type, body = await self._answer(head)
                await _respond(writer, status, content_type, body, head_only=head.startswith(b"HEAD "))
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass  # a client that sends no complete request head in time gets nothing
        finally:
            writer.close()

    async def _answer(self, head: bytes) -> tuple[HTTPStatus, str, bytes]:
        request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = request_line.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            return HTTPStatus.BAD_REQUEST, JSON, b'{"error": "bad request"}'
        method, target, _ = parts
        path = target.split("?", 1)[0]
        if path not in ("/metrics", "/healthz", "/readyz"):
            return HTTPStatus.NOT_FOUND, JSON, b'{"error": "not found: /metrics, /healthz, /readyz"}'
        if method not in ("GET", "HEAD"):
            return HTTPStatus.METHOD_NOT_ALLOWED, JSON, b'{"error": "GET only"}'
        if path == "/metrics":
            return HTTPStatus.OK, CONTENT_TYPE_LATEST, generate_latest(self._metrics.registry)
        if path == "/healthz":
            return HTTPStatus.OK, JSON, b'{"alive": true}'
        readiness = await self._readiness()
        status = HTTPStatus.OK if readiness.ready else HTTPStatus.SERVICE_UNAVAILABLE
        return status, JSON, json.dumps(readiness.report()).encode()


async def _respond(
    writer: asyncio.StreamWriter, status: HTTPStatus, content_type: str, body: bytes, *, head_only: bool
) -> None:
    head = (
        f"HTTP/1.1 {status.value} {status.phrase}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Cache-Control: no-store\r\n"
        "Connection: close\r\n\r\n"
    )
    writer.write(head.encode("latin-1") + (b"" if head_only else body))
    await writer.drain()


class StatusSource(Protocol):
    """What the status port reads: a `Gateway`, or a `GatewayStatus` that may still be a standby."""

    @property
    def metrics(self) -> GatewayMetrics: ...

    @property
    def peers(self) -> tuple[str, ...]: ...

    async def readiness(self, link: PeerLink | None = None) -> Readiness: ...


class GatewayStatus:
    """A gateway process's status from its start: a standby's until the gateway runs, then the
    gateway's own checks with the writer lock added (`broker gateway` serves its port from this)."""

    def __init__(self, settings: ExchangeSettings, *, role: ActiveRole, metrics: GatewayMetrics) -> None:
        self._role = role
        self._metrics = metrics
        self._peers = settings.agreement_set().peers
        self.gateway: Gateway | None = None

    @property
    def metrics(self) -> GatewayMetrics:
        return self._metrics

    @property
    def peers(self) -> tuple[str, ...]:
        return self._peers

    async def readiness(self, link: PeerLink | None = None) -> Readiness:
        if self._role.role is Role.STANDBY:
            return self._role.readiness()
        if self.gateway is None:  # the lock is ours; the gateway is being assembled
            return self._role.with_lock(Readiness({"gateway": Check(False, "starting")}))
        return self._role.with_lock(await self.gateway.readiness(link))


@asynccontextmanager
async def serving_status(
    source: StatusSource, settings: ExchangeSettings
) -> AsyncIterator[StatusServer | None]:
    """The gateway's status port while the block runs, when `metrics_port` is set (else None)."""
    if settings.metrics_port is None:
        yield None
        return
    link = PeerLink.from_settings(settings, source.peers)  # every peer's shovel
    server = StatusServer(
        metrics=source.metrics,
        readiness=lambda: source.readiness(link),
        address=settings.metrics_address,
        port=settings.metrics_port,
    )
    try:
        await server.start()
        try:
            yield server
        finally:
            await server.close()
    finally:
        await link.close()
