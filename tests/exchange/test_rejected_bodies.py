"""Rejected bodies are kept bounded, the quarantine queue is bounded, and the broker's limit fits.

Security review (issue 21), item 4. A 50 MiB body rejected as `message.oversized` used to be stored
whole, forever, in the append-only audit log and in an unbounded quarantine queue, behind a broker
that accepts 128 MiB. Now: a rejected body that is oversized or was rejected before its signer was
trusted keeps only its SHA-256, length and first 64 KiB (`broker.audit.bounded`); a signed message
refused later (stale, against policy) is evidence and stays whole; quarantine refuses publishes past
its byte limit (the gateway then holds the message, nothing is dropped); and the shipped RabbitMQ
config caps bodies at twice the gateways' limit, which `broker topology apply` checks.

The RabbitMQ tests run a real gateway (RabbitTransport, SQLite audit log) on a vhost of their own on
the shared node, with a small quarantine limit, and feed its inbound queue as the shovel would.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, MutableMapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from uuid import uuid4

import pytest
import pytest_asyncio
import yaml
from structlog.testing import capture_logs

from broker.audit import EntryDraft, EntryKind, entry_leaf_hash
from broker.audit.bounded import MARKER, PREFIX_BYTES, body_digest, bound, parse_bounded, stored_form
from broker.audit.entry import AuditEntry
from broker.audit.reconcile import digest
from broker.audit.stores.checkpointer import Checkpointer
from broker.audit.stores.sqlite import SqliteAuditStore
from broker.audit.verify import verify_log
from broker.core.agreement import Agreement
from broker.core.catalogue.base import Attachment
from broker.core.catalogue.samples import sample_payloads
from broker.core.errors import ConfigError, Reason
from broker.core.sealing import seal
from broker.core.trust import TrustStore
from broker.exchange.gateway import Gateway, GatewayContext
from broker.exchange.rabbit_admin import RabbitAdmin
from broker.exchange.topology import (
    INBOUND,
    MESSAGE_SIZE_HEADROOM,
    QUARANTINE,
    Permissions,
    check_message_size_limits,
    outbound_queue,
    quarantine_policy,
    vhost_declarations,
)
from broker.exchange.transport import RabbitTransport
from broker.state.keystore import KeyStore
from broker.state.outbox import Outbox
from broker.state.settings import DEFAULT_MAX_MESSAGE_BYTES, ExchangeSettings
from tests.support.rabbit import RabbitLink, node_max_message_size

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]
BROKER_CLI = Path(sys.executable).parent / "broker"
RABBIT = "127.0.0.1:5672"
ARRIVAL = datetime(2025, 2, 10, 12, 0, tzinfo=UTC)  # inside the session PKI's validity (conftest)
MIB = 1024 * 1024
# Small, so a handful of bounded copies (64 KiB each) fills it.
QUARANTINE_LIMIT = 256 * 1024


# -- the bounded record (pure) ---------------------------------------------------------------------


class TestBoundedRecord:
    def test_a_big_body_keeps_hash_length_and_prefix(self) -> None:
        raw = bytes(range(256)) * 4096  # 1 MiB
        stored = stored_form(raw, whole=False)

        record = parse_bounded(stored)

        assert record is not None
        assert (record.length, record.sha256) == (len(raw), hashlib.sha256(raw).hexdigest())
        assert record.prefix == raw[:PREFIX_BYTES]
        assert len(stored) < PREFIX_BYTES * 4 // 3 + 200
        assert body_digest(stored) == (hashlib.sha256(raw).hexdigest(), len(raw))

    def test_a_body_kept_whole_is_itself(self) -> None:
        raw = b'{"id":"x","signature":"..."}'
        assert stored_form(raw, whole=True) == raw
        assert parse_bounded(raw) is None
        assert body_digest(raw) == (hashlib.sha256(raw).hexdigest(), len(raw))

    def test_a_peer_body_that_looks_like_a_record_is_recorded_as_one(self) -> None:
        """Else a peer could make its raw bytes read as a record we wrote, naming any hash."""
        forged = bound(b"x" * 10_000_000).to_bytes()
        assert forged.startswith(MARKER)

        stored = stored_form(forged, whole=True)

        record = parse_bounded(stored)
        assert record is not None
        assert record.prefix == forged  # all of it, and its own hash, not the one it names
        assert record.sha256 == hashlib.sha256(forged).hexdigest()

    @pytest.mark.parametrize(
        "stored",
        [
            MARKER + b"garbage",
            MARKER + b'{"length":-1,"prefix":"","sha256":"' + b"0" * 64 + b'"}}',
            MARKER + b'{"length":1,"prefix":"QUJD","sha256":"' + b"0" * 64 + b'"}}',  # prefix > length
            MARKER + b'{"length":3,"prefix":"QUJD","sha256":"' + b"0" * 64 + b'"}}',  # whole, other hash
            MARKER + b'{"length":9,"prefix":"QUJD","sha256":"' + b"0" * 63 + b'"}}',
            MARKER + b'{"length":9, "prefix":"QUJD","sha256":"' + b"0" * 64 + b'"}}',  # not canonical
            MARKER + b'{"length":9,"prefix":"QUJD","sha256":"' + b"0" * 64 + b'","x":1}}',
        ],
    )
    def test_a_mangled_record_is_refused(self, stored: bytes) -> None:
        with pytest.raises(ValueError, match="bounded-body record"):
            parse_bounded(stored)


def _entries(drafts: list[EntryDraft]) -> list[AuditEntry]:
    return [
        AuditEntry.placed(draft, index=index, leaf_hash=entry_leaf_hash(draft))
        for index, draft in enumerate(drafts)
    ]


def _rejected(envelope: bytes) -> EntryDraft:
    return EntryDraft(
        kind=EntryKind.REJECTED,
        time=ARRIVAL,
        message_id=uuid4(),
        message_type="worker.death",
        peer="RU-MVD",
        envelope=envelope,
        verdict="rejected",
        reason="message.oversized",
    )


def test_the_auditor_verifies_a_bounded_entry_and_flags_a_mangled_one(trust: TrustStore) -> None:
    good = _entries([_rejected(stored_form(b"j" * (5 * MIB), whole=False))])
    mangled = _entries([_rejected(MARKER + b'{"length":1}}')])

    assert verify_log(good, trust=trust).ok
    finding = verify_log(mangled, trust=trust).finding
    assert finding is not None
    assert finding.reason is Reason.AUDIT_TAMPERED


def test_reconcile_sees_the_whole_body_hash_of_a_bounded_entry() -> None:
    raw = b"j" * (5 * MIB)
    [entry] = _entries([_rejected(stored_form(raw, whole=False))])
    assert entry.message_id is not None

    seen = digest("TJ", [entry]).rejected[entry.message_id]

    assert seen.sha256 == hashlib.sha256(raw).hexdigest()


# -- the broker's limit against the gateways' ---------------------------------------------------------


def _shipped_max_message_size() -> int:
    text = (ROOT / "deploy" / "rabbitmq" / "rabbitmq.conf").read_text(encoding="utf-8")
    [value] = re.findall(r"^max_message_size\s*=\s*(\d+)\s*$", text, flags=re.MULTILINE)
    return int(value)


def test_the_shipped_broker_limit_fits_the_gateways_limit() -> None:
    shipped = _shipped_max_message_size()

    assert shipped == 2 * DEFAULT_MAX_MESSAGE_BYTES
    assert "fits" in check_message_size_limits(broker_limit=shipped, gateway_limit=DEFAULT_MAX_MESSAGE_BYTES)


def test_both_compose_brokers_load_the_shipped_config() -> None:
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))["services"]
    for broker in ("rabbitmq-tj", "rabbitmq-ru"):
        mounts = services[broker]["volumes"]
        assert "./deploy/rabbitmq/rabbitmq.conf:/etc/rabbitmq/conf.d/20-exchange.conf:ro" in mounts


def test_a_broker_limit_below_the_gateways_is_refused_and_rabbitmqs_default_warned() -> None:
    gateway = DEFAULT_MAX_MESSAGE_BYTES
    with pytest.raises(ConfigError) as caught:
        check_message_size_limits(broker_limit=gateway + MESSAGE_SIZE_HEADROOM - 1, gateway_limit=gateway)
    assert caught.value.reason is Reason.CONFIG_INVALID

    warned = check_message_size_limits(broker_limit=128 * MIB, gateway_limit=gateway)
    assert warned.startswith("warning:")


@pytest.mark.rabbitmq
def test_topology_show_probes_the_nodes_exact_limit(rabbit_link: RabbitLink, tmp_path: Path) -> None:
    node_limit = node_max_message_size()
    secrets_file = tmp_path / "secrets.json"
    secrets_file.write_text(json.dumps(rabbit_link.passwords), encoding="utf-8")
    brokers = ["--broker", f"tj={rabbit_link.tj.url}", "--broker", f"ru={rabbit_link.ru.url}"]
    # Half the node's limit: a body of the gateways' limit passes, one of twice it is refused, and
    # the refusal names the node's limit.
    result = subprocess.run(
        [str(BROKER_CLI), "topology", "show", "--json", "--status", "--secrets", str(secrets_file), *brokers,
         "--max-message-bytes", str(node_limit // 2)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    [tj, _] = json.loads(result.stdout)
    assert tj["message_size"]["verdict"] == (
        f"broker max_message_size {node_limit} bytes fits gateway max_message_bytes {node_limit // 2}"
    )


# -- a real gateway on a vhost of its own ----------------------------------------------------------


@pytest.fixture(scope="module")
def vhost() -> Iterator[str]:
    name = f"t-{secrets.token_hex(3)}-bounded"
    with RabbitAdmin() as admin:
        admin.ensure_vhost(name)
        try:
            admin.ensure_permissions(
                Permissions(user="guest", vhost=name, configure=".*", write=".*", read=".*")
            )
            admin.ensure_policy(quarantine_policy(name, max_bytes=QUARANTINE_LIMIT))  # as topology apply does
            yield name
        finally:
            admin.delete_vhost(name)


@dataclass
class Inbound:
    gateway: Gateway
    audit: SqliteAuditStore
    broker: RabbitTransport  # for injecting bytes as the shovel would, and looking into queues
    store: Path
    keys: Path
    events: list[MutableMapping[str, Any]]
    vhost: str

    async def inject(self, body: bytes) -> None:
        await self.broker.publish(exchange=INBOUND, routing_key="tj", body=body, message_id="inject")

    async def rejected(self) -> list[AuditEntry]:
        entries = [entry async for entry in self.audit.entries(0)]
        return [entry for entry in entries if entry.kind is EntryKind.REJECTED]

    async def held_in_inbound(self) -> int:
        """Ready and unacknowledged, as the management API's statistics show them (they lag: poll)."""
        with RabbitAdmin() as admin:
            counts = await asyncio.to_thread(admin.queue_counts, self.vhost)
        return counts[INBOUND][0]

    async def inbound_emptied(self) -> None:
        async def empty() -> bool:
            return await self.held_in_inbound() == 0

        await eventually(empty, what="inbound to hold nothing, acknowledged or not")


