"""Canonical JSON and the message-text rules: the bytes a request's key is hashed from.

Rule 3 of the key (see :mod:`promptcache._keys` and DESIGN.md, "The key"): sorted object keys, no
whitespace, UTF-8, integral floats written as integers (``0 == 0.0``), list order kept, omitted parameters
left omitted. Rule 4's text normalisers (:func:`trim_text`, :func:`collapse_text`) live here too, applied
copy-on-write by :func:`_with_text_policy`.

Two paths give the same bytes: :func:`_fast_canonical` hands a plain request straight to orjson, and the
full walk (:func:`_canon`) decides everything else exactly. Nothing here knows about scopes, endpoints or
stores; it is pure and safe to call from any thread.
"""

from __future__ import annotations

import bisect
import functools
import gc
import itertools
import math
import operator
import re
import sys
import uuid
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any, Final

import orjson

from promptcache.exceptions import UncacheableRequestError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

__all__ = [
    "COLLAPSE_RULE",
    "EXACT_RULE",
    "TRIM_RULE",
    "TextRule",
    "canonical_json",
    "collapse_text",
    "trim_text",
]

# 2**53: integral floats above this are not exactly representable as the same integer everywhere.
_MAX_SAFE_INT: Final = 9_007_199_254_740_992


# What KeyPolicy.TRIM removes: blank lines at the start, spaces (and the CR of a CRLF) before each line
# end, and all trailing spaces and line ends. Tabs are never removed: a trailing tab is data (a TSV row's
# empty last field). Indentation and anything inside a line are never touched.
_TRIM: Final = re.compile(r"\A(?:[ \r]*\n)+|[ \r]+(?=\n)|[ \r\n]+\Z")
_SPACE_RUN: Final = re.compile(r"\s+")
_BLANKS: Final = " \r\n"
# A space or CR just before a line end. The pattern starts with the literal "\n", so the regex engine skips
# to each line end at C speed instead of trying a match at every space.
_BLANK_BEFORE_LINE_END: Final = re.compile(r"\n(?<=[ \r]\n)")

Edit = tuple[int, int, str]  # replace text[start:end] with the string


def _trim_edits(text: str) -> list[Edit]:
    return [(m.start(), m.end(), "") for m in _TRIM.finditer(text)]


def _collapse_edits(text: str) -> list[Edit]:
    end = len(text)
    return [
        (m.start(), m.end(), "" if m.start() == 0 or m.end() == end else " ")
        for m in _SPACE_RUN.finditer(text)
    ]


def trim_text(text: str) -> str:
    """Apply :attr:`KeyPolicy.TRIM`: never touches indentation, tabs or characters inside a line.

    Exactly ``_TRIM.sub("", text)`` (a property test holds them equal), without running that regex: it
    tries three alternatives at every character, which costs more than hashing the whole request. Here
    the outer blanks are two C-level strips and only a text with blanks before a line end inside it is
    split into lines. A text that needs no change is returned as the same object.
    """
    if not text:
        return text
    start = 0
    if text[0] in _BLANKS:  # leading blank lines go, the first non-blank line's indentation stays
        rest = text.lstrip(_BLANKS)
        if not rest:
            return ""
        start = text.rfind("\n", 0, len(text) - len(rest)) + 1
    end = len(text.rstrip(_BLANKS)) if text[-1] in _BLANKS else len(text)
    out = text[start:end] if start or end < len(text) else text
    # ``out`` now starts on a non-blank line and ends in a non-blank character: only the line ends inside
    # it can still have blanks before them.
    if "\n" in out and _BLANK_BEFORE_LINE_END.search(out) is not None:
        return "\n".join([line.rstrip(" \r") for line in out.split("\n")])
    return out


def collapse_text(text: str) -> str:
    """Apply :attr:`KeyPolicy.COLLAPSE`: exactly the seed tutorial's whitespace rule."""
    return " ".join(text.split())


def _exact_text(text: str) -> str:
    return text


