"""Strict JSON in, RFC 8785 canonical JSON out.

Received bytes are parsed strictly (no duplicate keys, no NaN/Infinity, bounded nesting) because a
lenient parser lets two readers see two different messages in the same bytes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import rfc8785

from broker.core.errors import Reason, VerificationError

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


# One left-to-right pass: a literal runs from its opening quote to the closing one, or to the end of
# the text when it is never closed. Possessive repeats and the optional closing quote mean a match
# never fails and never backtracks, so no quote is scanned from twice. (A pattern that needs the
# closing quote fails at every quote of an unterminated `"\"\"\"...` and rescans the rest from the
# next one: quadratic work before any signature is checked.)
_STRING_LITERAL = re.compile(r'"(?:[^"\\]++|\\.)*+"?', re.DOTALL)
_BRACKET = re.compile(r"[\[\]{}]")


def _check_depth(text: str, limit: int) -> None:
    # Counted before parsing so deep nesting never reaches the recursive parser. Depth cannot exceed
    # the number of opening brackets, so a typical message returns after two C-level counts.
    if text.count("[") + text.count("{") <= limit:
        return
    depth = 0
    # Brackets inside string literals do not nest. For text the JSON parser accepts, these literals
    # are exactly its strings; an unterminated one hides the brackets after it, but such text fails
    # to parse with the same `message.malformed`.
    for bracket in _BRACKET.findall(_STRING_LITERAL.sub('""', text)):
        if bracket in "[{":
            depth += 1
            if depth > limit:
                raise VerificationError(Reason.MESSAGE_MALFORMED, f"JSON nested deeper than {limit} levels")
        else:
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
    if _plain_json(value):
        # For ASCII keys, safe integers and no floats, JCS is exactly the standard library's compact,
        # key-sorted, non-ASCII-preserving output, written in C instead of rfc8785's pure Python.
        try:
            return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode(
                "utf-8"
            )
        except (UnicodeEncodeError, ValueError, RecursionError):
            pass  # lone surrogates and the like: rfc8785 below gives the precise refusal
    try:
        return bytes(rfc8785.dumps(value))
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as exc:
        raise VerificationError(Reason.MESSAGE_MALFORMED, f"cannot canonicalise: {exc}") from None


_FAST_WALK_LIMIT = 10_000  # nodes; larger (or cyclic) values take the reference path


def _plain_json(value: object) -> bool:
    """Whether `value` holds only what JCS and `json.dumps` spell identically.

    Floats (ECMAScript number spelling), integers outside I-JSON, non-ASCII keys (UTF-16 key order),
    and any other type, subclasses included, are left to the reference implementation.
    """
    pending: list[object] = [value]
    visited = 0
    while pending:
        item = pending.pop()
        visited += 1
        if visited > _FAST_WALK_LIMIT:
            return False
        kind = type(item)
        if kind is str or kind is bool or item is None:
            continue
        if kind is int and isinstance(item, int):
            if not -MAX_SAFE_INTEGER <= item <= MAX_SAFE_INTEGER:
                return False
        elif kind is dict and isinstance(item, dict):
            if not all(type(key) is str and key.isascii() for key in item):
                return False
            pending.extend(item.values())
        elif kind is list and isinstance(item, list):
            pending.extend(item)
        else:
            return False
    return True
