"""Secret detection and scrubbing for cassettes: key-shaped patterns that leave prose alone.

Two rules, so that a replay returns what the live call returned:

* **Requests** (what the code under test sent) are scrubbed by pattern and by field name: a key pasted
  into a prompt, an ``api_key`` field. Every value cut from a request is remembered.
* **Responses** (what the provider answered) are never scrubbed by pattern. Only the exact credentials
  that went out with the request are cut from them: its sensitive headers, cookies and query values
  (:func:`request_secrets`) and the values cut from its body. A provider that echoes a key back gets it
  cut; an answer that merely talks about "risk-management" or "bearer securities" is stored as it came.

The patterns are anchored and key-shaped (a prefix at a word start, then a long token with a digit), so
"risk-management-framework" and "a bearer of bad news" are not keys. The scan that refuses to write a file
(:func:`find_secret`) uses the same patterns; values a test keeps on purpose are passed as ``allowed``.
"""

from __future__ import annotations

import re
from typing import Any, Final

__all__ = [
    "DEFAULT_SCRUB_FIELDS",
    "SCRUBBED",
    "SECRET_KINDS",
    "SECRET_PATTERNS",
    "SENSITIVE_HEADERS",
    "find_secret",
    "request_secrets",
    "scrub",
    "scrub_joined",
    "scrub_request",
    "scrub_values",
]

SCRUBBED: Final = "<scrubbed>"

_KEYCHAR: Final = r"[A-Za-z0-9_\-]"
_HAS_DIGIT: Final = rf"(?={_KEYCHAR}*[0-9])"
_END: Final = rf"(?!{_KEYCHAR})"
_BEARER_CHAR: Final = r"[A-Za-z0-9._~+/\-]"


def _starts_word(width: int) -> str:
    """After a ``width``-character literal prefix: the prefix starts a word ("risk-..." holds no "sk-").

    Placed after the literal, not before it, so the regex engine still scans for the literal quickly.
    """
    return rf"(?<!{_KEYCHAR}.{{{width}}})"


# Credential shapes that must never reach a file. Each is anchored at a word start and needs a token that
# looks generated (long, with a digit; a JWT; a fixed-length id), so ordinary words never match.
SECRET_PATTERNS: Final = (
    re.compile(rf"sk-ant-{_starts_word(7)}{_HAS_DIGIT}{_KEYCHAR}{{8,}}"),  # Anthropic
    re.compile(rf"sk-{_starts_word(3)}(?:proj-|svcacct-|admin-)?{_HAS_DIGIT}{_KEYCHAR}{{16,}}"),  # OpenAI
    re.compile(
        r"(?i:bearer)(?<![A-Za-z0-9].{6})\s+(?:"
        r"eyJ[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]*"  # a JWT
        rf"|(?={_BEARER_CHAR}*[0-9])"  # or an opaque token: a digit, and mixed case or no hyphen
        rf"(?:(?={_BEARER_CHAR}*[A-Z])|(?![A-Za-z0-9._~+/]*-)){_BEARER_CHAR}{{16,}}=*)"
    ),
    re.compile(rf"(?:AKIA|ASIA){_starts_word(4)}[0-9A-Z]{{16}}{_END}"),  # AWS access key id
    re.compile(rf"AIza{_starts_word(4)}[0-9A-Za-z_\-]{{35}}{_END}"),  # Google API key
    re.compile(  # GitHub
        rf"(?:gh[pousr]_{_starts_word(4)}[A-Za-z0-9]{{30,}}|github_pat_{_starts_word(11)}[A-Za-z0-9_]{{22,}})"
    ),
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
)
SECRET_KINDS: Final = (
    "an Anthropic key (sk-ant-...)",
    "an OpenAI key (sk-...)",
    "a bearer token",
    "an AWS access key id",
    "a Google API key",
    "a GitHub token",
    "a private key block",
)
DEFAULT_SCRUB_FIELDS: Final = frozenset(
    {"api_key", "api-key", "apikey", "authorization", "x-api-key", "password", "secret", "token"}
)
# Request headers whose values are credentials or identify an account; their exact values never reach a
# cassette, wherever a provider echoes them.
SENSITIVE_HEADERS: Final = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "api-key",
        "x-api-key",
        "x-goog-api-key",
        "openai-organization",
        "openai-project",
        "cookie",
    }
)
_MIN_SECRET_LENGTH: Final = 8  # shorter values would cut ordinary words out of recorded text


def _masked(text: str, allowed: frozenset[str]) -> str:
    for value in sorted(allowed, key=len, reverse=True):
        text = text.replace(value, "")
    return text


def _cut_patterns(text: str, allowed: frozenset[str], found: set[str] | None) -> str:
    def cut(match: re.Match[str]) -> str:
        value = match.group(0)
        if value in allowed:
            return value
        if found is not None:
            found.add(value)
            parts = value.split(None, 1)
            if len(parts) == 2 and parts[0].lower() == "bearer":  # an answer may echo the bare token
                found.add(parts[1])
        return SCRUBBED

    for pattern in SECRET_PATTERNS:
        text = pattern.sub(cut, text)
    return text


def _string_values(value: Any, out: set[str]) -> None:  # noqa: ANN401 - JSON
    if isinstance(value, str):
        out.add(value)
    elif isinstance(value, dict):
        for v in value.values():
            _string_values(v, out)
    elif isinstance(value, list):
        for v in value:
            _string_values(v, out)


