"""What a request body may hold, checked at the edge before anything is fetched, stored or written:
JSON nested at most `MAX_DEPTH` deep, numbers a float or an int64 holds, text that is valid Unicode
(no lone UTF-16 surrogates, which cannot be stored or sent back as UTF-8), and every field within
explicit bounds. Errors name the field and never echo more than a few dozen characters of it."""

from __future__ import annotations

import contextlib
import json
import math
import re
from typing import Any

import numpy as np

MAX_DEPTH = 32  # of nested JSON arrays and objects
MAX_DIGITS = 18  # of an integer, in JSON or as text (an int64 holds them all)
MAX_PROMPT_CHARS = 5000
MAX_NAME_CHARS = 128  # model names, identifiers, keys
MAX_URL_CHARS = 2048  # callback URLs (media URLs are bounded by their bytes)

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_SURROGATE = re.compile("[\ud800-\udfff]")
_INTEGER = re.compile(rf"\s*-?\d{{1,{MAX_DIGITS}}}\s*")


class Refused(ValueError):
    """A field outside its bounds: `field` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field, self.message = field, message


class HugeNumber:
    """A JSON number no int64 or float holds, kept as a marker so the field's own check names it."""

    def __init__(self, text: str) -> None:
        self.digits = len(text)

    def __repr__(self) -> str:
        return f"a number of {self.digits} characters"


def shown(value: Any, limit: int = 40) -> str:
    """`value` for an error message: its repr, cut to `limit` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def depth(body: bytes) -> int:
    """How deeply the arrays and objects of a JSON document nest (strings skipped, not parsed)."""
    brackets = np.frombuffer(re.sub(rb"[^\[\]{}]", b"", _STRING.sub(b'""', body)), dtype=np.uint8)
    if brackets.size == 0:
        return 0
    steps = np.where((brackets == ord("[")) | (brackets == ord("{")), 1, -1)
    return int(np.cumsum(steps).max())


def _int(text: str) -> int | HugeNumber:
    return int(text) if len(text.lstrip("-")) <= MAX_DIGITS else HugeNumber(text)


def _float(text: str) -> float | HugeNumber:
    value = float(text)
    return value if math.isfinite(value) else HugeNumber(text)


def _constant(name: str) -> None:
    raise ValueError(f"{name} is not a number JSON allows")


def parse_json(body: bytes) -> Any:
    """The document in `body`; ValueError (with a message a client can act on) if it is not JSON, nests
    deeper than MAX_DEPTH or holds text that is not valid Unicode."""
    if depth(body) > MAX_DEPTH:
        raise ValueError(f"it nests deeper than {MAX_DEPTH} levels")
    value = json.loads(body, parse_int=_int, parse_float=_float, parse_constant=_constant)
    check_text(value, "")
    return value


def check_text(value: Any, where: str) -> None:
    """Refuse lone surrogates in any key or string of `value` (a parsed body or a form)."""
    if isinstance(value, str):
        if _SURROGATE.search(value):
            raise Refused(where or "body", f"{where or 'the body'} holds a lone UTF-16 surrogate; send valid Unicode")
    elif isinstance(value, dict):
        for key, item in value.items():
            name = f"{where}.{key}" if where else str(key)
            if isinstance(key, str) and _SURROGATE.search(key):
                raise Refused(where or "body", "a field name holds a lone UTF-16 surrogate; send valid Unicode")
            check_text(item, name)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            check_text(item, f"{where}[{i}]")


def integer(value: Any, name: str, low: int, high: int) -> int | None:
    """An int (or its decimal text) in low..high; None stays None."""
    if value is None:
        return None
    if isinstance(value, str) and _INTEGER.fullmatch(value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise Refused(name, f"{name} must be an integer from {low} to {high}, got {shown(value)}")
    if not low <= value <= high:
        raise Refused(name, f"{name} must be from {low} to {high}, got {shown(value)}")
    return value


def number(value: Any, name: str, low: float, high: float) -> float | None:
    """A finite number (or its decimal text) in low..high; None and "" are None."""
    if value is None or value == "":
        return None
    if isinstance(value, str) and len(value) <= 32:
        with contextlib.suppress(ValueError):
            value = float(value)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise Refused(name, f"{name} must be a number, got {shown(value)}")
    if not low <= value <= high:
        raise Refused(name, f"{name} must be from {low:g} to {high:g}, got {value:g}")
    return float(value)


def text(value: Any, name: str, max_chars: int) -> str | None:
    """A string of at most `max_chars` characters; None stays None."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise Refused(name, f"{name} must be a string, got {shown(value)}")
    if len(value) > max_chars:
        raise Refused(name, f"{name} is {len(value)} characters long; the limit is {max_chars}")
    return value


def known(body: dict[str, Any], fields: set[str] | frozenset[str], where: str = "") -> None:
    """Refuse a field this API does not take, naming it (no input is silently dropped)."""
    for key in body:
        if key not in fields:
            name = f"{where}.{key}" if where else key
            param = name if key else where or "body"  # a field named "" is named by what holds it
            raise Refused(param[:MAX_NAME_CHARS], f"unknown field {shown(name, 80)}; this takes "
                          f"{', '.join(sorted(fields))}")  # fmt: skip
