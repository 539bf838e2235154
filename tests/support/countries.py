"""Gateways of three countries or more over the real RabbitMQ (issue 20): a development exchange made
from agreement files, the operator's renewed copy of the TJ-UZ plan, and a look into each broker.

Used by `tests/exchange/test_second_agreement.py` and `test_third_agreement.py`.
"""

from __future__ import annotations

import asyncio
import secrets
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

from broker.audit import EntryKind
from broker.core.catalogue import Payload, sample_payloads
from broker.core.sealing import SealedMessage, seal
from broker.exchange.devkit import DevExchange, provision_dev_exchange
from broker.exchange.gateway import Gateway, gateway_from_settings
from broker.exchange.topology import INBOUND, QUARANTINE
from broker.exchange.transport import RabbitTransport
from broker.state.outbox import SendState
from broker.state.settings import ExchangeSettings

WAIT_S = 30.0
SHIPPED_PLAN = Path(__file__).resolve().parents[2] / "broker" / "core" / "agreements" / "tj-uz-2021.toml"
RENEWAL = """
[[period]]
from = 2024-01-01
until = 2099-12-31
basis = "a renewed joint plan (test)"
"""


def renewed_plan(folder: Path) -> Path:
    """The operator's copy of the TJ-UZ plan, renewed: the shipped file and one more period."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "tj-uz-2021.toml"
    path.write_text(SHIPPED_PLAN.read_text("utf-8") + RENEWAL, encoding="utf-8")
    return path


def provisioned(workdir: Path, agreements: list[str]) -> DevExchange:
    """A development exchange of every country the agreements name, on its own thread and loop."""
    with ThreadPoolExecutor(max_workers=1) as worker:
        return worker.submit(
            asyncio.run,
            provision_dev_exchange(workdir, vhost_prefix=f"t-{secrets.token_hex(3)}-", agreements=agreements),
        ).result()


class Countries:
    """This test's gateways (own state folders) and a look into each country's broker."""

    def __init__(self, dev: DevExchange, state_dir: Path) -> None:
        self.dev = dev
        self.state_dir = state_dir
        self.broker: dict[str, RabbitTransport] = {}
        self.gateways: list[Gateway] = []

    def settings(self, country: str, **overrides: Any) -> ExchangeSettings:
        base = self.dev.settings[country].model_dump()
        return ExchangeSettings.load(None, **{**base, "state_dir": self.state_dir, **overrides})

    async def gateway(self, country: str, *, start: bool = True, **overrides: Any) -> Gateway:
        settings = self.settings(country, **overrides)
        gateway = await gateway_from_settings(settings)
        self.gateways.append(gateway)
        if start:
            await gateway.start()
        return gateway

    async def inspect(self, country: str) -> RabbitTransport:
        if country not in self.broker:
            self.broker[country] = await RabbitTransport.connect(
                url=self.dev.gateway_url(country), name=f"test-{country}"
            )
        return self.broker[country]

    async def inject(self, country: str, sealed: SealedMessage) -> None:
        """Bytes into `country`'s inbound exchange, as a peer's shovel would bring them."""
        broker = await self.inspect(country)
        await broker.publish(
            exchange=INBOUND,
            routing_key=country.lower(),
            body=sealed.raw,
            message_id=str(sealed.envelope.id),
        )

    async def quarantined_reason(self, country: str, message_id: UUID) -> str | None:
        broker = await self.inspect(country)
        for message in await broker.peek(QUARANTINE, limit=500):
            if message.message_id == str(message_id):
                return str(message.headers["x-reason"])
        return None

    def sealed(
        self, payload: Payload, *, sender: str, recipient: str, signer: str | None = None
    ) -> SealedMessage:
        """Signed with `signer`'s key (default: the sender's own)."""
        moment = datetime.now(UTC)
        return seal(
            payload,
            sender=sender,
            recipient=recipient,
            signer=self.dev.keystore.signer(signer or sender, at=moment),
            created_at=moment,
        )

    async def close(self) -> None:
        for gateway in self.gateways:
            await gateway.close()
        for broker in self.broker.values():
            await broker.close()


def sample(message_type: str) -> Payload:
    return sample_payloads()[message_type]


async def rejected_at(gateway: Gateway, message_id: UUID) -> str | None:
    found = await gateway.audit.find(message_id, kinds=[EntryKind.REJECTED])
    return found[0].reason if found else None


async def settled(gateway: Gateway, message_id: UUID, state: SendState) -> bool:
    record = await gateway.outbox.get(message_id)
    return record is not None and record.state == state
