"""A consulate's subscriber process for the chaos run, with a durable ledger of what it was handed.

Run as `python tests/chaos/subscriber_worker.py --config <workdir>/tj/gateway.toml --country TJ
--authority TJ-CONSULATE-MOSCOW --ledger <file> [--die-after N]`. Every broker delivery is written
to the ledger (`deliveries`); an alert reaches the consul (`handed`) only once per message id, because
the ledger, not process memory, remembers what was handed over. With `--die-after N` the process
SIGKILLs itself right after the N-th delivery is committed and before it is acked, so the broker
must deliver that message again.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sqlite3
from pathlib import Path

from broker.cli.logs import configure_logging
from broker.core.agreement import load_agreement
from broker.exchange.subscriber import Alert, Subscription
from broker.exchange.transport import RabbitTransport
from broker.state.keystore import KeyStore
from broker.state.settings import ExchangeSettings

LEDGER_SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (seq INTEGER PRIMARY KEY AUTOINCREMENT, message_id TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS handed (message_id TEXT PRIMARY KEY, sender TEXT NOT NULL);
"""


def open_ledger(path: Path) -> sqlite3.Connection:
    ledger = sqlite3.connect(path, isolation_level=None)
    ledger.execute("PRAGMA journal_mode=WAL")
    ledger.execute("PRAGMA synchronous=FULL")
    ledger.executescript(LEDGER_SCHEMA)
    return ledger


async def serve(args: argparse.Namespace) -> None:
    settings = ExchangeSettings.load(args.config, country=args.country)
    configure_logging(settings.log_format, level=logging.WARNING)
    agreement = load_agreement(settings.agreement_file)
    trust = KeyStore(root=settings.keys_dir).trust_store(agreement.countries)
    ledger = open_ledger(args.ledger)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    transport = await RabbitTransport.connect(
        url=settings.amqp_url,
        name=f"{args.authority}-subscriber",
        failover=settings.failover_urls(settings.amqp_url),  # the other nodes of a cluster run
    )
    subscription = Subscription(
        transport=transport, agreement=agreement, trust=trust, authority_id=args.authority, types=[args.type]
    )

    async def on_alert(alert: Alert) -> None:
        with ledger:
            ledger.execute("BEGIN")
            ledger.execute("INSERT INTO deliveries (message_id) VALUES (?)", (str(alert.message_id),))
            ledger.execute(
                "INSERT OR IGNORE INTO handed (message_id, sender) VALUES (?, ?)",
                (str(alert.message_id), alert.sender),
            )
        delivered = ledger.execute("SELECT count(*) FROM deliveries").fetchone()[0]
        if args.die_after and delivered >= args.die_after:
            os.kill(os.getpid(), signal.SIGKILL)  # committed to the ledger, not yet acked

    handle = await subscription.run(on_alert, prefetch=32)
    await stop.wait()
    await handle.cancel()
    await transport.close()
    ledger.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--country", required=True)
    parser.add_argument("--authority", required=True)
    parser.add_argument("--ledger", type=Path, required=True)
    parser.add_argument("--type", default="labour_market.report")
    parser.add_argument("--die-after", type=int, default=0)
    asyncio.run(serve(parser.parse_args()))


if __name__ == "__main__":
    main()
