"""The submission channel's wire format: what a hostile or careless ministry system may send is refused
with a reason code before anything is sealed, and the answers read back as they were written."""

from __future__ import annotations

import base64
import json
from uuid import UUID

import pytest

from broker.core.catalogue import sample_payloads
from broker.core.errors import LocalError, Reason
from broker.exchange.submission import (
    Accepted,
    ReceiptNews,
    Refused,
    Submission,
    encode_answer,
    encode_submission,
    max_submission_bytes,
    parse_answer,
    parse_submission,
    sealed_submission,
)

LIMIT = max_submission_bytes(4 * 1024 * 1024)
PAYLOAD = json.loads(sample_payloads()["worker.death"].model_dump_json())


def good(**changes: object) -> dict[str, object]:
    return {"request_id": "r-1", "type": "worker.death", "to": "TJ-MOL", "payload": PAYLOAD, **changes}


def refused_with(body: bytes, *, max_bytes: int = LIMIT) -> tuple[Reason, str]:
    with pytest.raises(LocalError) as caught:
        parse_submission(body, max_bytes=max_bytes)
    return caught.value.reason, caught.value.diagnostic


def test_a_payload_submission_reads_back_with_defaults() -> None:
    submission, digest = parse_submission(json.dumps(good()).encode(), max_bytes=LIMIT)

    assert (submission.type, submission.version, submission.to, submission.sender) == (
        "worker.death",
        1,
        "TJ-MOL",
        None,
    )
    assert submission.payload == PAYLOAD
    assert len(digest) == 64


def test_the_request_digest_ignores_spelling_but_not_content() -> None:
    # A client that retries may serialise the same request differently; only the content counts.
    document = good(correlation_id="0190a2b0-0000-7000-8000-000000000000")
    compact = json.dumps(document, separators=(",", ":")).encode()
    spaced = json.dumps(dict(reversed(document.items())), indent=3).encode()
    _, first = parse_submission(compact, max_bytes=LIMIT)
    _, second = parse_submission(spaced, max_bytes=LIMIT)
    _, other = parse_submission(json.dumps(good(to="TJ-MVD")).encode(), max_bytes=LIMIT)

    assert first == second
    assert other != first


def test_an_oversized_body_is_refused_before_it_is_read() -> None:
    reason, diagnostic = refused_with(b"{" * 5000, max_bytes=4096)
    assert reason is Reason.SUBMISSION_OVERSIZED
    assert "5000 bytes" in diagnostic


def test_the_limit_leaves_room_for_the_largest_sealed_envelope() -> None:
    envelope = b"x" * 4096
    body = encode_submission(sealed_submission("r", envelope))
    assert len(body) <= max_submission_bytes(4096)
    assert max_submission_bytes(4096) < 2 * 4096 + 128 * 1024  # bounded, not open-ended


@pytest.mark.parametrize(
    ("body", "hint"),
    [
        (b"not json", "JSON"),
        (b"\xff\xfe{}", "UTF-8"),
        (b"[]", "object"),
        (b'{"request_id": "a", "request_id": "b"}', "duplicate"),
        (json.dumps(good(version=float("nan"))).encode(), "NaN"),
        (b'{"a":' * 100 + b"1" + b"}" * 100, "nest"),
        (json.dumps(good(extra=1)).encode(), "extra"),
        (json.dumps(good(version=1.0)).encode(), "version"),
        (json.dumps(good(version=0)).encode(), "version"),
        (json.dumps(good(request_id="has space")).encode(), "request_id"),
        (json.dumps(good(request_id="")).encode(), "request_id"),
        (json.dumps(good(request_id="x" * 129)).encode(), "request_id"),
        (json.dumps(good(to="tj-mol")).encode(), "to"),
        (json.dumps(good(type="Worker Death")).encode(), "type"),
        (json.dumps(good(correlation_id="not-a-uuid")).encode(), "correlation_id"),
        (json.dumps(good(payload=None)).encode(), "exactly one"),
        (json.dumps(good(sealed="AAAA")).encode(), "exactly one"),
        (json.dumps({"request_id": "r", "payload": PAYLOAD}).encode(), "type"),
        (json.dumps({"request_id": "r", "sealed": "AAAA", "to": "TJ-MOL"}).encode(), "own to"),
        (json.dumps(good(sealed_key="k")).encode(), "sealed_key"),
        (
            json.dumps({"request_id": "r", "sealed": "A" * 10, "sealed_key": "k" * 70_000}).encode(),
            "sealed_key",
        ),
    ],
)
def test_a_malformed_submission_is_refused_with_its_reason(body: bytes, hint: str) -> None:
    reason, diagnostic = refused_with(body)
    assert reason is Reason.SUBMISSION_MALFORMED
    assert hint.lower() in diagnostic.lower(), diagnostic


def test_sealed_bytes_travel_exactly_and_bad_base64_is_refused() -> None:
    raw = b'{"id":"x","signature":"..."}\n\x00\xff'
    submission, _ = parse_submission(encode_submission(sealed_submission("r", raw)), max_bytes=LIMIT)
    assert submission.envelope_bytes() == raw

    for spoiled in ("not base64!", base64.b64encode(raw).decode()[:-1]):
        broken, _ = parse_submission(
            json.dumps({"request_id": "r", "sealed": spoiled}).encode(), max_bytes=LIMIT
        )
        with pytest.raises(LocalError) as caught:
            broken.envelope_bytes()
        assert caught.value.reason is Reason.SUBMISSION_MALFORMED


def test_a_submission_made_by_the_client_is_what_the_gateway_reads() -> None:
    made = Submission(request_id="r-2", type="worker.death", to="TJ-MOL", sender="RU-MVD", payload=PAYLOAD)
    read, _ = parse_submission(encode_submission(made), max_bytes=LIMIT)
    assert read == made


def test_answers_read_back_as_written() -> None:
    message_id = UUID("0190a2b0-0000-7000-8000-000000000000")
    answers: list[Accepted | Refused | ReceiptNews] = [
        Accepted(
            request_id="r", message_id=message_id, sha256="0" * 64, type="t", sender="RU-MVD", to="TJ-MOL"
        ),
        Refused(request_id=None, reason="policy.submitter_not_allowed", diagnostic="no", article="15.5"),
        ReceiptNews(
            request_id="r", message_id=message_id, verdict="rejected", reason="schema.invalid", final=False
        ),
    ]
    assert [parse_answer(encode_answer(answer)) for answer in answers] == answers


def test_an_unreadable_answer_is_an_error_not_a_crash() -> None:
    for body in (b"{}", b'{"status": "maybe"}', b"\x00"):
        with pytest.raises(LocalError) as caught:
            parse_answer(body)
        assert caught.value.reason is Reason.SUBMISSION_MALFORMED