def _scrub(value: Any, fields: frozenset[str], allowed: frozenset[str], found: set[str] | None) -> Any:  # noqa: ANN401
    if isinstance(value, str):
        return _cut_patterns(value, allowed, found)
    if isinstance(value, dict):
        out: dict[Any, Any] = {}
        for k, v in value.items():
            # A named field's value is replaced, unless it is an object (a tool's JSON schema declaring a
            # "password" parameter is no secret itself): that is scrubbed within.
            named = isinstance(k, str) and k.lower() in fields and not isinstance(v, dict)
            if named and v and (isinstance(v, list) or v not in allowed):
                if found is not None:
                    _string_values(v, found)
                out[k] = SCRUBBED
            else:
                out[k] = _scrub(v, fields, allowed, found)
        return out
    if isinstance(value, list):
        return [_scrub(v, fields, allowed, found) for v in value]
    return value


def scrub(
    value: Any,  # noqa: ANN401 - JSON
    fields: frozenset[str] = DEFAULT_SCRUB_FIELDS,
    *,
    allowed: frozenset[str] = frozenset(),
) -> Any:  # noqa: ANN401
    """A copy of ``value`` with credential patterns in strings and the values of ``fields`` replaced.

    For requests (and exports): never apply it to a recorded answer, whose text it could change.
    """
    return _scrub(value, fields, allowed, None)


def scrub_request(
    value: Any,  # noqa: ANN401 - JSON
    fields: frozenset[str] = DEFAULT_SCRUB_FIELDS,
    *,
    allowed: frozenset[str] = frozenset(),
) -> tuple[Any, frozenset[str]]:
    """:func:`scrub` of a request, and the exact values it cut (to cut them from the answer as well)."""
    found: set[str] = set()
    scrubbed = _scrub(value, fields, allowed, found)
    return scrubbed, frozenset(v for v in found if len(v) >= _MIN_SECRET_LENGTH)


# The fields in which streamed text arrives piece by piece (OpenAI chat and Responses, Anthropic).
_STREAMED_TEXT_FIELDS: Final = frozenset({"content", "text", "delta", "arguments", "partial_json", "refusal"})


def _string_leaves(value: Any, out: list[tuple[Any, Any]]) -> None:  # noqa: ANN401
    """(container, key) of every streamed-text string in ``value``, in document order."""
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for k, v in items:
        if isinstance(v, str):
            if k in _STREAMED_TEXT_FIELDS:
                out.append((value, k))
        else:
            _string_leaves(v, out)


def scrub_joined(value: Any, secrets: frozenset[str] | None = None) -> Any:  # noqa: ANN401 - JSON, changed in place
    """Cut credentials that only appear when the streamed strings of ``value`` are read in order.

    A streamed answer can carry a key split over several chunks ("sk-pro" + "j-..."): each fragment
    passes a per-string check, the concatenation does not. Every fragment overlapping a match is cut, and
    the first one says ``<scrubbed>``. ``secrets``: the exact values to cut (a recorded answer); None cuts
    every credential pattern instead.
    """
    leaves: list[tuple[Any, Any]] = []
    _string_leaves(value, leaves)
    joined = "".join(container[k] for container, k in leaves)
    if secrets is None:
        patterns: tuple[re.Pattern[str], ...] = SECRET_PATTERNS
    elif secrets:
        patterns = (re.compile("|".join(re.escape(s) for s in sorted(secrets, key=len, reverse=True))),)
    else:
        return value
    spans = sorted(m.span() for pattern in patterns for m in pattern.finditer(joined))
    if not spans:
        return value
    offset = 0
    for container, k in leaves:
        text = container[k]
        start, end = offset, offset + len(text)
        offset = end
        pieces, cursor = [], start
        for a, b in spans:
            if b <= start or a >= end:
                continue
            pieces.append(text[cursor - start : max(a, start) - start])
            if a >= start:
                pieces.append(SCRUBBED)
            cursor = min(b, end)
        if pieces:
            container[k] = "".join(pieces) + text[cursor - start :]
    return value


def request_secrets(request: Any) -> frozenset[str]:  # noqa: ANN401 - an httpx or httpx2 Request
    """The exact credential values one request carries: sensitive headers, cookies, query parameters."""
    found: set[str] = set()
    for name, value in request.headers.items():
        if name.lower() not in SENSITIVE_HEADERS:
            continue
        found.add(value)
        scheme, _, token = value.partition(" ")
        if token and scheme.lower() in {"bearer", "basic", "token"}:
            found.add(token)
        if name.lower() == "cookie":
            found.update(part.partition("=")[2].strip() for part in value.split(";"))
    found.update(v for _, v in request.url.params.multi_items())
    return frozenset(v for v in found if len(v) >= _MIN_SECRET_LENGTH)


def scrub_values(value: Any, secrets: frozenset[str]) -> Any:  # noqa: ANN401 - JSON
    """A copy of ``value`` with every occurrence of the given exact strings replaced, keys included."""
    ordered = sorted(secrets, key=len, reverse=True)  # longest first: "Bearer x" before "x"

    def cut(text: str) -> str:
        for secret in ordered:
            if secret in text:
                text = text.replace(secret, SCRUBBED)
        return text

    def walk(v: Any) -> Any:  # noqa: ANN401
        if isinstance(v, str):
            return cut(v)
        if isinstance(v, dict):
            return {cut(k) if isinstance(k, str) else k: walk(x) for k, x in v.items()}
        if isinstance(v, list):
            return [walk(x) for x in v]
        return v

    return walk(value)


def find_secret(text: str, allowed: frozenset[str] = frozenset()) -> str | None:
    """What the first credential pattern found in ``text`` matches (e.g. "an OpenAI key"), or None.

    ``allowed``: values kept on purpose (a test's ``allow_secrets``); they do not count.
    """
    if allowed:
        text = _masked(text, allowed)
    for pattern, kind in zip(SECRET_PATTERNS, SECRET_KINDS, strict=True):
        if pattern.search(text):
            return kind
    return None