@dataclass(frozen=True, slots=True)
class TextRule:
    """A text normaliser, applicable to one string or to text split into parts.

    Parts (the text blocks of one message) are concatenated by the provider, so the rule is applied to
    their joined text and the result split back at the same boundaries: ``"Hello "`` + ``"world"`` keeps its
    space, where trimming each part alone would have made it ``"Hello"`` + ``"world"``.
    """

    whole: Callable[[str], str]
    edits: Callable[[str], list[Edit]] | None  # None: the rule never changes text

    def parts(self, texts: list[str]) -> list[str]:
        if self.edits is None:
            return texts
        if len(texts) == 1:
            return [self.whole(texts[0])]
        joined = "".join(texts)
        if self.whole(joined) == joined:  # no edit changes a character, so none moves one between parts
            return texts
        return _split_edits(texts, joined, self.edits(joined))


def _split_edits(texts: list[str], joined: str, edits: list[Edit]) -> list[str]:
    """``edits`` of ``joined`` (the texts concatenated) applied, split back into the texts' parts."""
    starts = list(itertools.accumulate((len(t) for t in texts[:-1]), initial=0))
    out: list[list[str]] = [[] for _ in texts]

    def copy(lo: int, hi: int) -> None:  # joined[lo:hi], each character to the part it came from
        for n, start in enumerate(starts):
            end = start + len(texts[n])
            if lo < end and hi > start:
                out[n].append(joined[max(lo, start) : min(hi, end)])

    pos = 0
    for start, end, repl in edits:
        copy(pos, start)
        if repl:  # a replacement belongs to the part where the replaced run began
            out[bisect.bisect_right(starts, start) - 1].append(repl)
        pos = end
    copy(pos, len(joined))
    return ["".join(pieces) for pieces in out]


TRIM_RULE: Final = TextRule(trim_text, _trim_edits)
COLLAPSE_RULE: Final = TextRule(collapse_text, _collapse_edits)
EXACT_RULE: Final = TextRule(_exact_text, None)


class _BadValue(Exception):  # noqa: N818 - internal signal, re-raised as UncacheableRequestError
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.parts: list[str] = []


def _canon_scalar(value: object) -> object:
    """Canonicalise a non-container value, or raise _BadValue naming what it is."""
    if value is None or value is True or value is False:
        return value
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):  # noqa: PLR0124 - NaN test
            raise _BadValue(f"float {value!r} has no JSON form")
        # 0 == 0.0: an integral float is written as the integer (and -0.0 as 0).
        if value.is_integer() and -_MAX_SAFE_INT <= value <= _MAX_SAFE_INT:
            return int(value)
        return float(value)
    if isinstance(value, int):  # bool handled above; IntEnum and friends become plain ints
        return int(value)
    if isinstance(value, str):  # StrEnum and other str subclasses become plain str
        return "" + value
    # dict/list subclasses (OrderedDict ...) are written as their base, as orjson does.
    if isinstance(value, dict):
        return _canon(dict(value))
    if isinstance(value, list | tuple):
        return _canon(list(value))
    if isinstance(value, Enum):  # orjson writes an enum as its value; the slow path must agree
        return _canon(value.value)
    if isinstance(value, uuid.UUID):  # likewise written by orjson as its canonical string
        return str(value)
    raise _BadValue(f"{type(value).__qualname__} value has no JSON form")


def _canon(value: object) -> object:
    """Return a canonical deep copy: only dict/list/str/int/float/bool/None, floats normalised."""
    kind = type(value)
    if kind is dict:
        out: dict[str, object] = {}
        for k, v in value.items():  # type: ignore[attr-defined]
            if type(k) is not str:
                if not isinstance(k, str):
                    raise _BadValue(f"dict key {k!r} is not a string")
                k = "" + k  # noqa: PLW2901 - a str-subclass key is written as plain str, as orjson does
            vk = type(v)
            try:
                out[k] = v if vk is str or vk is int or v is None else _canon(v)
            except _BadValue as exc:
                exc.parts.append(f".{k}")
                raise
        return out
    if kind is list or kind is tuple:
        items: list[object] = []
        for i, v in enumerate(value):  # type: ignore[arg-type]
            vk = type(v)
            try:
                items.append(v if vk is str or vk is int or v is None else _canon(v))
            except _BadValue as exc:
                exc.parts.append(f"[{i}]")
                raise
        return items
    if kind is str or kind is int:
        return value
    return _canon_scalar(value)


