"""Cassettes: recorded LLM calls in readable, versioned YAML (safe loader only), free of secrets.

A cassette file::

    # promptcache cassette - recorded LLM responses, replayed by `pytest --promptcache=replay`.
    version: 1
    key_schema: 2             # the key schema of the recordings' keys (absent: 1, re-key with migrate)
    test: tests/test_agent.py::test_classifies
    recordings:
    - key: 3f2a...            # the production cache key's digest (schema v2)
      endpoint: chat.completions
      scope: {namespace: promptcache, agent_id: default, agent_version: '0', tenant: null}
      recorded_at: '2026-11-26T06:00:00Z'
      model: gpt-4o
      usage: {prompt_tokens: 12, completion_tokens: 5}
      request: {...}          # the canonical request, secrets scrubbed (for miss diffs)
      route: {upstream: openai, headers: {...}}   # what else selected the answer (key schema v2)
      response: {...}         # the full body; or `chunks:` for a stream
    end: 1                    # written last: the number of recordings, so a cut-off file is refused

Loading refuses anything that is not plain data: python tags, anchors and aliases (alias bombs), files
over :data:`MAX_CASSETTE_BYTES`, deep nesting. Every error names the file. Writing is atomic
(temp file + rename) and refuses to write a file in which a credential pattern survived scrubbing.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Final

import yaml

from promptcache._keys import SCHEMA_VERSION as KEY_SCHEMA
from promptcache.exceptions import CassetteFormatError, SecretLeakError

__all__ = [
    "CASSETTE_FORMAT",
    "MAX_CASSETTE_BYTES",
    "dump_cassette",
    "find_secret",
    "key_schema_of",
    "load_cassette",
    "old_schema_message",
    "parse_cassette",
    "request_secrets",
    "save_cassette",
    "scrub",
    "scrub_joined",
    "scrub_values",
]

CASSETTE_FORMAT: Final = 1
MAX_CASSETTE_BYTES: Final = 64 * 1024 * 1024
MAX_YAML_EVENTS: Final = 2_000_000
# Recorded cassettes hold about one YAML node per 13 bytes; a file packed with far more tiny nodes is an
# attempt to make the loader build millions of objects, refused before anything is built.
MAX_EVENTS_PER_BYTE: Final = 0.25
SCRUBBED: Final = "<scrubbed>"
HEADER: Final = (
    "# promptcache cassette - recorded LLM responses, replayed by `pytest --promptcache=replay`.\n"
    "# Edit with care: `key` must match the request; re-record with `pytest --promptcache=rewrite`.\n"
)

# Credential shapes that must never reach a file: OpenAI/Anthropic keys, bearer tokens, AWS key ids,
# Google API keys, GitHub tokens, private key blocks.
SECRET_PATTERNS: Final = (
    re.compile(r"sk-ant-[A-Za-z0-9_\-]{8,}"),
    re.compile(r"sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_\-]{16,}"),
    re.compile(r"(?i)bearer\s+[A-Za-z0-9._~+/\-]{8,}=*"),
    re.compile(r"AKIA[0-9A-Z]{16}"),
    re.compile(r"AIza[0-9A-Za-z_\-]{35}"),
    re.compile(r"gh[pousr]_[A-Za-z0-9]{30,}"),
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
)
DEFAULT_SCRUB_FIELDS: Final = frozenset(
    {"api_key", "api-key", "apikey", "authorization", "x-api-key", "password", "secret", "token"}
)

try:  # the C loader/dumper when libyaml is present: several times faster on large cassettes
    _Loader: type[yaml.SafeLoader] = yaml.CSafeLoader  # type: ignore[assignment]
    _BaseDumper: type[yaml.SafeDumper] = yaml.CSafeDumper  # type: ignore[assignment]
except AttributeError:  # pragma: no cover - depends on how PyYAML was built
    _Loader = yaml.SafeLoader
    _BaseDumper = yaml.SafeDumper


class _Dumper(_BaseDumper):  # type: ignore[misc,valid-type]
    """Safe dumper writing multi-line text as literal blocks, so prompts read like prompts."""


def _str_representer(dumper: yaml.SafeDumper, text: str) -> yaml.Node:
    # Literal blocks cannot hold trailing spaces or odd line breaks faithfully; those stay quoted.
    if (
        "\n" in text
        and len(text) > 40
        and not any(c in text for c in "\r\t\x0b\x0c\x85\u2028\u2029")
        and not any(line.endswith(" ") for line in text.split("\n"))
    ):
        return dumper.represent_scalar("tag:yaml.org,2002:str", text, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", text)


_Dumper.add_representer(str, _str_representer)


def scrub(value: Any, fields: frozenset[str] = DEFAULT_SCRUB_FIELDS) -> Any:  # noqa: ANN401 - JSON
    """A copy of ``value`` with credential patterns in strings and the values of ``fields`` replaced."""
    if isinstance(value, str):
        for pattern in SECRET_PATTERNS:
            value = pattern.sub(SCRUBBED, value)
        return value
    if isinstance(value, dict):
        return {
            k: (SCRUBBED if isinstance(k, str) and k.lower() in fields and v else scrub(v, fields))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [scrub(v, fields) for v in value]
    return value


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


def scrub_joined(value: Any) -> Any:  # noqa: ANN401 - JSON, changed in place and returned
    """Scrub credentials that only appear when the strings of ``value`` are read in order.

    A streamed answer can carry a key split over several chunks ("sk-pro" + "j-..."): each fragment
    passes :func:`scrub`, the concatenation does not. Every fragment overlapping a match is cut, and the
    first one says ``<scrubbed>``.
    """
    leaves: list[tuple[Any, Any]] = []
    _string_leaves(value, leaves)
    joined = "".join(container[k] for container, k in leaves)
    spans = sorted(m.span() for pattern in SECRET_PATTERNS for m in pattern.finditer(joined))
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


def find_secret(text: str) -> str | None:
    """The name of the first credential pattern found in ``text``, or None."""
    for pattern in SECRET_PATTERNS:
        if pattern.search(text):
            return pattern.pattern
    return None


def dump_cassette(doc: dict[str, Any]) -> str:
    """The YAML text of a cassette document (header comment included).

    ``end:`` (the number of recordings) is written last, so a file cut short anywhere is refused on load.
    """
    body = {k: v for k, v in doc.items() if k != "end"}
    body["end"] = len(doc.get("recordings") or [])
    return HEADER + yaml.dump(body, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)


def save_cassette(path: str | Path, doc: dict[str, Any]) -> None:
    """Write ``doc`` to ``path`` atomically, refusing if a credential pattern is still in the text.

    Raises:
        SecretLeakError: A credential pattern survived scrubbing; nothing is written.
    """
    path = Path(path)
    text = dump_cassette(doc)
    leaked = find_secret(text)
    if leaked is not None:
        raise SecretLeakError(f"refusing to write {path}: it would contain a credential (pattern {leaked})")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        Path(tmp).replace(path)  # atomic on POSIX: readers see the old file or the new one, never half
    except BaseException:
        with contextlib.suppress(OSError):  # cleanup only; the original error is what matters
            Path(tmp).unlink()
        raise


def _check_recording(where: str, index: int, rec: object) -> None:
    if not isinstance(rec, dict):
        raise CassetteFormatError(f"{where}: recordings[{index}] is not a mapping")
    if not isinstance(rec.get("key"), str):
        raise CassetteFormatError(f"{where}: recordings[{index}] has no string 'key'")
    if not isinstance(rec.get("endpoint"), str):
        raise CassetteFormatError(f"{where}: recordings[{index}] has no string 'endpoint'")
    if "response" not in rec and not isinstance(rec.get("chunks"), list):
        raise CassetteFormatError(f"{where}: recordings[{index}] has neither 'response' nor 'chunks'")
    status = rec.get("status", 200)
    if type(status) is not int or not 100 <= status <= 599:
        raise CassetteFormatError(f"{where}: recordings[{index}] 'status' must be an HTTP status code")
    if "chunks" in rec and not all(isinstance(c, dict) for c in rec["chunks"]):
        raise CassetteFormatError(f"{where}: recordings[{index}] 'chunks' must be a list of mappings")
    if "chunks" not in rec and not isinstance(rec.get("response"), dict | str | list):
        raise CassetteFormatError(f"{where}: recordings[{index}] 'response' must be a mapping or text")


def _check_json_shaped(doc: Any, where: str) -> None:  # noqa: ANN401
    """Refuse YAML-only values (dates, sets, binary, non-string keys): a cassette holds JSON."""
    stack: list[tuple[Any, str]] = [(doc, "$")]
    while stack:
        value, path = stack.pop()
        if isinstance(value, dict):
            for k, v in value.items():
                if not isinstance(k, str):
                    raise CassetteFormatError(f"{where}: mapping key {k!r} at {path} is not a string")
                stack.append((v, f"{path}.{k}"))
        elif isinstance(value, list):
            stack.extend((v, f"{path}[{i}]") for i, v in enumerate(value))
        elif not (value is None or isinstance(value, str | int | float)):
            raise CassetteFormatError(f"{where}: {type(value).__name__} value at {path} is not JSON data")


def _safe_load(text: str, where: str) -> Any:  # noqa: ANN401 - YAML data, checked by the caller
    """Plain YAML data with the safe loader; anchors, aliases and node floods refused before building."""
    try:
        # Before anything is built: no anchors or aliases (no alias bombs), and a bounded node count.
        budget = max(100_000, min(MAX_YAML_EVENTS, int(len(text) * MAX_EVENTS_PER_BYTE)))
        for count, event in enumerate(yaml.parse(text, Loader=_Loader)):
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                raise CassetteFormatError(f"{where}: YAML anchors/aliases are not allowed in cassettes")
            if count > budget:
                raise CassetteFormatError(f"{where}: more than {budget} YAML nodes; not a recorded cassette")
        doc = yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is yaml's (C)SafeLoader
    except yaml.YAMLError as exc:
        raise CassetteFormatError(f"{where}: not valid cassette YAML ({exc})") from None
    except RecursionError:
        raise CassetteFormatError(f"{where}: nested too deeply") from None
    return doc


def key_schema_of(doc: dict[str, Any]) -> int:
    """The key schema a cassette's recordings were keyed with (files written before v2 say nothing: 1)."""
    schema = doc.get("key_schema", 1)
    return schema if type(schema) is int else 0


