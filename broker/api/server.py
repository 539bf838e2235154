"""Running the API: uvicorn serving `create_app`, in-process, until stopped.

`serving` starts it as a task of the running event loop and yields the port it listens on (a test
may ask for port 0); `broker api serve` runs it until SIGINT or SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
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
    context = ApiContext.from_settings(settings)
    config = uvicorn.Config(
        create_app(context),
        host=settings.api_address,
        port=settings.api_port if port is None else port,
        log_config=None,
        access_log=False,
        server_header=False,
        timeout_keep_alive=KEEP_ALIVE_S,
        lifespan="on",
    )
    server = _Server(config)
    task = asyncio.create_task(server.serve(), name="http-api")
    try:
        async with asyncio.timeout(STARTUP_LIMIT_S):
            while not server.started:
                if task.done():
                    break
                await asyncio.sleep(0.02)
        if not server.started:
            with contextlib.suppress(BaseException):
                await task
            raise ConfigError(
                Reason.CONFIG_INVALID,
                f"the HTTP API could not listen on {settings.api_address}:{config.port} (in use, or not an address here)",
            )
        sockets = [sock for srv in server.servers for sock in srv.sockets]
        yield int(sockets[0].getsockname()[1])
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await task