_TEXT_PART_TYPES: Final = frozenset({"text", "input_text", "output_text"})


def _is_text_part(part: object) -> bool:
    return (
        isinstance(part, dict)
        and isinstance(part.get("type"), str)
        and part["type"] in _TEXT_PART_TYPES
        and isinstance(part.get("text"), str)
    )


def _ruled(value: Any, rule: TextRule) -> Any:  # noqa: ANN401 - JSON
    """``value`` with the rule applied if it is text or a list of text parts; copies only what changes."""
    if isinstance(value, str):
        return rule.whole(value)
    if not isinstance(value, list):
        return value
    where = [i for i, part in enumerate(value) if _is_text_part(part)]
    if not where:
        return value
    texts = rule.parts([value[i]["text"] for i in where])
    out: list[Any] | None = None
    for i, text in zip(where, texts, strict=True):
        if text != value[i]["text"]:
            if out is None:
                out = list(value)
            out[i] = {**value[i], "text": text}
    return value if out is None else out


def _with_text_policy(
    request: dict[str, Any], text_fields: tuple[str, ...], messages_field: str, rule: TextRule
) -> dict[str, Any]:
    """``request`` with message text normalised, copy-on-write: the caller's objects are never changed.

    Only message text is touched (``text_fields`` and the ``content`` of each message in
    ``messages_field``): roles, tools and arguments are not. A final assistant message is a prefill (or a
    ``prefix: true`` continuation) the model continues character by character: it is kept exactly. Which
    fields hold text is the endpoint's business, decided by the caller (:mod:`promptcache._keys`).
    """
    out = dict(request)
    messages = out.get(messages_field)
    for name in text_fields:
        if name in out and not (name == messages_field and isinstance(messages, list)):
            out[name] = _ruled(out[name], rule)
    if isinstance(messages, list):
        copied: list[Any] | None = None
        last = len(messages) - 1
        whole = rule.whole
        for i, message in enumerate(messages):
            if not (isinstance(message, dict) and "content" in message):
                continue
            if i == last and message.get("role") == "assistant":
                continue  # a prefill: its trailing space is what the model continues from
            value = message["content"]
            content = whole(value) if type(value) is str else _ruled(value, rule)
            if content is not value and content != value:
                if copied is None:
                    copied = list(messages)
                copied[i] = {**message, "content": content}
        if copied is not None:
            out[messages_field] = copied
    return out


def _canon_checked(value: object) -> object:
    try:
        return _canon(value)
    except _BadValue as exc:
        raise UncacheableRequestError(str(exc), "$" + "".join(reversed(exc.parts))) from None
    except RecursionError:
        raise UncacheableRequestError("value is nested too deeply") from None


