"""Strict JSON parsing and RFC 8785 canonical serialisation (`broker.core.canonical`)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.core.canonical import MAX_DEPTH, canonical_bytes, strict_loads
from broker.core.errors import Reason, VerificationError


def _malformed(raw: bytes) -> VerificationError:
    with pytest.raises(VerificationError) as info:
        strict_loads(raw)
    assert info.value.reason is Reason.MESSAGE_MALFORMED
    return info.value


# --- RFC 8785 ----------------------------------------------------------------------------------


def test_rfc8785_section_3_2_2_example() -> None:
    # The sample input and output of RFC 8785 §3.2.2 (numbers, string escapes, literals).
    source = (
        b'{"numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],'
        b' "string": "\\u20ac$\\u000F\\u000aA\'\\u0042\\u0022\\u005c\\\\\\"\\/",'
        b' "literals": [null, true, false]}'
    )
    expected = (
        b'{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],'
        b'"string":"\xe2\x82\xac$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}'
    )
    assert canonical_bytes(strict_loads(source)) == expected


def test_rfc8785_sorts_keys_by_utf16_code_units() -> None:
    # RFC 8785 §3.2.3: U+1F600 (surrogates D83D DE00) sorts before U+FB33, unlike code point order.
    keys = ["\u20ac", "\r", "\ufb33", "1", "\U0001f600", "\u0080", "\u00f6"]
    ordered = ["\r", "1", "\u0080", "\u00f6", "\u20ac", "\U0001f600", "\ufb33"]
    out = canonical_bytes(dict.fromkeys(keys, 0)).decode("utf-8")
    positions = [out.index(_json_key(key)) for key in ordered]
    assert positions == sorted(positions)


def _json_key(key: str) -> str:
    return '"\\r"' if key == "\r" else f'"{key}"'


@pytest.mark.parametrize(
    ("value", "spelling"),
    [
        (1.0, b"1"),
        (-0.0, b"0"),
        (1e21, b"1e+21"),
        (1e-7, b"1e-7"),
        (0.1, b"0.1"),
        (123456789012345680000.0, b"123456789012345680000"),
        (2**53 - 1, b"9007199254740991"),
    ],
)
def test_number_spellings(value: float, spelling: bytes) -> None:
    assert canonical_bytes([value]) == b"[" + spelling + b"]"


@pytest.mark.parametrize(
    "value",
    [
        pytest.param({"n": float("nan")}, id="nan"),
        pytest.param({"n": float("inf")}, id="infinity"),
        pytest.param({"n": 2**64}, id="integer-beyond-i-json"),
        pytest.param({1: "a"}, id="non-string-key"),
        pytest.param({"b": b"bytes"}, id="bytes"),
    ],
)
def test_values_without_a_canonical_form_are_refused(value: Any) -> None:
    with pytest.raises(VerificationError) as info:
        canonical_bytes(value)
    assert info.value.reason is Reason.MESSAGE_MALFORMED


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.characters(codec="utf-8")),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(alphabet=st.characters(codec="utf-8"), max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@given(json_values)
def test_canonical_bytes_parse_back_to_the_same_value_and_are_a_fixed_point(value: Any) -> None:
    raw = canonical_bytes([value])
    parsed = strict_loads(raw)
    assert parsed == [value]
    assert canonical_bytes(parsed) == raw


# --- strict parsing ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b'{"a":1,"a":1}', id="duplicate-same-value"),
        pytest.param(b'{"a":1,"a":2}', id="duplicate-other-value"),
        pytest.param(b'{"x":{"a":1,"a":2}}', id="duplicate-nested"),
        pytest.param(b'[{"a":1},{"b":1,"b":1}]', id="duplicate-in-array"),
        pytest.param(b'{"a":1,"\\u0061":2}', id="duplicate-escaped"),
    ],
)
def test_duplicate_keys_are_malformed(raw: bytes) -> None:
    assert "duplicate" in _malformed(raw).diagnostic


@pytest.mark.parametrize("constant", [b"NaN", b"Infinity", b"-Infinity"])
def test_non_finite_constants_are_malformed(constant: bytes) -> None:
    _malformed(b'{"a":' + constant + b"}")


def test_nesting_is_bounded() -> None:
    at_limit = b"[" * MAX_DEPTH + b"]" * MAX_DEPTH
    assert strict_loads(at_limit) is not None
    _malformed(b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1))
    _malformed(b'{"a":' * (MAX_DEPTH + 1) + b"1" + b"}" * (MAX_DEPTH + 1))
    # Far beyond Python's recursion limit: refused by counting, never by crashing the parser.
    _malformed(b"[" * 100_000)


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    text = '["' + "[{" * 100 + '\\"[["]'
    assert strict_loads(text.encode()) == ["[{" * 100 + '"[[']


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"[" * 40 + b'"' + b'\\"' * 1000, id="escaped-quotes"),
        pytest.param(b"[" * 40 + b'"' + b"\\" * 1000 + b"\\", id="trailing-backslash"),
        pytest.param(b'["a",' + b'"' + b"[" * 100, id="brackets-after-it"),
    ],
)
def test_an_unterminated_string_is_malformed_whatever_follows_it(raw: bytes) -> None:
    _malformed(raw)


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b'"\xff"', id="invalid-byte"),
        pytest.param(b'"\xc0\xaf"', id="overlong"),
        pytest.param(b'"\xed\xa0\x80"', id="encoded-surrogate"),
        pytest.param(b'"\xd0"', id="truncated-sequence"),
        pytest.param(b"\xef\xbb\xbf{}", id="byte-order-mark"),
        pytest.param('{"a":1}'.encode("utf-16"), id="utf-16"),
    ],
)
def test_bytes_that_are_not_utf8_json_are_malformed(raw: bytes) -> None:
    _malformed(raw)


@pytest.mark.parametrize(
    "raw",
    [b"", b"{", b"{'a':1}", b'{"a":1,}', b"[1,]", b"01", b'{"a":1} {"b":2}', b"// comment\n{}"],
)
def test_invalid_json_is_malformed(raw: bytes) -> None:
    _malformed(raw)


def test_accepted_json_is_returned_as_python_values() -> None:
    assert strict_loads('{"имя":"Раҳимов","n":[1,2.5,true,null]}'.encode()) == {
        "имя": "Раҳимов",
        "n": [1, 2.5, True, None],
    }


def test_integers_past_the_safe_range_are_read_as_doubles_like_rfc8785_writes_them() -> None:
    # 2**53 is what RFC 8785 writes for the double 9007199254740992.0: it must read back and re-serialise.
    assert canonical_bytes(strict_loads(b"[9007199254740992]")) == b"[9007199254740992]"
    assert strict_loads(b"[9007199254740991]") == [9007199254740991]
    assert isinstance(strict_loads(b"[9007199254740991]")[0], int)
    # 2**53 + 1 has no double of its own: its canonical spelling differs, so sealed bytes cannot hold it.
    assert canonical_bytes(strict_loads(b"[9007199254740993]")) == b"[9007199254740992]"


def test_numbers_beyond_any_double_are_malformed() -> None:
    _malformed(b"[" + b"9" * 5000 + b"]")  # past Python's integer-parsing limit
    with pytest.raises(VerificationError) as info:
        canonical_bytes(strict_loads(b"[1e400]"))  # reads as infinity, which has no JSON spelling
    assert info.value.reason is Reason.MESSAGE_MALFORMED
