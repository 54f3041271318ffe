"""The audit chain hashes RFC 8785 canonical JSON (JCS), so a verifier in another language gets the same bytes:
the RFC's own examples, ECMAScript number spelling, UTF-16 key order; records hashed before it still verify."""

from __future__ import annotations

import json
import struct
from typing import Any

import pytest
import rfc8785
from hypothesis import given
from hypothesis import strategies as st

from services.auditor.record import canonical_json, jcs

# RFC 8785 section 3.2.2: the sample input and its canonical form
RFC_INPUT = r"""{
  "numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
  "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
  "literals": [null, true, false]
}"""
RFC_OUTPUT = r'{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],"string":"€$\u000f\nA'
RFC_OUTPUT += r"""'B\"\\\\\"/"}"""

# RFC 8785 appendix B: IEEE 754 doubles (hex) and how ECMAScript writes them
RFC_NUMBERS = [
    ("0000000000000000", "0"),
    ("8000000000000000", "0"),
    ("0000000000000001", "5e-324"),
    ("8000000000000001", "-5e-324"),
    ("7fefffffffffffff", "1.7976931348623157e+308"),
    ("ffefffffffffffff", "-1.7976931348623157e+308"),
    ("4340000000000000", "9007199254740992"),
    ("c340000000000000", "-9007199254740992"),
    ("4430000000000000", "295147905179352830000"),
    ("44b52d02c7e14af5", "9.999999999999997e+22"),
    ("44b52d02c7e14af6", "1e+23"),
    ("44b52d02c7e14af7", "1.0000000000000001e+23"),
    ("444b1ae4d6e2ef4e", "999999999999999700000"),
    ("444b1ae4d6e2ef4f", "999999999999999900000"),
    ("444b1ae4d6e2ef50", "1e+21"),
    ("3eb0c6f7a0b5ed8c", "9.999999999999997e-7"),
    ("3eb0c6f7a0b5ed8d", "0.000001"),
    ("41b3de4355555553", "333333333.3333332"),
    ("41b3de4355555554", "333333333.33333325"),
    ("41b3de4355555555", "333333333.3333333"),
    ("41b3de4355555556", "333333333.3333334"),
    ("41b3de4355555557", "333333333.33333343"),
    ("becbf647612f3696", "-0.0000033333333333333333"),
    ("43143ff3c1cb0959", "1424953923781206.2"),
]


def test_the_rfc_sample_canonicalises_to_the_rfcs_bytes() -> None:
    assert jcs(json.loads(RFC_INPUT)) == RFC_OUTPUT.encode()


@pytest.mark.parametrize(("ieee", "expected"), RFC_NUMBERS)
def test_numbers_are_written_as_ecmascript_writes_them(ieee: str, expected: str) -> None:
    (number,) = struct.unpack(">d", bytes.fromhex(ieee))
    assert jcs(number) == expected.encode()


@pytest.mark.parametrize(
    ("number", "expected"),
    [(1e21, "1e+21"), (1e-7, "1e-7"), (0.5, "0.5"), (1.0, "1"), (1e20, "100000000000000000000"), (42, "42")],
)
def test_floats_take_the_shortest_round_trip_form_and_whole_ones_lose_the_point(number: float, expected: str) -> None:
    assert jcs(number) == expected.encode()


def test_keys_sort_by_utf16_code_units_not_code_points() -> None:
    """RFC 8785 section 3.2.3: the emoji (surrogates D83D DE00) sorts before U+FB33, unlike in code point order."""
    keys = ["\u20ac", "\r", "\ufb33", "1", "\U0001f600", "\u0080", "\u00f6"]
    ordered = list(json.loads(jcs(dict.fromkeys(keys, 0))))
    assert ordered == ["\r", "1", "\u0080", "\u00f6", "\u20ac", "\U0001f600", "\ufb33"]
    assert list(json.loads(canonical_json(dict.fromkeys(keys, 0)))) != ordered  # why the legacy form is not JCS


def test_strings_keep_unicode_and_escape_only_what_the_rfc_requires() -> None:
    assert jcs("é\u2028/<\x7f") == '"é\u2028/<\x7f"'.encode()
    assert jcs('\x00\x1f\b\t\n\f\r"\\') == b'"\\u0000\\u001f\\b\\t\\n\\f\\r\\"\\\\"'


@pytest.mark.parametrize("value", [2**53, -(2**53), float("nan"), float("inf"), "\ud800"])
def test_what_json_cannot_carry_exactly_is_refused_not_hashed_approximately(value: Any) -> None:
    with pytest.raises(rfc8785.CanonicalizationError):
        jcs(value)


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53) + 1, 2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(exclude_categories=["Cs"])),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(st.characters(exclude_categories=["Cs"]), max_size=6), children, max_size=4)
    ),
    max_leaves=12,
)


@given(JSON)
def test_canonical_json_parses_back_to_the_same_value_and_is_its_own_canonical_form(value: Any) -> None:
    canonical = jcs(value)
    parsed = json.loads(canonical, parse_int=float)  # numbers are doubles in JSON, as in every other language
    assert parsed == value
    assert jcs(parsed) == canonical
