"""What the audit log keeps of a rejected body that is too big, or unproven, to keep whole (pure).

The log is append-only, so every byte a peer makes us store stays forever. A rejected body that is
oversized, or whose signature did not verify, is therefore kept as a *bounded record*: the SHA-256
and length of the whole body (what the negative receipt and the quarantine copy name) and only its
first `PREFIX_BYTES`, as the canonical JSON

    {"bounded_body":{"length":<bytes>,"prefix":"<base64>","sha256":"<hex>"}}

in the entry's `envelope` column. The leaf hash covers it like any envelope, so the auditor's tools
verify such a log unchanged. A REJECTED entry's envelope is a bounded record exactly when it starts
with `MARKER`: the gateway bounds every rejected body that starts with those bytes, whatever its
size, so a peer cannot make its raw bytes pass for a record we wrote.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass

from broker.core.canonical import canonical_bytes

# 64 KiB: enough to see what a message was (its envelope members, the start of its payload).
PREFIX_BYTES = 64 * 1024
MARKER = b'{"bounded_body":'
_SHA256_HEX = frozenset("0123456789abcdef")


@dataclass(frozen=True)
class BoundedBody:
    length: int  # of the whole body
    sha256: str  # of the whole body, lowercase hex
    prefix: bytes

    @property
    def complete(self) -> bool:
        """Whether the prefix is the whole body (a short body that happened to start with MARKER)."""
        return len(self.prefix) == self.length

    def to_bytes(self) -> bytes:
        record = {
            "length": self.length,
            "prefix": base64.b64encode(self.prefix).decode("ascii"),
            "sha256": self.sha256,
        }
        return canonical_bytes({"bounded_body": record})


def bound(raw: bytes, *, prefix_bytes: int = PREFIX_BYTES) -> BoundedBody:
    return BoundedBody(length=len(raw), sha256=hashlib.sha256(raw).hexdigest(), prefix=raw[:prefix_bytes])


def stored_form(raw: bytes, *, whole: bool, prefix_bytes: int = PREFIX_BYTES) -> bytes:
    """The bytes a REJECTED entry records: `raw` itself when `whole`, else its bounded record.

    A body starting with MARKER is always recorded bounded (its prefix then holds all of a short one).
    """
    if whole and not raw.startswith(MARKER):
        return raw
    return bound(raw, prefix_bytes=prefix_bytes if not whole else len(raw)).to_bytes()


def parse_bounded(stored: bytes) -> BoundedBody | None:
    """The bounded record in a REJECTED entry's envelope; None if it holds the body itself.

    Raises ValueError for bytes that start like a record but are not one the gateway wrote.
    """
    if not stored.startswith(MARKER):
        return None
    try:
        document = json.loads(stored)
        record = document["bounded_body"]
        length, prefix_text, sha256 = record["length"], record["prefix"], record["sha256"]
        prefix = base64.b64decode(prefix_text, validate=True)
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        raise ValueError(f"not a bounded-body record: {exc}") from None
    typed = (
        isinstance(record, dict)
        and set(document) == {"bounded_body"}
        and set(record) == {"length", "prefix", "sha256"}
        and type(length) is int
        and isinstance(sha256, str)
        and len(sha256) == 64
        and set(sha256) <= _SHA256_HEX
    )
    if not typed:
        raise ValueError("not a bounded-body record: wrong members")
    body = BoundedBody(length=length, sha256=sha256, prefix=prefix)
    well_formed = len(prefix) <= length and body.to_bytes() == stored
    if not well_formed:
        raise ValueError("not a bounded-body record in canonical form")
    if body.complete and hashlib.sha256(prefix).hexdigest() != sha256:
        raise ValueError("a bounded-body record holding the whole body names another SHA-256")
    return body


def body_digest(stored: bytes) -> tuple[str, int]:
    """SHA-256 (hex) and length of the body a REJECTED entry stands for, bounded or whole."""
    try:
        bounded = parse_bounded(stored)
    except ValueError:
        bounded = None
    if bounded is None:
        return hashlib.sha256(stored).hexdigest(), len(stored)
    return bounded.sha256, bounded.length
