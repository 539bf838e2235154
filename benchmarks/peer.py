"""The receiving country's gateway in a process of its own, as it runs in production.

`python -m benchmarks.peer GATEWAY_TOML` assembles the gateway exactly as `broker gateway` does,
prints `ready` once it consumes, then one line per watched log event (`event NAME MESSAGE_ID
MONOTONIC`) and, every 50 ms, the primitives it performed so far (`counts sign=N verify=N ...`,
`benchmarks.floor`) until its standard input closes. CLOCK_MONOTONIC is one clock for every process on the
machine, so the parent can subtract its own times from these.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

from benchmarks.events import WATCHED, drop_info_events, watch_log_events
from benchmarks.floor import OperationCounter
from broker.exchange import runtime
from broker.exchange.gateway import gateway_from_settings
from broker.state.settings import ExchangeSettings


def _report(logger: Any, method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    name = event.get("event")
    if name in WATCHED:
        sys.stdout.write(f"event {name} {event.get('message_id')} {time.monotonic():.6f}\n")
    return drop_info_events(logger, method, event)


COUNTER = OperationCounter()


async def serve(config: Path) -> None:
    watch_log_events(_report)
    COUNTER.install()  # before the gateway starts: its consumer is counted too
    gateway = await gateway_from_settings(ExchangeSettings.load(config))
    await gateway.start()
    runtime.tune_for_long_run()
    flusher = asyncio.create_task(_flush_every(0.05))  # one write per 50 ms, not one per message
    try:
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the parent closes it
    finally:
        await gateway.close()
        flusher.cancel()
        sys.stdout.flush()


async def _flush_every(seconds: float) -> None:
    while True:
        await asyncio.sleep(seconds)
        counts = " ".join(f"{name}={count}" for name, count in COUNTER.snapshot().items())
        sys.stdout.write(f"counts {counts}\n")
        sys.stdout.flush()


if __name__ == "__main__":
    runtime.use_fast_event_loop()  # as `broker gateway` runs
    asyncio.run(serve(Path(sys.argv[1])))
