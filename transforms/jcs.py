r"""RFC 8785 JSON Canonicalization Scheme (JCS): the one encoding of a value that is hashed.

    canonicalize({"b": 1, "a": [1.5, "€"]}) == b'{"a":[1.5,"\xe2\x82\xac"],"b":1}'

Keys are sorted by their UTF-16 code units, strings are escaped as ECMAScript's JSON.stringify
does (only `"`, backslash and control characters), no whitespace is written, and numbers are IEEE-754
doubles printed as ECMAScript's Number.prototype.toString prints them. Integers beyond ±2**53
cannot be represented exactly and are rejected rather than silently rounded.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

from transforms.errors import CanonicalizationError

MAX_SAFE_INTEGER = 2**53
_encode_string = json.encoder.encode_basestring


def canonicalize(value: Any) -> bytes:
    """Returns the RFC 8785 canonical UTF-8 bytes of a JSON value (dict, list, str, number, bool, None)."""
    if _plain(value):
        # No floats, no integers beyond ±2**53 and only ASCII keys: then orjson's output, keys
        # sorted by code point and strings escaped as JSON.stringify does, is byte for byte the JCS
        # form, about fifteen times faster (tests/unit/test_jcs.py checks it against the slow path).
        try:
            return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
        except orjson.JSONEncodeError:
            pass  # a lone surrogate, or nesting deeper than orjson goes: the slow path below decides
    parts: list[str] = []
    _write(value, parts)
    text = "".join(parts)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = text[exc.start : exc.end]
        raise CanonicalizationError(
            f"string contains a lone surrogate {bad!r} at {exc.start}; JSON text must be valid Unicode"
        ) from None


def _plain(value: Any) -> bool:
    """True if `value` holds only strings, booleans, None, safe integers and ASCII-keyed objects."""
    kind = type(value)
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str or not key.isascii():
                return False
            # Leaves inline: most members are strings, and a call per member is most of the cost.
            kind = type(item)
            if kind is str or kind is bool or item is None:
                continue
            if kind is int:
                if not -MAX_SAFE_INTEGER <= item <= MAX_SAFE_INTEGER:
                    return False
            elif not _plain(item):
                return False
        return True
    if kind is list:
        return all(_plain(item) for item in value)
    if kind is str or kind is bool or value is None:
        return True
    if kind is int:
        return bool(-MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER)
    return False


def _utf16_key(key: str) -> bytes:
    return key.encode("utf-16-be", "surrogatepass")


def _write(value: Any, out: list[str]) -> None:
    if isinstance(value, str):
        out.append(_encode_string(value))
    elif value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        if abs(value) > MAX_SAFE_INTEGER:
            raise CanonicalizationError(
                f"integer {value} is beyond ±2**53 and cannot be an exact JSON number; send it as a string"
            )
        out.append(str(value))
    elif isinstance(value, float):
        out.append(format_number(value))
    elif isinstance(value, dict):
        keys = list(value)
        for k in keys:
            if not isinstance(k, str):
                raise CanonicalizationError(f"object key {k!r} is not a string")
        if any(k and max(k) > "\ud7ff" for k in keys):
            # Above U+D7FF code point order and UTF-16 order can differ.
            keys.sort(key=_utf16_key)
        else:
            keys.sort()
        out.append("{")
        first = True
        for k in keys:
            if not first:
                out.append(",")
            first = False
            out.append(_encode_string(k))
            out.append(":")
            _write(value[k], out)
        out.append("}")
    elif isinstance(value, (list, tuple)):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _write(item, out)
        out.append("]")
    else:
        raise CanonicalizationError(f"{type(value).__name__} value {value!r} is not a JSON value")


def format_number(value: float) -> str:
    """Formats a double as ECMAScript's Number.prototype.toString (RFC 8785 §3.2.2.3)."""
    if value != value or value in (float("inf"), float("-inf")):
        raise CanonicalizationError(f"{value} is not a JSON number (NaN and Infinity are not allowed)")
    if value == 0:
        return "0"
    sign = "-" if value < 0 else ""
    # repr() gives the shortest digits that round-trip, the same digits ECMAScript requires.
    mantissa, _, exp_text = repr(abs(value)).partition("e")
    int_part, _, frac_part = mantissa.partition(".")
    digits = (int_part + frac_part).lstrip("0")
    # n: position of the decimal point relative to the first significant digit.
    n = len(int_part) + (int(exp_text) if exp_text else 0)
    if int_part == "0":
        n -= len(frac_part) - len(frac_part.lstrip("0")) + 1
    digits = digits.rstrip("0") or "0"
    k = len(digits)
    if k <= n <= 21:
        text = digits + "0" * (n - k)
    elif 0 < n <= 21:
        text = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        text = "0." + "0" * (-n) + digits
    else:
        e = n - 1
        exponent = ("+" if e >= 0 else "-") + str(abs(e))
        text = (digits[0] + ("." + digits[1:] if k > 1 else "")) + "e" + exponent
    return sign + text
