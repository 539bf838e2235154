"""One country's gateway process for the chaos run: `broker gateway` plus a ministry sending its load.

Run as `python tests/chaos/gateway_worker.py --country TJ --config <workdir>/tj/gateway.toml
--send 1000 --sender TJ-MOL --to RU-MINTRUD`. It assembles the gateway exactly as `broker gateway` does
(`Gateway.from_settings`), and sends from the same process because the audit log has one writer per
file. After a SIGKILL it is started again and tops the outbox up to `--send` messages; messages
already in the outbox are the gateway's own business (re-sent when their receipt is overdue).
When every message has been handed to the gateway it writes `<state>/sent-all` and keeps serving
until SIGTERM. Like `broker gateway`, it exits when the broker is down at start; the test restarts it,
as a service manager would.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from pathlib import Path

import structlog

from broker.cli.logs import configure_logging
from broker.core.catalogue.samples import sample_payloads
from broker.core.errors import LocalError
from broker.exchange.gateway import Gateway
from broker.exchange.gateway.standby import ActiveRole
from broker.state.settings import ExchangeSettings

log = structlog.get_logger("chaos.gateway_worker")


async def send_one(gateway: Gateway, args: argparse.Namespace, slots: asyncio.Semaphore) -> None:
    try:
        await gateway.send(sample_payloads()[args.type], to=args.to, sender=args.sender or None)
    except LocalError as error:
        # Recorded in the outbox before the publish failed: the resend loop owns it now.
        log.warning("chaos.send_failed", reason=str(error.reason))
    finally:
        slots.release()


async def serve(args: argparse.Namespace) -> None:
    settings = ExchangeSettings.load(args.config, country=args.country)
    configure_logging(settings.log_format, level=logging.WARNING)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    # A second worker of the country (the cluster run) waits here as the standby.
    role = ActiveRole.from_settings(settings)
    if not await role.wait_until_active(stop):
        await role.release()
        return
    async with Gateway.from_settings(settings, role=role) as gateway:
        already = len(await gateway.outbox.records(limit=10_000_000))
        slots = asyncio.Semaphore(args.concurrency)
        sends: set[asyncio.Task[None]] = set()
        for _ in range(already, args.send):
            if stop.is_set():
                break
            await slots.acquire()
            task = asyncio.create_task(send_one(gateway, args, slots))
            sends.add(task)
            task.add_done_callback(sends.discard)
            await asyncio.sleep(1 / args.rate)
        await asyncio.gather(*sends)
        if not stop.is_set():
            (settings.country_state_dir / "sent-all").touch()
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--country", required=True)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--send", type=int, default=0, help="messages this side sends in total")
    parser.add_argument("--to", default="", help="recipient authority")
    parser.add_argument("--sender", default="", help="sending authority (default: the only one allowed)")
    parser.add_argument("--type", default="labour_market.report")
    parser.add_argument("--rate", type=float, default=50.0, help="new messages per second")
    parser.add_argument("--concurrency", type=int, default=16)
    asyncio.run(serve(parser.parse_args()))


if __name__ == "__main__":
    main()
