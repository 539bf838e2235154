"""Hostile bytes against the receive path: `open_message`, then a whole gateway's inbound handler.

Two layers. Hypothesis throws arbitrary bytes, mutated copies of an honest envelope and arbitrary
JSON at `open_message`: each must end in a RemoteError with a reason code, never in a foreign
exception. Then a gateway (FakeTransport, SQLite audit log) is fed the named attacks of the issue and
the same fuzz: every input is acked, audited as rejected with its exact reason and quarantined with
that reason, the handler never crashes, and an honest message afterwards is still accepted.

The named attacks reuse the committed assets of tests/attacks (signed by a CA whose private key is
not kept), judged at a fixed arrival time one minute after they were made.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker.agreement import Agreement
from broker.audit import EntryKind
from broker.audit.sqlite_store import SqliteAuditStore
from broker.errors import Reason, RemoteError
from broker.fake_transport import FakeTransport
from broker.gateway import Gateway
from broker.keystore import KeyStore
from broker.outbox import Outbox
from broker.sealing import open_message
from broker.settings import ExchangeSettings
from broker.topology import QUARANTINE, vhost_declarations
from broker.transport_api import Disposition, Handler, IncomingMessage
from broker.trust import TrustStore

ATTACKS = Path(__file__).resolve().parent / "attacks"
INDEX: dict[str, Any] = json.loads((ATTACKS / "index.json").read_text(encoding="utf-8"))
ARRIVAL = datetime.fromisoformat(INDEX["created_at"]) + timedelta(minutes=1)
LOCAL = INDEX["local_country"]
MAX_BYTES = 64 * 1024


def asset(name: str) -> bytes:
    return (ATTACKS / "envelopes" / name).read_bytes()


VALID = asset("valid-worker-death.envelope")  # RU-MVD to TJ-MOL


def replaced(old: bytes, new: bytes) -> Callable[[], bytes]:
    def build() -> bytes:
        assert VALID.count(old) == 1, old
        return VALID.replace(old, new)

    return build


def from_asset(name: str) -> Callable[[], bytes]:
    return lambda: asset(name)


# The list, each with the reason code it must get. docs/reliability.md shows this table.
HOSTILE: dict[str, tuple[Callable[[], bytes], Reason]] = {
    "arbitrary bytes": (lambda: b"\x00\x9f\xffAMQP\x00\x00\x09\x01 garbage", Reason.MESSAGE_MALFORMED),
    "empty body": (lambda: b"", Reason.MESSAGE_MALFORMED),
    "truncated JSON": (lambda: VALID[: len(VALID) // 2], Reason.MESSAGE_MALFORMED),
    "deep nesting (30,000 arrays)": (lambda: b"[" * 30_000 + b"]" * 30_000, Reason.MESSAGE_MALFORMED),
    "deep nesting (64 arrays, signed)": (from_asset("deep-nesting.envelope"), Reason.MESSAGE_MALFORMED),
    "huge number (1e999)": (replaced(b'"version":1', b'"version":1e999'), Reason.MESSAGE_MALFORMED),
    "huge integer (400 digits)": (replaced(b'"version":1', b'"version":1' + b"0" * 400), Reason.MESSAGE_MALFORMED),
    "number spelling (1.0)": (from_asset("number-spelling.envelope"), Reason.MESSAGE_MALFORMED),
    "NaN literal": (from_asset("nan-version.envelope"), Reason.MESSAGE_MALFORMED),
    "duplicate keys (two recipients)": (from_asset("duplicate-recipient.envelope"), Reason.MESSAGE_MALFORMED),
    "non-UTF-8 (overlong sequence)": (from_asset("not-utf8.envelope"), Reason.MESSAGE_MALFORMED),
    "non-UTF-8 (stray 0xff)": (replaced(b'"category":"c"', b'"category":"\xff"'), Reason.MESSAGE_MALFORMED),
    "pretty-printed (not canonical)": (from_asset("non-canonical-whitespace.envelope"), Reason.MESSAGE_MALFORMED),
    "oversized (70 KiB)": (lambda: b"{" + b" " * 70_000 + b"}", Reason.MESSAGE_OVERSIZED),
    "alg none": (from_asset("alg-none.envelope"), Reason.SIGNATURE_ALGORITHM),
    "alg HS256 keyed with the public key": (from_asset("alg-hs256-public-key-as-secret.envelope"), Reason.SIGNATURE_ALGORITHM),
    "alg EdDSA (deprecated name)": (from_asset("alg-eddsa.envelope"), Reason.SIGNATURE_ALGORITHM),
    "crit header": (from_asset("crit-header.envelope"), Reason.SIGNATURE_INVALID),
    "embedded jwk": (from_asset("embedded-jwk.envelope"), Reason.SIGNATURE_INVALID),
    "b64=false": (from_asset("unencoded-payload-b64-false.envelope"), Reason.SIGNATURE_INVALID),
    "self-signed certificate in x5c": (from_asset("self-signed-leaf.envelope"), Reason.CERT_UNTRUSTED),
    "attacker CA with the real CA's name": (from_asset("attacker-ca-same-name.envelope"), Reason.CERT_UNTRUSTED),
    "CA key signs a message": (from_asset("ca-key-signs-message.envelope"), Reason.CERT_USAGE),
    "key substitution (real x5c, other key)": (from_asset("x5c-key-substitution.envelope"), Reason.SIGNATURE_INVALID),
    "stripped signature": (from_asset("signature-stripped.envelope"), Reason.SIGNATURE_MISSING),
    "signature re-spelled (unused bits)": (from_asset("signature-unused-bits.envelope"), Reason.MESSAGE_MALFORMED),
    "payload edited after signing": (from_asset("payload-tampered.envelope"), Reason.SIGNATURE_INVALID),
    "valid message re-sent under another sender": (
        replaced(b'"sender":"RU-MVD"', b'"sender":"RU-MINTRUD"'), Reason.SIGNATURE_INVALID),
    "signed by one authority, sent as another": (from_asset("signed-by-other-authority.envelope"), Reason.CERT_AUTHORITY_MISMATCH),
    "peer CA certifies one of our authorities": (from_asset("peer-ca-certifies-our-authority.envelope"), Reason.CERT_AUTHORITY_MISMATCH),
    "message for another recipient": (from_asset("wrong-recipient.envelope"), Reason.POLICY_WRONG_RECIPIENT),
    "recipient redirected after signing": (from_asset("recipient-tampered.envelope"), Reason.SIGNATURE_INVALID),
    "sender not allowed this type": (from_asset("sender-not-allowed.envelope"), Reason.POLICY_SENDER_NOT_ALLOWED),
    "expired certificate": (from_asset("expired-certificate.envelope"), Reason.CERT_EXPIRED),
    "revoked certificate": (from_asset("revoked-certificate.envelope"), Reason.CERT_REVOKED),
    "unknown schema version": (from_asset("unknown-version.envelope"), Reason.SCHEMA_UNKNOWN_TYPE),
    "extra payload field": (from_asset("payload-extra-field.envelope"), Reason.SCHEMA_INVALID),
    "worker aged 15 (Art. 10)": (from_asset("agreement-art10-minor.envelope"), Reason.AGREEMENT_RULE),
}  # fmt: skip


@pytest.fixture(scope="module")
def asset_trust() -> TrustStore:
    anchors, crls = {}, {}
    for pem in sorted((ATTACKS / "ca").glob("*.cert.pem")):
        country = pem.name.split(".")[0]
        anchors[country] = [x509.load_pem_x509_certificate(pem.read_bytes())]
        crls[country] = [x509.load_pem_x509_crl((ATTACKS / "ca" / f"{country}.crl.pem").read_bytes())]
    return TrustStore(anchors=anchors, crls=crls)


def reason_of(raw: bytes, trust: TrustStore, agreement: Agreement) -> Reason | None:
    """The reason `open_message` refuses `raw` with; None if it opens. Anything else propagates."""
    try:
        open_message(
            raw,
            trust=trust,
            agreement=agreement,
            local_country=LOCAL,
            max_bytes=MAX_BYTES,
            received_at=ARRIVAL,
        )
    except RemoteError as error:
        return error.reason
    return None


# -- strategies ------------------------------------------------------------------------------------
def _splice(at_and_new: tuple[int, bytes]) -> bytes:
    at, new = at_and_new
    return VALID[:at] + new + VALID[at:]


def _flip(at_and_byte: tuple[int, int]) -> bytes:
    at, byte = at_and_byte
    return VALID[:at] + bytes([byte]) + VALID[at + 1 :]


truncations = st.integers(0, len(VALID) - 1).map(lambda end: VALID[:end])
flips = (
    st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255))
    .filter(lambda f: VALID[f[0]] != f[1])
    .map(_flip)
)
insertions = st.tuples(st.integers(0, len(VALID)), st.binary(min_size=1, max_size=8)).map(_splice)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=25,
)
json_documents = json_values.map(lambda value: json.dumps(value).encode())
nestings = st.tuples(st.integers(1, 20_000), st.sampled_from([(b"[", b"]"), (b'{"a":', b"}")])).map(
    lambda n: n[1][0] * n[0] + b"1" + n[1][1] * n[0]
)
hostile_bytes = st.one_of(st.binary(max_size=2048), truncations, flips, insertions, json_documents, nestings)  # fmt: skip


# -- the pure receive path -------------------------------------------------------------------------
class TestOpenMessage:
    @pytest.mark.parametrize("name", sorted(HOSTILE))
    def test_each_named_attack_gets_its_reason(
        self, name: str, asset_trust: TrustStore, agreement: Agreement
    ) -> None:
        build, expected = HOSTILE[name]
        assert reason_of(build(), asset_trust, agreement) is expected

    def test_the_honest_control_opens(self, asset_trust: TrustStore, agreement: Agreement) -> None:
        assert reason_of(VALID, asset_trust, agreement) is None

    @settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(raw=hostile_bytes)
    def test_anything_else_is_refused_with_a_reason_code(
        self, raw: bytes, asset_trust: TrustStore, agreement: Agreement
    ) -> None:
        assert raw != VALID
        assert isinstance(reason_of(raw, asset_trust, agreement), Reason)


# -- a whole gateway -------------------------------------------------------------------------------
class ObservedTransport(FakeTransport):
    """A FakeTransport that counts how the gateway's handler settled each delivery."""

    def __init__(self) -> None:
        super().__init__(name="fake-tj")
        self.settled: list[Disposition] = []
        self.crashes = 0

    async def consume(self, queue: str, handler: Handler, *, prefetch: int = 64) -> Any:
        async def observed(message: IncomingMessage) -> Disposition:
            try:
                disposition = await handler(message)
            except Exception:
                self.crashes += 1
                raise
            self.settled.append(disposition)
            return disposition

        return await super().consume(queue, observed, prefetch=prefetch)


