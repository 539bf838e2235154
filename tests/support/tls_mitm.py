"""A man in the middle for TLS tests: a listener that presents a certificate of our choosing.

It accepts TCP, counts the attempt, then completes a TLS handshake with its certificate. A client
that verifies the server aborts the handshake (a certificate for another host, or from a CA the
client does not trust); one that does not verify goes on and talks, and everything it says after
the handshake is recorded, which is how a test sees a password leak. What follows the handshake
depends on the protocol: for AMQP the listener forwards to the real RabbitMQ (so a client that
accepts the impostor works normally, as it would through a real attacker); for PostgreSQL it answers
the SSLRequest with `S` before the handshake and asks for a cleartext password after it.

The listener runs on the address this machine's own host name resolves to, and tests connect by
that name: a name, not `localhost` or a loopback literal, so the exchange's TLS policy treats it as
another host and the clients check the certificate against it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from broker.core.tls_policy import is_local_host
from tests.chaos.node import TlsFiles, make_tls_files

RABBIT = ("127.0.0.1", 5672)
PG_SSL_REQUEST = struct.pack("!ii", 8, 80877103)


def other_host_name() -> tuple[str, str]:
    """This machine's host name and the address it resolves to; the name must not count as local."""
    name = socket.gethostname()
    address = socket.gethostbyname(name)
    assert not is_local_host(name), f"the host name {name!r} reads as local: the test needs another name"
    return name, address


def certificates(directory: Path, *, host: str) -> TlsFiles:
    """A fresh CA and a server certificate for `host`, readable by the RabbitMQ node's user."""
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o755)
    files = make_tls_files(directory, common_name=host)
    for path in (files.ca_cert, files.server_cert):
        path.chmod(0o644)
    return files


@dataclass
class Mitm:
    protocol: Literal["amqp", "postgres"]
    context: ssl.SSLContext
    port: int = 0
    attempts: int = 0
    handshakes: int = 0
    heard: bytearray = field(default_factory=bytearray)  # what clients said inside TLS
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def _note(self) -> None:
        self.changed.set()

    async def wait_for(self, *, attempts: int, timeout_s: float = 60.0) -> None:
        """Until `attempts` connections were tried or one handshake succeeded (events, no sleeps)."""
        async with asyncio.timeout(timeout_s):
            while self.attempts < attempts and not self.handshakes:
                self.changed.clear()
                await self.changed.wait()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.attempts += 1
        self._note()
        try:
            if self.protocol == "postgres":
                if await reader.readexactly(8) != PG_SSL_REQUEST:
                    return
                writer.write(b"S")
                await writer.drain()
            await writer.start_tls(self.context)
            self.handshakes += 1
            self._note()
            if self.protocol == "postgres":
                await self._ask_for_password(reader, writer)
            else:
                await self._forward(reader, writer)
        except (ssl.SSLError, ConnectionError, asyncio.IncompleteReadError, OSError):
            pass  # a client that refused the certificate hangs up mid-handshake
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _ask_for_password(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        [length] = struct.unpack("!i", await reader.readexactly(4))
        self.heard += await reader.readexactly(length - 4)  # the startup message: user, database
        writer.write(b"R" + struct.pack("!ii", 8, 3))  # AuthenticationCleartextPassword
        await writer.drain()
        kind = await reader.readexactly(1)
        [length] = struct.unpack("!i", await reader.readexactly(4))
        self.heard += kind + await reader.readexactly(length - 4)
        self._note()

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(*RABBIT)

        async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter, *, record: bool) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while chunk := await source.read(65536):
                    if record:
                        self.heard += chunk
                        self._note()
                    sink.write(chunk)
                    await sink.drain()
            with contextlib.suppress(Exception):
                sink.close()

        try:
            await asyncio.gather(
                pump(reader, upstream_writer, record=True), pump(upstream_reader, writer, record=False)
            )
        finally:
            upstream_writer.close()


@contextlib.asynccontextmanager
async def mitm(
    protocol: Literal["amqp", "postgres"], *, certificate: TlsFiles, address: str
) -> AsyncIterator[Mitm]:
    """A listener presenting `certificate` (its server certificate and key) on `address`."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificate.server_cert, certificate.server_key)
    listener = Mitm(protocol=protocol, context=context)
    server = await asyncio.start_server(listener._handle, address, 0)
    listener.port = server.sockets[0].getsockname()[1]
    try:
        yield listener
    finally:
        server.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await server.wait_closed()
