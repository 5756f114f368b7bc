"""RFC 8785 canonical JSON, checked with the RFC's own examples."""

from __future__ import annotations

import json
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transforms.errors import CanonicalizationError
from transforms.jcs import _write, canonicalize, format_number

# RFC 8785 Appendix B: IEEE-754 bit patterns and their ECMAScript text.
NUMBERS = [
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


@pytest.mark.parametrize(("bits", "text"), NUMBERS)
def test_rfc8785_number_serialization(bits, text):
    value = struct.unpack(">d", bytes.fromhex(bits))[0]
    assert format_number(value) == text


@pytest.mark.parametrize("bits", ["7fffffffffffffff", "7ff0000000000000", "fff0000000000000"])
def test_nan_and_infinity_are_rejected(bits):
    with pytest.raises(CanonicalizationError):
        format_number(struct.unpack(">d", bytes.fromhex(bits))[0])


def test_rfc8785_section_3_2_2_example():
    source = r"""{
      "numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
      "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
      "literals": [null, true, false]
    }"""
    want = (
        '{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],'
        '"string":"\u20ac$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}'
    )
    assert canonicalize(json.loads(source)) == want.encode()


def test_rfc8785_section_3_2_3_sorting_by_utf16_code_units():
    source = {
        "\u20ac": "Euro Sign",
        "\r": "Carriage Return",
        "\ufb33": "Hebrew Letter Dalet With Dagesh",
        "1": "One",
        "\U0001f600": "Emoji: Grinning Face",
        "\u0080": "Control",
        "\u00f6": "Latin Small Letter O With Diaeresis",
    }
    got = json.loads(canonicalize(source))
    assert list(got.values()) == [
        "Carriage Return",
        "One",
        "Control",
        "Latin Small Letter O With Diaeresis",
        "Euro Sign",
        "Emoji: Grinning Face",
        "Hebrew Letter Dalet With Dagesh",
    ]


def test_rfc8785_utf8_output_of_the_sorting_example():
    # RFC 8785 §3.2.4: the UTF-8 bytes of {"€":"Euro Sign", ...} sorted start like this.
    out = canonicalize({"\u20ac": "x", "\r": "y"})
    assert out == b'{"\\r":"y","\xe2\x82\xac":"x"}'


def test_nested_structures_and_integers():
    assert canonicalize({"b": [1, {"d": True, "c": None}], "a": -0.0}) == b'{"a":0,"b":[1,{"c":null,"d":true}]}'


def test_out_of_range_integer_and_lone_surrogate_are_rejected():
    with pytest.raises(CanonicalizationError, match="2\\*\\*53"):
        canonicalize({"n": 2**60})
    with pytest.raises(CanonicalizationError, match="surrogate"):
        canonicalize({"s": "\ud800"})
    with pytest.raises(CanonicalizationError):
        canonicalize({1: "non-string key"})


# Plain values: strings (any code point but lone surrogates, control characters included), safe
# integers, booleans, null, lists and objects with ASCII keys. These take the orjson fast path.
_plain_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)
_plain_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53), max_value=2**53)
    | _plain_text
    | st.sampled_from(["\u2028\u2029", "\x7f", "\ufeff", "😀", '\x00\x1f\b\f\n\r\t"\\/']),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(st.characters(max_codepoint=127), max_size=6), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(_plain_values)
def test_the_fast_path_writes_exactly_what_the_rfc_8785_writer_writes(value):
    slow: list[str] = []
    _write(value, slow)
    assert canonicalize(value) == "".join(slow).encode("utf-8")


def test_nesting_deeper_than_orjson_goes_still_canonicalizes():
    value: object = "leaf"
    for _ in range(300):
        value = [value]
    assert canonicalize(value) == b"[" * 300 + b'"leaf"' + b"]" * 300