async def eventually(check: Callable[[], Awaitable[T | None]], *, what: str, timeout_s: float = 60.0) -> T:
    """Poll `check` (the broker and the gateway raise no event a test could await)."""
    try:
        async with asyncio.timeout(timeout_s):
            while not (value := await check()):  # noqa: ASYNC110 - nothing to await but the broker
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout_s} s waiting for {what}") from None
    return value


@pytest_asyncio.fixture
async def tj(
    vhost: str, tmp_path: Path, dev_pki: KeyStore, agreement: Agreement, trust: TrustStore
) -> AsyncIterator[Inbound]:
    url = f"amqp://guest:guest@{RABBIT}/{vhost}"
    broker = await RabbitTransport.connect(url=url, name="bounded-test")
    await broker.declare(vhost_declarations("tj", ["ru"]))
    for queue in (INBOUND, QUARANTINE, outbound_queue("ru")):
        await broker.purge(queue)
    store = tmp_path / "audit.sqlite"
    audit = await SqliteAuditStore.open(store)
    signer = dev_pki.signer(agreement.gateway("TJ").id, at=ARRIVAL)
    with capture_logs() as events:  # before the gateway binds its logger
        gateway = Gateway(
            context=GatewayContext(
                country="TJ",
                agreement=agreement,
                trust=trust,
                gateway_signer=signer,
                signer_for=lambda authority: dev_pki.signer(authority, at=ARRIVAL),
                transport=await RabbitTransport.connect(url=url, name="bounded-gateway"),
                audit=audit,
                outbox=Outbox.open(tmp_path / "outbox.sqlite"),
                settings=ExchangeSettings(country="TJ", amqp_url=url, state_dir=tmp_path),
                clock=lambda: ARRIVAL,
                checkpointer=Checkpointer(
                    store=audit, signer=signer, trust=trust, every_seconds=3600, clock=lambda: ARRIVAL
                ),
            )
        )
        await gateway.start()
        try:
            yield Inbound(
                gateway=gateway,
                audit=audit,
                broker=broker,
                store=store,
                keys=dev_pki.root,
                events=events,
                vhost=vhost,
            )
        finally:
            await gateway.close()
            await broker.close()


