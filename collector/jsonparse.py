"""JSON parsing that never changes what was sent.

orjson is the fast path, but it reads integers outside [-2**63, 2**64) and decimals with more
digits than a double holds as floats, so `123456789012345678901234567890` or
`1.0000000000000000000001` would be stored altered while the answer says "accepted". Such
numbers can only appear in a body with a long run of digits or a three-digit exponent; only
those bodies are parsed again by the standard library, which hands every number's text to us.
A number that would not survive the round trip becomes an `InexactNumber`, and validation
rejects the event that holds it with the field's name.

Duplicate keys in one object: the last value wins, as in JavaScript's `JSON.parse` (both
parsers agree), and the stored payload holds that object.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

# Which bodies need the slow path: a run of 16+ digits and dots (16+ significant digits are
# possible), or a number token with a negative exponent of three digits or more (underflow to
# zero or a subnormal). A positive exponent needs no look: with at most 15 digits the double
# holds the number exactly, and an overflow to infinity is refused by orjson itself. Found
# with bytes.translate and substring searches, which run at memory speed; a regular expression
# over a 1 MB body cost more than parsing it. Text inside strings that happens to match only
# costs the slow path.
_CLASSES = bytearray(b"x" * 256)
for _c in b"0123456789.":
    _CLASSES[_c] = ord("0")
for _c in b"eE":
    _CLASSES[_c] = ord("e")
_CLASSES[ord("-")] = ord("s")
for _c in b"[:, \t\r\n":
    _CLASSES[_c] = ord("|")  # what may stand before a number token
_CLASSES = bytes(_CLASSES)
_DIGIT, _BOUNDARY, _SIGN = ord("0"), ord("|"), ord("s")


def suspect(body: bytes) -> bool:
    """Whether `body` may hold a number that orjson would read altered (then `loads` parses it
    again exactly). False for most texts; a match inside a string only costs the slow path.
    Also a check of many JSON texts at once, joined by line breaks: a line break stands
    before a number as the start of a text does."""
    shape = b"|" + bytes(body).translate(_CLASSES)
    if b"0" * 16 in shape:
        return True
    at = shape.find(b"0es000")
    while at != -1:
        start = at
        while shape[start] == _DIGIT:  # back to the start of the number
            start -= 1
        if shape[start] == _BOUNDARY or (shape[start] == _SIGN
                                         and shape[start - 1] == _BOUNDARY):
            return True
        at = shape.find(b"0es000", at + 1)
    return False


# orjson accepts 1,024 levels; the standard library's parser recurses once per level.
_DEPTH_HEADROOM = 1_200
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1  # what orjson keeps as an integer


class InexactNumber:
    """A JSON number that a 64-bit integer or a double cannot hold exactly."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def _parse_int(text: str) -> int | InexactNumber:
    try:
        value = int(text)
    except ValueError:  # more digits than Python converts by default (4,300)
        return InexactNumber(text[:40] + "...")
    return value if _INT_MIN <= value <= _INT_MAX else InexactNumber(text)


def _parse_float(text: str) -> float | InexactNumber:
    value = float(text)
    try:
        # Stored is orjson's shortest repr of the double: it must equal the number sent.
        exact = Decimal(repr(value)) == Decimal(text)
    except InvalidOperation:  # inf or nan from an overflowing exponent
        exact = False
    return value if exact else InexactNumber(text)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def loads(body: bytes) -> Any:
    """Parse JSON; raises `orjson.JSONDecodeError` (a ValueError) for invalid JSON."""
    data = orjson.loads(body)
    if not suspect(body):
        return data
    if sys.getrecursionlimit() < _DEPTH_HEADROOM + 200:
        sys.setrecursionlimit(_DEPTH_HEADROOM + 200)
    try:
        return json.loads(
            body, parse_int=_parse_int, parse_float=_parse_float, parse_constant=_refuse_constant
        )
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def find(value: Any, match: Callable[[Any], bool], path: str = "") -> tuple[str, Any] | None:
    """The first (path, value) inside `value` for which `match` is true; keys are tested too.

    Iterative, so depth costs no stack; only called for an item already known to be bad."""
    stack: list[tuple[str, Any]] = [(path, value)]
    while stack:
        where, v = stack.pop()
        if match(v):
            return where or "item", v
        if isinstance(v, dict):
            for k, child in reversed(list(v.items())):
                if match(k):
                    return f"{where}.{k}" if where else str(k), k
                stack.append((f"{where}.{k}" if where else str(k), child))
        elif isinstance(v, list):
            for i in range(len(v) - 1, -1, -1):
                stack.append((f"{where}[{i}]", v[i]))
    return None
