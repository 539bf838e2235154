"""National files across the real RabbitMQ: adapter → gateway → shovel → peer gateway → subscriber →
the peer's adapter, which renders them back in its own national format, equal in content.

Russian XML documents arrive in Tajikistan as Tajik notices; Tajik notices and registry exports
arrive in Russia as XML documents. Hostile files dropped beside them send nothing.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

from adapters.base import MINISTRY_TYPES, NationalAdapter
from adapters.folder_drop import FolderDrop
from adapters.pipeline import import_bytes, import_file, load_adapter
from broker.core.catalogue import Payload, payload_to_json
from broker.core.catalogue.receipt import Verdict
from broker.exchange.devkit import DevExchange
from broker.exchange.gateway import Gateway, SendResult, gateway_from_settings
from broker.exchange.subscriber import Alert, Subscription
from broker.exchange.transport import RabbitTransport
from tests.support.exchange import dev_exchange_in_thread

pytestmark = pytest.mark.rabbitmq

ADAPTERS = Path(__file__).resolve().parents[2] / "adapters"
XXE = b'<?xml version="1.0"?>\n<!DOCTYPE p [<!ENTITY x SYSTEM "file:///etc/passwd">]>\n<p>&x;</p>\n'
RECEIPT_TIMEOUT_S = 20.0


@pytest.fixture(scope="module")
def exchange(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevExchange]:
    with dev_exchange_in_thread(tmp_path_factory.mktemp("adapters-exchange")) as dev:
        yield dev


@dataclass
class Side:
    gateway: Gateway
    ministry: Subscription  # a ministry of this country subscribed to every ministry type


@pytest_asyncio.fixture
async def sides(exchange: DevExchange) -> AsyncIterator[dict[str, Side]]:
    subscribers = {"TJ": "TJ-MOL", "RU": "RU-MVD"}
    transports: list[RabbitTransport] = []
    running: dict[str, Side] = {}
    try:
        for country, authority in subscribers.items():
            gateway = await gateway_from_settings(exchange.settings[country])
            transport = await RabbitTransport.connect(
                url=exchange.gateway_url(country), name=f"test-{authority}"
            )
            transports.append(transport)
            subscription = Subscription(
                transport=transport,
                agreement=exchange.agreement,
                trust=exchange.keystore.trust_store(exchange.agreement.countries),
                authority_id=authority,
                types=sorted(MINISTRY_TYPES),
                decryptor=exchange.keystore.decryptor(authority),
            )
            await subscription.declare()
            await transport.purge(subscription.queue)
            await gateway.start()
            running[country] = Side(gateway=gateway, ministry=subscription)
        yield running
    finally:
        for side in running.values():
            await side.gateway.close()
        for transport in transports:
            await transport.close()


class RecordingGateway:
    """The real gateway, waiting for every receipt, remembering what it sent."""

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway
        self.sent: list[tuple[Payload, SendResult]] = []

    async def send(
        self, payload: Payload, *, to: str, sender: str | None = None, wait_receipt: bool = False
    ) -> SendResult:
        result = await self._gateway.send(
            payload, to=to, sender=sender, wait_receipt=True, receipt_timeout_s=RECEIPT_TIMEOUT_S
        )
        self.sent.append((payload, result))
        return result

    def payloads(self) -> list[Payload]:
        return [payload for payload, _ in self.sent]

    def all_accepted(self) -> bool:
        return all(r.receipt is not None and r.receipt.verdict == Verdict.ACCEPTED for _, r in self.sent)


def content(payloads: list[Payload]) -> list[str]:
    """Order-free comparison of payload lists (alerts may arrive in any order)."""
    return sorted(json.dumps(payload_to_json(p), sort_keys=True, ensure_ascii=False) for p in payloads)


def rendered_back(adapter: NationalAdapter, alerts: list[Alert]) -> list[Payload]:
    """Each alert rendered in every national format of the receiving side and read back."""
    back: list[Payload] = []
    for alert in alerts:
        readings = [
            adapter.parse(adapter.render(alert.payload, fmt=fmt), filename=f"{alert.message_id}.{fmt[:3]}")
            for fmt in adapter.render_formats
        ]
        assert all(reading == readings[0] for reading in readings), alert.message_type
        back += readings[0]
    return back


async def test_russian_documents_arrive_as_tajik_notices_and_hostile_ones_send_nothing(
    sides: dict[str, Side], tmp_path: Path
) -> None:
    ru_adapter = load_adapter("RU", state_dir=tmp_path / "ru-state")
    tj_adapter = load_adapter("TJ", state_dir=tmp_path / "tj-state")
    inbox = tmp_path / "ru-inbox"
    inbox.mkdir()
    samples = sorted((ADAPTERS / "ru" / "samples").glob("*.xml"))
    for sample in samples:
        (inbox / sample.name).write_bytes(sample.read_bytes())
    (inbox / "xxe.xml").write_bytes(XXE)
    ru = RecordingGateway(sides["RU"].gateway)

    async def handle(name: str, data: bytes) -> None:
        await import_bytes(data, filename=name, adapter=ru_adapter, gateway=ru, to="TJ-MOL", sender="RU-MVD")

    await FolderDrop(inbox=inbox, handle=handle).process_once()

    assert sorted(p.name for p in (inbox / "done").iterdir()) == [s.name for s in samples]
    assert sorted(p.name for p in (inbox / "failed").iterdir()) == ["xxe.xml", "xxe.xml.reason.txt"]
    assert len(ru.sent) == len(samples)
    assert ru.all_accepted()
    assert len(await sides["RU"].gateway.outbox.records(limit=1000)) == len(samples)  # nothing of xxe.xml

    alerts = await sides["TJ"].ministry.collect(len(samples), timeout_s=RECEIPT_TIMEOUT_S)
    originals = [p for s in samples for p in ru_adapter.parse(s.read_bytes(), filename=s.name)]
    assert content(rendered_back(tj_adapter, alerts)) == content(originals)
    assert {a.message_type for a in alerts} == MINISTRY_TYPES


async def test_tajik_notices_and_registry_changes_arrive_as_russian_documents(
    sides: dict[str, Side], tmp_path: Path
) -> None:
    tj_adapter = load_adapter("TJ", state_dir=tmp_path / "tj-state")
    ru_adapter = load_adapter("RU", state_dir=tmp_path / "ru-state")
    samples = ADAPTERS / "tj" / "samples"
    tj = RecordingGateway(sides["TJ"].gateway)

    inbox = tmp_path / "tj-inbox"
    inbox.mkdir()
    for notice in sorted(samples.glob("notice-*.json")):
        (inbox / notice.name).write_bytes(notice.read_bytes())
    export = (samples / "agencies-export-1.csv").read_text("utf-8")
    (inbox / "impossible-date.csv").write_text(export.replace("2024-01-10", "2025-02-30"), "utf-8")

    async def handle(name: str, data: bytes) -> None:
        await import_bytes(data, filename=name, adapter=tj_adapter, gateway=tj, to="RU-MVD")

    await FolderDrop(inbox=inbox, handle=handle).process_once()
    assert len(tj.sent) == len(MINISTRY_TYPES)
    reason = (inbox / "failed" / "impossible-date.csv.reason.txt").read_text("utf-8")
    assert "line: 4" in reason
    assert "2025-02-30" in reason

    # Registry exports: the notices already told of licence 0012345 and permit TJ-2024-0457.
    for name in ("employers-export.json", "agencies-export-1.csv", "agencies-export-2.csv"):
        await import_file(samples / name, adapter=tj_adapter, gateway=tj, to="RU-MVD")
    changes = [
        (p.MESSAGE_TYPE, str(p.model_dump().get("status"))) for p in tj.payloads()[len(MINISTRY_TYPES) :]
    ]
    assert changes == [
        ("employer.permit", "granted"),
        ("recruitment_agency.license", "granted"),
        ("recruitment_agency.license", "granted"),
        ("recruitment_agency.license", "renewed"),
        ("recruitment_agency.license", "suspended"),
        ("recruitment_agency.license", "granted"),
    ]
    before = len(tj.sent)
    await import_file(samples / "agencies-export-2.csv", adapter=tj_adapter, gateway=tj, to="RU-MVD")
    assert len(tj.sent) == before  # the same export again sends nothing
    assert tj.all_accepted()

    alerts = await sides["RU"].ministry.collect(len(tj.sent), timeout_s=RECEIPT_TIMEOUT_S)
    assert content(rendered_back(ru_adapter, alerts)) == content(tj.payloads())