def audit_cli(*arguments: str) -> subprocess.CompletedProcess[str]:
    """The auditor's own command, in its own process."""
    return subprocess.run(
        [str(BROKER_CLI), "audit", *arguments], capture_output=True, text=True, timeout=300, check=False
    )


def legislation(dev_pki: KeyStore, *, created_at: datetime, attachment_bytes: int) -> bytes:
    """A signed RU-MINTRUD -> TJ-MOL legislation change carrying a big inline attachment."""
    payload = sample_payloads()["legislation.change"].model_copy(
        update={"document": Attachment.inline(media_type="text/plain", content=b"A" * attachment_bytes)}
    )
    sealed = seal(
        payload,
        sender="RU-MINTRUD",
        recipient="TJ-MOL",
        signer=dev_pki.signer("RU-MINTRUD", at=created_at),
        created_at=created_at,
    )
    return sealed.raw


@pytest.mark.rabbitmq
async def test_an_8_mib_junk_body_is_logged_and_quarantined_bounded(tj: Inbound) -> None:
    body = (b"junk from the link " * (8 * MIB // 19 + 1))[: 8 * MIB]
    full_sha256 = hashlib.sha256(body).hexdigest()

    await tj.inject(body)
    [entry] = await eventually(tj.rejected, what="the rejected entry")
    copy = await eventually(lambda: tj.broker.get(QUARANTINE), what="the quarantine copy")

    assert entry.reason == str(Reason.MESSAGE_OVERSIZED)
    assert len(entry.envelope) < 100 * 1024  # not 8 MiB, for ever
    record = parse_bounded(entry.envelope)
    assert record is not None
    assert (record.length, record.sha256, record.prefix) == (len(body), full_sha256, body[:PREFIX_BYTES])
    assert copy.body == body[:PREFIX_BYTES]
    assert copy.headers["x-sha256"] == full_sha256
    assert copy.headers["x-body-length"] == len(body)
    assert copy.headers["x-audit-index"] == entry.index
    await tj.inbound_emptied()

    await tj.gateway.stop()
    verified = audit_cli("verify", "--store", str(tj.store), "--keys", str(tj.keys), "--no-progress")
    assert verified.returncode == 0, verified.stdout + verified.stderr


@pytest.mark.rabbitmq
async def test_an_unverified_body_with_an_id_is_bounded_answered_and_provable(
    tj: Inbound, dev_pki: KeyStore, tmp_path: Path
) -> None:
    signed = legislation(dev_pki, created_at=ARRIVAL - timedelta(minutes=1), attachment_bytes=150_000)
    tampered = signed.replace(b'"language":"ru"', b'"language":"tg"')  # edited after signing
    assert tampered != signed
    assert len(tampered) > PREFIX_BYTES

    await tj.inject(tampered)
    [entry] = await eventually(tj.rejected, what="the rejected entry")
    receipt = await eventually(lambda: tj.broker.get(outbound_queue("ru")), what="the negative receipt")

    assert entry.reason == str(Reason.SIGNATURE_INVALID)
    record = parse_bounded(entry.envelope)
    assert record is not None
    assert record.sha256 == hashlib.sha256(tampered).hexdigest()
    [line] = json.loads(receipt.body)["payload"]["lines"]  # a batched receipt, a window of one
    assert line["sha256"] == record.sha256  # names the whole body

    await tj.gateway.stop()  # its last checkpoint covers everything
    proof = tmp_path / "proof.json"
    proved = audit_cli(
        "prove", str(entry.message_id), "--kind", "rejected", "--out", str(proof),
        "--store", str(tj.store), "--keys", str(tj.keys),
    )  # fmt: skip
    assert proved.returncode == 0, proved.stdout + proved.stderr
    checked = audit_cli("check-proof", str(proof), "--keys", str(tj.keys))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    verified = audit_cli("verify", "--store", str(tj.store), "--keys", str(tj.keys), "--no-progress")
    assert verified.returncode == 0, verified.stdout + verified.stderr


@pytest.mark.rabbitmq
async def test_a_signed_message_refused_for_its_age_is_kept_whole_as_evidence(
    tj: Inbound, dev_pki: KeyStore
) -> None:
    stale = legislation(dev_pki, created_at=ARRIVAL - timedelta(days=30), attachment_bytes=150_000)
    assert len(stale) > PREFIX_BYTES

    await tj.inject(stale)
    [entry] = await eventually(tj.rejected, what="the rejected entry")
    copy = await eventually(lambda: tj.broker.get(QUARANTINE), what="the quarantine copy")

    assert entry.reason == str(Reason.REPLAY_STALE)
    assert entry.envelope == stale
    assert copy.body == stale


@pytest.mark.rabbitmq
async def test_a_full_quarantine_holds_rejections_and_loses_nothing(tj: Inbound) -> None:
    """reject-publish: the broker refuses the copy, the gateway keeps the message unacked and retries."""
    # Each is quarantined as 64 KiB: 16 make 4x the limit. A quorum queue's byte limit is enforced
    # asynchronously (publishers learn of the overflow after it happens), so twice the limit was
    # seen, once in CI, to fit whole.
    bodies = [bytes([index]) * (100 * 1024) for index in range(16)]
    for body in bodies:
        await tj.inject(body)

    async def some_held() -> bool:
        held = [event for event in tj.events if event["event"] == "inbound.held"]
        return len(held) >= 3 and await tj.held_in_inbound() > 0

    await eventually(some_held, what="rejections held while quarantine is full")
    # Every body has its one entry, though the held ones were retried.
    assert len(await tj.rejected()) == len(bodies)

    async def every_body_quarantined_or_held() -> bool:
        quarantined_while_full, _ = await tj.broker.queue_counts(QUARANTINE)
        assert 0 < quarantined_while_full < len(bodies)
        return quarantined_while_full + await tj.held_in_inbound() == len(bodies)

    await eventually(every_body_quarantined_or_held, what="each body in quarantine or held in inbound")

    # The operator takes copies out; the held messages follow into quarantine.
    seen: set[str] = set()

    async def drained() -> bool:
        while (copy := await tj.broker.get(QUARANTINE)) is not None:
            seen.add(str(copy.headers["x-sha256"]))
        return len(seen) == len(bodies) and await tj.held_in_inbound() == 0

    await eventually(drained, what="every rejection quarantined")
    assert seen == {hashlib.sha256(body).hexdigest() for body in bodies}
    assert len(await tj.rejected()) == len(bodies)
