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
import base64
import gc
import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker.audit import EntryKind
from broker.audit.stores.sqlite import SqliteAuditStore
from broker.core.agreement import Agreement
from broker.core.canonical import canonical_bytes
from broker.core.envelope import sha256_hex
from broker.core.errors import Reason, RemoteError
from broker.core.jws import TYP, b64url
from broker.core.personal import HPKE_SUITE_NAME, decode_key_header
from broker.core.sealing import MAX_MESSAGE_BYTES, open_message, peek
from broker.core.trust import TrustStore
from broker.exchange.fake_transport import FakeTransport
from broker.exchange.gateway import Gateway, GatewayContext
from broker.exchange.topology import QUARANTINE, outbound_queue, vhost_declarations
from broker.exchange.transport_api import Disposition, Handler, IncomingMessage
from broker.state.keystore import KeyStore
from broker.state.outbox import Outbox
from broker.state.settings import ExchangeSettings

ATTACKS = Path(__file__).resolve().parents[1] / "attacks"
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


def retyped(typ: str) -> Callable[[], bytes]:
    """VALID with its JWS header's `typ` changed (checked before the signature, so that fails later)."""

    def build() -> bytes:
        document = json.loads(VALID)
        protected, _, signature = document["signature"].split(".")
        header = json.loads(base64.urlsafe_b64decode(protected + "=" * (-len(protected) % 4)))
        document["signature"] = f"{b64url(canonical_bytes({**header, 'typ': typ}))}..{signature}"
        return canonical_bytes(document)

    return build


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
    "JWS typ of another protocol (JWT)": (retyped("JWT"), Reason.SIGNATURE_TYPE),
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


