"""Running the API: uvicorn serving `create_app`, in-process, until stopped.

`serving` starts it as a task of the running event loop and yields the port it listens on (a test
may ask for port 0); `broker api serve` runs it until SIGINT or SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Generator

import uvicorn

from broker.api.app import create_app
from broker.api.context import ApiContext
from broker.core.errors import ConfigError, Reason
from broker.state.settings import ExchangeSettings

STARTUP_LIMIT_S = 30.0
KEEP_ALIVE_S = 5


class _Server(uvicorn.Server):
    """Signals are the caller's business (the command's loop, or a test's)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


@contextlib.asynccontextmanager
async def serving(settings: ExchangeSettings, *, port: int | None = None) -> AsyncIterator[int]:
    """Serve the API for `settings` while the block runs; yields the port it listens on."""
    listening = _bind(settings.api_address, settings.api_port if port is None else port)
    context = ApiContext.from_settings(settings)
    config = uvicorn.Config(
        create_app(context),
        log_config=None,
        access_log=False,
        server_header=False,
        timeout_keep_alive=KEEP_ALIVE_S,
        lifespan="on",
    )
    server = _Server(config)
    task = asyncio.create_task(server.serve(sockets=[listening]), name="http-api")
    try:
        async with asyncio.timeout(STARTUP_LIMIT_S):
            while not server.started and not task.done():  # noqa: ASYNC110 - uvicorn has a flag, no event
                await asyncio.sleep(0.02)
        if not server.started:
            await task  # raises what stopped it
            raise ConfigError(Reason.CONFIG_INVALID, "the HTTP API stopped while starting")
        yield int(listening.getsockname()[1])
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await task
        listening.close()


def _bind(address: str, port: int) -> socket.socket:
    """The listening socket, bound here so a port in use is one clear error, not a server's exit."""
    try:
        infos = socket.getaddrinfo(address, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, where = infos[0]
        listening = socket.socket(family, kind, proto)
    except OSError as exc:
        raise ConfigError(
            Reason.CONFIG_INVALID, f"api_address {address!r} is no address here: {exc}"
        ) from None
    try:
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listening.bind(where)
        listening.listen(2048)
        listening.setblocking(False)
    except OSError as exc:
        listening.close()
        raise ConfigError(
            Reason.CONFIG_INVALID,
            f"the HTTP API cannot listen on {address}:{port} ({exc.strerror}): another process has it, "
            "or set api_port",
        ) from None
    return listening
