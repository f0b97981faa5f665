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
      response: {...}         # the full body; or `stream:` for a stream (below)
    end: 1                    # written last: the number of recordings, so a cut-off file is refused

A streamed answer is kept compact (:func:`promptcache._convert.compact_stream`)::

      stream:
        response: {...}       # the final body assembled from the chunks: the answer, readable
        pieces: [7, 7, 7, 4]  # the lengths of the text deltas, so replay cuts the text where it came
        include_usage: true   # (chat) recorded with stream_options.include_usage
        inputs: {...}         # (Anthropic) tool input JSON as streamed, where not json.dumps' spelling
        patches:              # only what the stream synthesised from the above does not reproduce:
          '3':                # by event: [path, value] sets a field, [path] removes one
          - [data/obfuscation, x9Lq]

Older cassettes keep every event as ``chunks:`` (still read; :func:`recorded_events` reads both).

Loading refuses anything that is not plain data: python tags, anchors and aliases (alias bombs), files
over :data:`MAX_CASSETTE_BYTES`, deep nesting; and what ``promptcache verify`` reports (duplicate YAML
keys, a key that does not match its request, a credential; ``_cassette_checks``), with the same message.
Every error names the file. Writing is atomic (temp file + rename) and refuses to write a file in which a
credential pattern survived scrubbing (values a test keeps on purpose, ``allowed_secrets``, excepted).
Secret detection and scrubbing live in ``_secrets``.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any, Final

import yaml

from promptcache._cassette_checks import (
    allowed_secrets,
    cassette_problems,
    duplicate_keys,
    key_schema_of,
    old_schema_message,
)
from promptcache._convert import expand_stream
from promptcache._keys import Endpoint
from promptcache._secrets import (
    DEFAULT_SCRUB_FIELDS,
    SCRUBBED,
    SECRET_PATTERNS,
    find_secret,
    request_secrets,
    scrub,
    scrub_joined,
    scrub_request,
    scrub_values,
)
from promptcache.exceptions import CassetteFormatError, SecretLeakError

__all__ = [
    "CASSETTE_FORMAT",
    "DEFAULT_SCRUB_FIELDS",
    "MAX_CASSETTE_BYTES",
    "SCRUBBED",
    "SECRET_PATTERNS",
    "allowed_secrets",
    "dump_cassette",
    "find_secret",
    "inspect_cassette",
    "is_stream_recording",
    "key_schema_of",
    "load_cassette",
    "old_schema_message",
    "parse_cassette",
    "recorded_events",
    "refusal",
    "request_secrets",
    "save_cassette",
    "scrub",
    "scrub_joined",
    "scrub_request",
    "scrub_values",
]