def reason_of(
    raw: bytes, trust: TrustStore, agreement: Agreement, *, max_bytes: int = MAX_BYTES
) -> Reason | None:
    """The reason `open_message` refuses `raw` with; None if it opens. Anything else propagates."""
    try:
        open_message(
            raw,
            trust=trust,
            agreement=agreement,
            local_country=LOCAL,
            max_bytes=max_bytes,
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
            context=GatewayContext(
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

    async def answered_hashes(self) -> set[str]:
        """The SHA-256 of every body the receipts published so far answer (each receipt lists a
        body at most once)."""
        answered: set[str] = set()
        while (receipt := await self.transport.get(outbound_queue("ru"))) is not None:
            payload = json.loads(receipt.body)["payload"]
            hashes = [line["sha256"] for line in (*payload["lines"], *payload.get("unreadable", ()))]
            assert len(hashes) == len(set(hashes)), payload
            answered.update(hashes)
        return answered

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
        # Every one answered with a signed negative receipt: by its id, or by its hash when no id
        # could be read (README: "answered with a signed negative receipt").
        answered = runner.run(harness.answered_hashes())
        assert {name for name, (build, _) in HOSTILE.items() if sha256_hex(build()) not in answered} == set()
        accepted = runner.run(harness.feed(VALID))
        assert accepted.reason is None
        assert "received" in accepted.new_kinds
        assert "delivered" in accepted.new_kinds

    def test_the_same_unreadable_bytes_arriving_together_are_each_logged_and_answered(
        self, runner: asyncio.Runner, harness: Harness
    ) -> None:
        junk = b'{"id":"a","id":"b"}'

        async def flood() -> None:
            for _ in range(20):  # all handled at once (prefetch 64): they share receipt windows
                await harness.transport.publish(
                    exchange="inbound", routing_key="tj", body=junk, message_id="j"
                )
            async with asyncio.timeout(10):
                while len(harness.transport.settled) < 20:  # noqa: ASYNC110 - the fake has no event
                    await asyncio.sleep(0.001)

        async def rejections() -> list[str | None]:
            return [e.reason async for e in harness.audit.entries() if e.kind == EntryKind.REJECTED]

        runner.run(flood())
        assert harness.transport.crashes == 0
        assert runner.run(rejections()) == [str(Reason.MESSAGE_MALFORMED)] * 20
        assert runner.run(harness.answered_hashes()) == {sha256_hex(junk)}

    def test_a_replayed_message_is_not_delivered_twice(
        self, runner: asyncio.Runner, harness: Harness
    ) -> None:
        first = runner.run(harness.feed(VALID))
        again = runner.run(harness.feed(VALID))

        # The batched receipt (a window of one here) and the message's reference to it.
        assert first.new_kinds == ["received", "delivered", "receipt-sent", "receipt-sent"]
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


# -- linear work before the signature is checked ---------------------------------------------------
# Everything a receiver does before it knows who signed (size check, strict parse with its depth
# pre-scan, canonical re-serialisation, JWS header and x5c decoding, `peek` for the negative receipt,
# the unsigned `x-sealed-key` header) is open to anyone who can publish to `inbound`. Each must grow
# linearly with the input: a quadratic step lets 4 MiB freeze the gateway for hours. Timed at two
# sizes, the best of several runs; a linear step grows about 4x, a quadratic one 16x.
GROWTH_SIZES = (256 * 1024, 1024 * 1024)
HEADER_GROWTH_SIZES = (2 * 1024, 8 * 1024)  # `x-sealed-key` is refused beyond 8192 characters
GROWTH_BOUND = 10.0
GROWTH_REPEATS = 5
_SAMPLE_S = 0.005  # calls per sample are chosen so the smaller input's sample lasts about this long


def _filled(head: bytes, unit: bytes, tail: bytes, size: int) -> bytes:
    return head + unit * max(1, (size - len(head) - len(tail)) // len(unit)) + tail


def _with_protected_header(protected: bytes) -> bytes:
    """An envelope that is canonical JSON and reaches the JWS checks with `protected` as its header."""
    return b'{"signature":"' + b64url(protected).encode() + b'..AAAA"}'


def _x5c_header(size: int, count: int) -> bytes:
    der = b"\x30\x82" + b"\x00" * (size * 9 // 16 // count)  # base64 of the header base64: 16/9
    member = base64.b64encode(der).decode()
    return canonical_bytes({"alg": "Ed25519", "kid": "k", "typ": TYP, "x5c": [member] * count})


def _many_keys(size: int, prefix: str) -> bytes:
    document: dict[str, Any] = {f"{prefix}{i:09d}": 0 for i in range(size // (len(prefix) + 13))}
    document["signature"] = "x"
    return canonical_bytes(document)  # past the fast path's 10,000 nodes: the reference serialiser


# name: (build(size), the reason open_message stops with, which shows how far the body got)
GROWING_BODIES: dict[str, tuple[Callable[[int], bytes], Reason]] = {
    "unterminated string of escaped quotes (issue 21)": (
        lambda n: _filled(b"[" * 40 + b'"', b'\\"', b"", n), Reason.MESSAGE_MALFORMED),
    "unterminated string of escaped backslashes": (
        lambda n: _filled(b"[" * 40 + b'"', b"\\\\", b"", n), Reason.MESSAGE_MALFORMED),
    "unterminated string of unicode escapes": (
        lambda n: _filled(b"[" * 40 + b'"', b"\\u0022", b"", n), Reason.MESSAGE_MALFORMED),
    "many short strings": (lambda n: _filled(b"[" * 40, b'"",', b"", n), Reason.MESSAGE_MALFORMED),
    "many shallow arrays": (lambda n: _filled(b"[", b"[],", b"[]]", n), Reason.MESSAGE_MALFORMED),
    "deep nesting": (lambda n: _filled(b"", b"[", b"", n), Reason.MESSAGE_MALFORMED),
    "whitespace": (lambda n: _filled(b"[", b" ", b"]", n), Reason.MESSAGE_MALFORMED),
    "long integer": (lambda n: _filled(b"[1", b"0", b"]", n), Reason.MESSAGE_MALFORMED),
    "many 4,000-digit integers": (lambda n: _filled(b"[", b"9" * 4000 + b",", b"1]", n), Reason.MESSAGE_MALFORMED),
    "long fraction": (lambda n: _filled(b"[0.", b"1", b"]", n), Reason.MESSAGE_MALFORMED),
    "long exponent": (lambda n: _filled(b"[1e", b"1", b"]", n), Reason.MESSAGE_MALFORMED),
    "many floats (reference serialiser)": (lambda n: _filled(b"[", b"0.1,", b"0.1]", n), Reason.MESSAGE_MALFORMED),
    "lone surrogates (reference serialiser)": (
        lambda n: _filled(b'{"a":"', b"\\ud800", b'","signature":"x"}', n), Reason.MESSAGE_MALFORMED),
    "unicode escapes re-serialised": (
        lambda n: _filled(b'{"a":"', b"\\u00e9", b'","signature":"x"}', n), Reason.MESSAGE_MALFORMED),
    # Canonical: these pass the re-serialisation comparison and stop at the JWS checks.
    "escaped quotes in a canonical string": (
        lambda n: _filled(b'{"a":"', b'\\"', b'","signature":"x"}', n), Reason.SIGNATURE_INVALID),
    "many keys": (lambda n: _many_keys(n, "k"), Reason.SIGNATURE_INVALID),
    "many non-ASCII keys": (lambda n: _many_keys(n, "é"), Reason.SIGNATURE_INVALID),
    "long base64 signature": (lambda n: _filled(b'{"signature":"', b"A", b'..AAAA"}', n), Reason.MESSAGE_MALFORMED),
    "JWS header: unterminated string of escaped quotes": (
        lambda n: _with_protected_header(_filled(b"[" * 40 + b'"', b'\\"', b"", n * 3 // 4)), Reason.MESSAGE_MALFORMED),
    "JWS header: many short strings": (
        lambda n: _with_protected_header(_filled(b"[" * 40, b'"",', b"", n * 3 // 4)), Reason.MESSAGE_MALFORMED),
    "JWS header: one huge x5c certificate": (
        lambda n: _with_protected_header(_x5c_header(n, 1)), Reason.CERT_MALFORMED),
    "JWS header: three huge x5c certificates": (
        lambda n: _with_protected_header(_x5c_header(n, 3)), Reason.CERT_MALFORMED),
}  # fmt: skip


def _key_header(document: bytes) -> str:
    return b64url(document)


def _wraps_header(size: int, count: int) -> str:
    enc = b64url(b"\x00" * (size * 7 // 16 // count))
    wraps = [{"enc": enc, "holder": "TJ-MOL", "kid": "k"}] * count
    return _key_header(canonical_bytes({"suite": HPKE_SUITE_NAME, "v": 1, "wraps": wraps}))


# `x-sealed-key` values: base64url text of about `size` characters.
GROWING_KEY_HEADERS: dict[str, Callable[[int], str]] = {
    "unterminated string of escaped quotes": lambda n: _key_header(_filled(b"[" * 40 + b'"', b'\\"', b"", n * 3 // 4)),
    "many short strings": lambda n: _key_header(_filled(b"[" * 40, b'"",', b"", n * 3 // 4)),
    "deep nesting": lambda n: _key_header(_filled(b"", b"[", b"", n * 3 // 4)),
    "one long wrap": lambda n: _wraps_header(n, 1),
    "sixteen long wraps": lambda n: _wraps_header(n, 16),
    "not base64url": lambda n: "!" * (n - 1),
}  # fmt: skip


def _cpu_time(step: Callable[[], object], calls: int) -> float:
    # The cycle collector is paused: a full collection walks every object of the test process, so
    # whether one falls inside a sample depends on pytest's heap, not on the step being measured.
    gc.collect()
    gc.disable()
    try:
        started = time.thread_time()  # this thread's CPU time: other processes do not count
        for _ in range(calls):
            step()
        return (time.thread_time() - started) / calls
    finally:
        gc.enable()


def growth(step: Callable[[Any], object], small: Any, large: Any) -> float:
    """time(step(large)) / time(step(small)), each the best of several runs; about 4 when linear.

    The two sizes are timed in turns, so a busy moment of the machine falls on both alike.
    """
    started = time.thread_time()
    step(small)
    calls = max(1, math.ceil(_SAMPLE_S / max(time.thread_time() - started, 1e-6)))
    best_small = best_large = float("inf")
    for _ in range(GROWTH_REPEATS):
        best_small = min(best_small, _cpu_time(lambda: step(small), calls))
        best_large = min(best_large, _cpu_time(lambda: step(large), calls))
    return best_large / best_small


class TestLinearWorkBeforeTheSignature:
    @pytest.mark.parametrize("name", sorted(GROWING_BODIES))
    def test_open_message_and_peek_grow_linearly(
        self, name: str, asset_trust: TrustStore, agreement: Agreement
    ) -> None:
        build, reached = GROWING_BODIES[name]
        small, large = (build(size) for size in GROWTH_SIZES)
        assert len(large) >= 3 * len(small)

        def opening(raw: bytes) -> Reason | None:
            return reason_of(raw, asset_trust, agreement, max_bytes=MAX_MESSAGE_BYTES)

        assert opening(small) is reached
        assert opening(large) is reached
        assert growth(opening, small, large) < GROWTH_BOUND
        assert growth(peek, small, large) < GROWTH_BOUND

    @pytest.mark.parametrize("name", sorted(GROWING_KEY_HEADERS))
    def test_the_unsigned_key_header_is_decoded_in_linear_time(self, name: str) -> None:
        small, large = (GROWING_KEY_HEADERS[name](size) for size in HEADER_GROWTH_SIZES)

        def decoding(header: str) -> Reason | None:
            try:
                decode_key_header(header)
            except RemoteError as error:
                return error.reason
            return None

        assert len(small) <= len(large) <= 8192
        assert decoding(large) in (None, Reason.PAYLOAD_UNDECRYPTABLE)
        assert growth(decoding, small, large) < GROWTH_BOUND

    def test_the_check_fails_the_quadratic_string_scan_it_replaced(self) -> None:
        # Control: the literal pattern before issue 21, which rescans the rest of the text from every
        # quote of an unterminated string. At sizes small enough for a unit test it is already 16x.
        old_literal = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
        build, _ = GROWING_BODIES["unterminated string of escaped quotes (issue 21)"]
        small, large = (build(size).decode() for size in (2 * 1024, 8 * 1024))
        assert growth(lambda text: old_literal.sub('""', text), small, large) > GROWTH_BOUND