@dataclass(frozen=True)
class Outcome:
    disposition: Disposition
    new_kinds: list[str]
    reason: str | None
    quarantine_reason: str | None


@dataclass
class Harness:
    gateway: Gateway
    transport: ObservedTransport
    audit: SqliteAuditStore

    @classmethod
    async def start(cls, *, state: Path, trust: TrustStore, keys: KeyStore, agreement: Agreement) -> Harness:
        transport = ObservedTransport()
        await transport.declare(vhost_declarations("tj", ["ru"]))
        audit = await SqliteAuditStore.open(state / "audit.sqlite")
        signing_time = datetime(2025, 6, 1, tzinfo=ARRIVAL.tzinfo)  # inside the session PKI's validity
        gateway = Gateway(
            country=LOCAL,
            agreement=agreement,
            trust=trust,
            gateway_signer=keys.signer(agreement.gateway(LOCAL).id, at=signing_time),
            signer_for=lambda authority: keys.signer(authority, at=signing_time),
            transport=transport,
            audit=audit,
            outbox=Outbox.open(state / "outbox.sqlite"),
            settings=ExchangeSettings(
                country=LOCAL,
                amqp_url="amqp://127.0.0.1/fake-tj",
                state_dir=state,
                max_message_bytes=MAX_BYTES,
            ),
            clock=lambda: ARRIVAL,
        )
        await gateway.start()
        return cls(gateway=gateway, transport=transport, audit=audit)

    async def feed(self, raw: bytes) -> Outcome:
        before_size, before_settled = await self.audit.size(), len(self.transport.settled)
        await self.transport.publish(exchange="inbound", routing_key="tj", body=raw, message_id="fuzz")
        async with asyncio.timeout(10):
            while len(self.transport.settled) == before_settled:  # noqa: ASYNC110 - the fake has no event
                await asyncio.sleep(0.001)
        entries = [entry async for entry in self.audit.entries(before_size)]
        rejected = [entry for entry in entries if entry.kind == EntryKind.REJECTED]
        quarantined = await self.transport.get(QUARANTINE)
        return Outcome(
            disposition=self.transport.settled[-1],
            new_kinds=[str(entry.kind) for entry in entries],
            reason=rejected[0].reason if rejected else None,
            quarantine_reason=None if quarantined is None else str(quarantined.headers.get("x-reason")),
        )

    async def close(self) -> None:
        await self.gateway.close()