def old_schema_message(doc: dict[str, Any]) -> str:
    """What to say about a cassette keyed under an older key schema: how to re-key it."""
    return (
        f"recorded under key schema v{key_schema_of(doc)}, not v{KEY_SCHEMA}: re-key it offline with "
        "`promptcache migrate PATH --upstream <alias or URL>` (responses are kept byte for byte)"
    )


def parse_cassette(text: str | bytes, where: str = "<cassette>") -> dict[str, Any]:
    """Parse and check cassette text; ``where`` names the source in every error.

    Raises:
        CassetteFormatError: Not plain YAML data of the cassette shape.
    """
    if len(text) > MAX_CASSETTE_BYTES:
        raise CassetteFormatError(f"{where}: larger than {MAX_CASSETTE_BYTES} bytes")
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CassetteFormatError(f"{where}: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    doc = _safe_load(text, where)
    if not isinstance(doc, dict):
        raise CassetteFormatError(f"{where}: a cassette is a mapping with 'version' and 'recordings'")
    _check_json_shaped(doc, where)
    written_by_us = HEADER.partition("\n")[0] in text[:4096]
    if "end" in doc or written_by_us:
        recordings = doc.get("recordings")
        if doc.get("end") != (len(recordings) if isinstance(recordings, list) else None):
            raise CassetteFormatError(f"{where}: truncated or edited ('end' does not match the recordings)")
    if doc.get("version") != CASSETTE_FORMAT:
        raise CassetteFormatError(
            f"{where}: cassette version {doc.get('version')!r} is not {CASSETTE_FORMAT}"
        )
    recordings = doc.get("recordings")
    if not isinstance(recordings, list):
        raise CassetteFormatError(f"{where}: 'recordings' must be a list")
    for index, rec in enumerate(recordings):
        _check_recording(where, index, rec)
    return doc


def load_cassette(path: str | Path) -> dict[str, Any] | None:
    """The cassette at ``path``, or None when there is no such file.

    Raises:
        CassetteFormatError: The file exists but is not a valid cassette; the message names it.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return None
    if size > MAX_CASSETTE_BYTES:
        raise CassetteFormatError(f"{path}: larger than {MAX_CASSETTE_BYTES} bytes")
    return parse_cassette(path.read_bytes(), str(path))
