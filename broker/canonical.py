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
MAX_SAFE_INTEGER = 2**53 - 1  # I-JSON (RFC 7493): integers every reader holds exactly


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise VerificationError(Reason.MESSAGE_MALFORMED, f"duplicate JSON key {key!r}")
        out[key] = value
    return out


def _reject_constant(name: str) -> Any:
    raise VerificationError(Reason.MESSAGE_MALFORMED, f"JSON constant {name} is not allowed")


def _parse_int(text: str) -> int | float:
    # RFC 8785 reads every number as an IEEE double: a large float is spelled with integer digits,
    # and must come back as that float, not as an int the serialiser would refuse to write again.
    value = int(text)
    return value if -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER else float(text)


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
        return json.loads(
            text,
            object_pairs_hook=_reject_duplicates,
            parse_constant=_reject_constant,
            parse_int=_parse_int,
        )
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