def _locate_unencodable(value: object, path: str = "$") -> tuple[str, str]:
    """Where in a canonical value orjson failed: a lone surrogate or an integer beyond 64 bits."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "string holds a lone surrogate (not valid UTF-8)", path
    elif isinstance(value, int) and not isinstance(value, bool):
        if not -(2**63) <= value < 2**64:
            return "integer is beyond 64 bits", path
    elif isinstance(value, dict):
        for k, v in value.items():
            found = _locate_unencodable(k, f"{path}.{k!r}") if isinstance(k, str) else None
            if found and found[0]:
                return found
            found = _locate_unencodable(v, f"{path}.{k}")
            if found[0]:
                return found
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found = _locate_unencodable(v, f"{path}[{i}]")
            if found[0]:
                return found
    return "", path


def _dumps(value: object) -> bytes:
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError as exc:  # lone surrogates, integers beyond 64 bits
        what, where = _locate_unencodable(value)
        raise UncacheableRequestError(what or f"no canonical JSON form ({exc})", where) from None


_FAST_OPTIONS: Final = (
    orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME
)


_PLAIN_TYPES: Final = frozenset({str, int, bool, type(None), dict, list})
_FAST_TYPES: Final = _PLAIN_TYPES | {float}
_MAX_FAST_DEPTH: Final = 260  # beyond orjson's own nesting limit: a deeper value never gets here
_is_float_type: Final = functools.partial(operator.is_, float)


def _needs_walk(body: dict[str, Any]) -> bool:
    """True unless every value in ``body`` is a plain str/int/bool/None/dict/list or a float the rules
    write as orjson does (finite, not integral).

    Only call it on a value orjson has serialised (so it is acyclic and at most orjson's depth deep). It
    looks at the tree one level at a time: ``gc.get_referents`` lists a level's children (a dict's values,
    plus its keys when any key is not an exact str; a list's items) and skips strings and numbers, and
    the types are sorted out by C-level ``map``, so no Python code runs per value. The per-value walk this
    replaced cost more than orjson and sha256 together on a request with ten tool schemas.
    """
    if not _CPYTHON:
        return _values_need_walk(body)
    level: list[Any] = [body]
    for _ in range(_MAX_FAST_DEPTH):
        level = gc.get_referents(*level)
        if not level:
            return False
        if _PLAIN_TYPES.issuperset(map(type, level)):  # stops at the first other type; no set built
            continue
        if not _FAST_TYPES.issuperset(map(type, level)):
            return True  # tuples, subclasses, enums ...: let the full walk decide
        floats = list(itertools.compress(level, map(_is_float_type, map(type, level))))
        if any(map(float.is_integer, floats)) or not all(map(math.isfinite, floats)):
            return True  # written as an int, or NaN/inf (orjson would write null)
    return True


# What gc.get_referents returns is CPython's object graph; elsewhere (PyPy stores a list of floats
# unboxed) it may not list every value, so other interpreters look at each value in Python.
_CPYTHON: Final = sys.implementation.name == "cpython"


def _values_need_walk(value: dict[str, Any] | list[Any]) -> bool:
    """:func:`_needs_walk` one value at a time, in Python (any interpreter; slower)."""
    items: Iterable[Any] = value.values() if isinstance(value, dict) else value
    for item in items:
        kind = type(item)
        if kind is float:
            if not math.isfinite(item) or item.is_integer():
                return True
        elif kind is dict or kind is list:
            if _values_need_walk(item):
                return True
        elif kind not in _PLAIN_TYPES:
            return True
    return False


def _fast_canonical(body: dict[str, Any]) -> bytes | None:
    """The canonical bytes straight from orjson, or None when the full walk is needed.

    orjson sorts keys and refuses non-string keys, bytes, sets, callables, out-of-range ints, cycles and
    too deep nesting. What it does differently from the rules is NaN/inf (written as null) and integral
    floats (``1.0``, not ``1``); a read-only scan of the serialised value sends any request holding one
    of those, or any type but the plain JSON ones, down the full walk, which decides exactly. Both paths
    give the same bytes for the same request (a property test holds them equal).
    """
    try:
        out = orjson.dumps(body, option=_FAST_OPTIONS)
    except (orjson.JSONEncodeError, TypeError, RecursionError):
        return None
    return None if _needs_walk(body) else out


def canonical_json(value: object) -> bytes:
    """Canonical JSON bytes of any JSON-like value (sorted keys, compact, UTF-8, ``0 == 0.0``).

    Raises:
        UncacheableRequestError: The value (or something inside it) has no canonical JSON form.
    """
    return _dumps(_canon_checked(value))
