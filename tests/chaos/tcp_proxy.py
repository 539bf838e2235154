"""An asyncio TCP proxy between a client and RabbitMQ that a test can cut, slow down or stall.

The same trick aio-pika's own tests use: the client connects to the proxy, so a test can break the
network without touching the broker. `cut()` closes every open connection (and keeps refusing new
ones until `restore()`), `delay_s` holds each chunk back, and `stall()` keeps the sockets open but
forwards nothing, which only a heartbeat notices.
"""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType
from typing import Self

import structlog

_log = structlog.get_logger(__name__)

CHUNK = 64 * 1024


class TcpProxy:
    def __init__(self, *, upstream_host: str, upstream_port: int, listen_host: str = "127.0.0.1") -> None:
        self._upstream = (upstream_host, upstream_port)
        self._listen_host = listen_host
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._pumps: set[asyncio.Task[None]] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()
        self.refusing = False
        self.delay_s = 0.0
        self.connections_accepted = 0
        self.connections_cut = 0

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the proxy is not started")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self._listen_host, 0)
        _log.info("proxy.started", port=self.port, upstream=self._upstream)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        await self.cut()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # -- faults --------------------------------------------------------------------------------
    async def cut(self, *, refuse: bool = False) -> int:
        """Close every open connection; with `refuse`, close new ones at once until `restore()`."""
        self.refusing = self.refusing or refuse
        writers = list(self._writers)
        for writer in writers:
            writer.transport.abort()
        for pump in list(self._pumps):
            pump.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)
        self.connections_cut += len(writers) // 2
        _log.info("proxy.cut", connections=len(writers) // 2, refusing=self.refusing)
        return len(writers) // 2

    def stall(self) -> None:
        """Keep connections open but forward nothing: a half-dead network path."""
        self._flowing.clear()

    def restore(self) -> None:
        self.refusing = False
        self.delay_s = 0.0
        self._flowing.set()

    @property
    def open_connections(self) -> int:
        return len(self._writers) // 2

    # -- plumbing ------------------------------------------------------------------------------
    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            client_writer.transport.abort()
            return
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self._upstream)
        except OSError:
            client_writer.transport.abort()
            return
        self.connections_accepted += 1
        self._writers |= {client_writer, upstream_writer}
        pumps = {
            asyncio.create_task(self._pump(client_reader, upstream_writer)),
            asyncio.create_task(self._pump(upstream_reader, client_writer)),
        }
        self._pumps |= pumps
        try:
            # When one direction ends, the connection is over: close both sides.
            _, pending = await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            for pump in pending:
                pump.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        finally:
            self._pumps -= pumps
            for writer in (client_writer, upstream_writer):
                self._writers.discard(writer)
                writer.transport.abort()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while True:
                chunk = await reader.read(CHUNK)
                if not chunk:
                    return
                await self._flowing.wait()
                if self.delay_s:
                    await asyncio.sleep(self.delay_s)
                writer.write(chunk)
                await writer.drain()