@pytest.fixture
def runner() -> Any:
    with asyncio.Runner() as running:
        yield running


@pytest.fixture
def harness(
    runner: asyncio.Runner, tmp_path: Path, asset_trust: TrustStore, dev_pki: KeyStore, agreement: Agreement
) -> Any:
    started = runner.run(Harness.start(state=tmp_path, trust=asset_trust, keys=dev_pki, agreement=agreement))
    yield started
    runner.run(started.close())


class TestGatewayInbound:
    def test_every_named_attack_is_audited_quarantined_and_the_gateway_keeps_serving(
        self, runner: asyncio.Runner, harness: Harness
    ) -> None:
        got = {name: runner.run(harness.feed(build())) for name, (build, _) in HOSTILE.items()}

        assert {name: outcome.reason for name, outcome in got.items()} == {
            name: str(expected) for name, (_, expected) in HOSTILE.items()
        }
        assert all(outcome.quarantine_reason == outcome.reason for outcome in got.values())
        assert {outcome.disposition for outcome in got.values()} == {Disposition.ACK}
        assert harness.transport.crashes == 0
        accepted = runner.run(harness.feed(VALID))
        assert accepted.reason is None
        assert "received" in accepted.new_kinds
        assert "delivered" in accepted.new_kinds

    def test_a_replayed_message_is_not_delivered_twice(
        self, runner: asyncio.Runner, harness: Harness
    ) -> None:
        first = runner.run(harness.feed(VALID))
        again = runner.run(harness.feed(VALID))

        assert first.new_kinds == ["received", "delivered", "receipt-sent"]
        assert again.new_kinds == []  # the stored receipt is sent again; nothing new happens
        assert again.reason is None

    def test_fuzzed_bytes_never_crash_the_gateway(self, runner: asyncio.Runner, harness: Harness) -> None:
        @settings(
            max_examples=150,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        )
        @given(raw=hostile_bytes)
        def fed(raw: bytes) -> None:
            outcome = runner.run(harness.feed(raw))
            assert outcome.disposition is Disposition.ACK
            assert outcome.reason in set(Reason)
            assert outcome.quarantine_reason == outcome.reason

        fed()
        assert harness.transport.crashes == 0
        assert "received" in runner.run(harness.feed(VALID)).new_kinds