CASSETTE_FORMAT: Final = 1
MAX_CASSETTE_BYTES: Final = 64 * 1024 * 1024
MAX_YAML_EVENTS: Final = 2_000_000
# Recorded cassettes hold about one YAML node per 13 bytes; a file packed with far more tiny nodes is an
# attempt to make the loader build millions of objects, refused before anything is built.
MAX_EVENTS_PER_BYTE: Final = 0.25
HEADER: Final = (
    "# promptcache cassette - recorded LLM responses, replayed by `pytest --promptcache=replay`.\n"
    "# Edit with care: `key` must match the request; re-record with `pytest --promptcache=rewrite`.\n"
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


def _list_representer(dumper: yaml.SafeDumper, items: list[Any]) -> yaml.Node:
    # Short lists of numbers, nulls or short words (stream piece lengths, patches) on one line.
    flow = len(items) <= 64 and all(
        i is None or isinstance(i, int | float) or (isinstance(i, str) and len(i) <= 40 and i.isprintable())
        for i in items
    )
    return dumper.represent_sequence("tag:yaml.org,2002:seq", items, flow_style=flow or None)


_Dumper.add_representer(list, _list_representer)


def is_stream_recording(rec: dict[str, Any]) -> bool:
    """Whether a recording holds a streamed answer (``stream:``, or the older ``chunks:``)."""
    return "stream" in rec or "chunks" in rec


def recorded_events(rec: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The SSE events of a stream recording (the compact ``stream:`` form expanded); None for a body."""
    if "chunks" in rec:
        return list(rec["chunks"])
    compact = rec.get("stream")
    if not isinstance(compact, dict):
        return None
    try:
        return expand_stream(Endpoint(str(rec.get("endpoint"))), compact)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError):
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

    Values listed in a recording's ``allowed_secrets`` (kept on purpose) do not count.

    Raises:
        SecretLeakError: A credential pattern survived scrubbing; nothing is written.
    """
    path = Path(path)
    text = dump_cassette(doc)
    leaked = find_secret(text, allowed_secrets(doc))
    if leaked is not None:
        raise SecretLeakError(refusal(str(path), leaked))
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


def refusal(where: str, leaked: str) -> str:
    """The message of a refused write: what was found and how to keep a value on purpose."""
    return (
        f"refusing to write {where}: it would contain a credential ({leaked}); if the value is not a "
        "secret, keep it with @pytest.mark.promptcache(allow_secrets=[...])"
    )


def _check_recording(where: str, index: int, rec: object) -> None:
    if not isinstance(rec, dict):
        raise CassetteFormatError(f"{where}: recordings[{index}] is not a mapping")
    if not isinstance(rec.get("key"), str):
        raise CassetteFormatError(f"{where}: recordings[{index}] has no string 'key'")
    if not isinstance(rec.get("endpoint"), str):
        raise CassetteFormatError(f"{where}: recordings[{index}] has no string 'endpoint'")
    if "stream" in rec and recorded_events(rec) is None:
        raise CassetteFormatError(
            f"{where}: recordings[{index}] 'stream' is malformed"
            " (its response, pieces or patches make no stream)"
        )
    if "response" not in rec and not is_stream_recording(rec):
        raise CassetteFormatError(f"{where}: recordings[{index}] has neither 'response' nor 'stream'")
    if "chunks" in rec and not isinstance(rec.get("chunks"), list):
        raise CassetteFormatError(f"{where}: recordings[{index}] 'chunks' must be a list of mappings")
    status = rec.get("status", 200)
    if type(status) is not int or not 100 <= status <= 599:
        raise CassetteFormatError(f"{where}: recordings[{index}] 'status' must be an HTTP status code")
    if "chunks" in rec and not all(isinstance(c, dict) for c in rec["chunks"]):
        raise CassetteFormatError(f"{where}: recordings[{index}] 'chunks' must be a list of mappings")
    if not is_stream_recording(rec) and not isinstance(rec.get("response"), dict | str | list):
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


def _safe_load(text: str, where: str) -> tuple[Any, list[str]]:
    """Plain YAML data with the safe loader, and its duplicate mapping keys; anchors, aliases and node
    floods refused before building."""
    try:
        # Before anything is built: no anchors or aliases (no alias bombs), and a bounded node count.
        budget = max(100_000, min(MAX_YAML_EVENTS, int(len(text) * MAX_EVENTS_PER_BYTE)))
        for count, event in enumerate(yaml.parse(text, Loader=_Loader)):
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                raise CassetteFormatError(f"{where}: YAML anchors/aliases are not allowed in cassettes")
            if count > budget:
                raise CassetteFormatError(f"{where}: more than {budget} YAML nodes; not a recorded cassette")
        # One parse: the node tree is checked for keys written twice (which building would hide by
        # keeping the last), then built.
        loader = _Loader(text)
        try:
            node = loader.get_single_node()
            duplicates = duplicate_keys(node) if node is not None else []
            doc = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        raise CassetteFormatError(f"{where}: not valid cassette YAML ({exc})") from None
    except RecursionError:
        raise CassetteFormatError(f"{where}: nested too deeply") from None
    return doc, duplicates


def inspect_cassette(text: str | bytes, where: str = "<cassette>") -> tuple[dict[str, Any], list[str]]:
    """Parse cassette text and list its problems (see ``_cassette_checks``), each naming ``where``.

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
    doc, duplicates = _safe_load(text, where)
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
    return doc, cassette_problems(doc, text, where, duplicates)


def parse_cassette(text: str | bytes, where: str = "<cassette>") -> dict[str, Any]:
    """Parse and check cassette text; ``where`` names the source in every error.

    The one loader of replay, ``import`` and ``verify``: what ``promptcache verify`` reports as a problem
    is refused here, with the same message (several problems: one per line).

    Raises:
        CassetteFormatError: Not plain YAML data of the cassette shape, or a problem ``verify`` reports.
    """
    doc, problems = inspect_cassette(text, where)
    if problems:
        raise CassetteFormatError("\n".join(problems))
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
