"""Strict JSON in, RFC 8785 canonical JSON out.

Received bytes are parsed strictly (no duplicate keys, no NaN/Infinity, bounded nesting) because a
lenient parser lets two readers see two different messages in the same bytes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import rfc8785

from broker.errors import Reason, VerificationError

MAX_DEPTH = 32


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise VerificationError(Reason.MESSAGE_MALFORMED, f"duplicate JSON key {key!r}")
        out[key] = value
    return out


def _reject_constant(name: str) -> Any:
    raise VerificationError(Reason.MESSAGE_MALFORMED, f"JSON constant {name} is not allowed")


def _check_depth(text: str, limit: int) -> None:
    # Counted before parsing so deep nesting never reaches the recursive parser.
    depth = 0
    in_string = False
    escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > limit:
                raise VerificationError(Reason.MESSAGE_MALFORMED, f"JSON nested deeper than {limit} levels")
        elif char in "]}":
            depth -= 1


def strict_loads(raw: bytes, *, max_depth: int = MAX_DEPTH) -> Any:
    """Parse UTF-8 JSON strictly; every failure is a `message.malformed` VerificationError."""
    try:
        text = raw.decode("utf-8", errors="strict")
    except UnicodeDecodeError as exc:
        raise VerificationError(Reason.MESSAGE_MALFORMED, f"not UTF-8 at byte {exc.start}") from None
    _check_depth(text, max_depth)
    try:
        return json.loads(text, object_pairs_hook=_reject_duplicates, parse_constant=_reject_constant)
    except VerificationError:
        raise
    except (ValueError, RecursionError) as exc:
        raise VerificationError(Reason.MESSAGE_MALFORMED, f"not valid JSON: {exc}") from None


def canonical_bytes(value: Mapping[str, Any] | list[Any]) -> bytes:
    """RFC 8785 (JCS) serialisation."""
    try:
        return bytes(rfc8785.dumps(value))
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as exc:
        raise VerificationError(Reason.MESSAGE_MALFORMED, f"cannot canonicalise: {exc}") from None
