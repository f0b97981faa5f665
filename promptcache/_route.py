"""The route: what besides the body selects an answer — the upstream, the query string and some headers.

Key schema v2 keys a request sent through a wrapped SDK client by its :class:`Route` as well as its body:

* the **upstream**: scheme, host, port and the path prefix before the endpoint's own path
  (``https://gw.example:443/gw/openai/v1``), so two hosts, or a gateway routing by path prefix with the same
  model name, never share answers. The official APIs have readable names (``openai``, ``anthropic``); a
  user who wants two upstreams to share entries gives both one alias (``wrap(..., upstream="openai")``);
* the **query string** (``extra_query``, Azure's ``api-version``), minus parameters shaped like credentials;
* the **headers that change the answer or the tenant**: :data:`KEY_HEADERS`, plus any the agent names
  (``wrap(..., key_headers=[...])``); organisation and project ids as fingerprints. Credentials
  (``authorization``, ``x-api-key``, ``api-key``) are never part of a key: an answer does not depend on
  which of a team's keys paid for it.

Nothing here does I/O or imports an HTTP library; :mod:`promptcache.integrations._http` reads the parts
off the SDK's request.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from promptcache.exceptions import ConfigError

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = [
    "CREDENTIAL_QUERY",
    "KEY_HEADERS",
    "KNOWN_UPSTREAMS",
    "Route",
    "check_alias",
    "check_header_names",
    "route_from_record",
    "route_of",
    "route_record",
]

KEY_HEADERS: Final = (
    "anthropic-beta",
    "anthropic-user-profile-id",
    "anthropic-version",
    "anthropic-workspace-id",
    "openai-beta",
    "openai-organization",
    "openai-project",
)
"""Headers that select the answer (API version, beta features) or the tenant (organisation, project,
workspace, user profile). The SDKs send ``workspace_id=`` and ``user_profile_id=`` as headers."""

_LIST_HEADERS: Final = frozenset(
    {"anthropic-beta", "openai-beta"}
)  # comma lists: order and repeats do not matter
_FINGERPRINTED: Final = frozenset(
    {"openai-organization", "openai-project", "anthropic-workspace-id", "anthropic-user-profile-id"}
)
"""Headers whose values are account ids: keyed, stored and shown only as a fingerprint."""

CREDENTIAL_QUERY: Final = frozenset(
    {"api-key", "api_key", "key", "token", "access_token", "sig", "signature"}
)
"""Query parameters left out of the key because they carry credentials, not a choice of answer."""

KNOWN_UPSTREAMS: Final = {
    "https://api.openai.com:443/v1": "openai",
    "https://api.anthropic.com:443/v1": "anthropic",
}
"""The official APIs' upstreams and the names their keys carry instead of the URL."""

_TOKEN: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_CREDENTIAL_HEADERS: Final = frozenset(
    {"authorization", "x-api-key", "api-key", "cookie", "proxy-authorization"}
)
_DEFAULT_PORTS: Final = {"https": 443, "http": 80}


@dataclass(frozen=True, slots=True)
class Route:
    """Where a request went and the parts of it, besides the body, that select the answer.

    Attributes:
        upstream: An alias (``openai``, or the one given to ``wrap``) or ``scheme://host:port/prefix``.
        method: The HTTP method (always ``POST`` for the cached endpoints).
        query: Sorted ``(name, value)`` pairs of the query string, credentials left out.
        headers: Sorted ``(name, value)`` pairs of the keyed headers present, names lower-case.

    .. versionadded:: 0.3.0
    """

    upstream: str
    method: str = "POST"
    query: tuple[tuple[str, str], ...] = ()
    headers: tuple[tuple[str, str], ...] = ()

    def material(self) -> dict[str, Any]:
        """The route as it joins the key material (canonical JSON sorts it)."""
        return {
            "headers": [list(pair) for pair in self.headers],
            "method": self.method,
            "query": [list(pair) for pair in self.query],
            "upstream": self.upstream,
        }

    def describe(self) -> list[str]:
        """One line per part, for ``promptcache explain`` and miss messages."""
        lines = [f"upstream: {self.upstream}", f"method: {self.method}"]
        lines += [f"query {name}: {value}" for name, value in self.query]
        lines += [f"header {name}: {value}" for name, value in self.headers]
        return lines


def route_record(route: Route) -> dict[str, Any]:
    """The route as a cassette keeps it (readable YAML; :func:`route_from_record` reads it back)."""
    out: dict[str, Any] = {"upstream": route.upstream}
    if route.method != "POST":
        out["method"] = route.method
    if route.query:  # a mapping reads best; a name given twice keeps every pair
        unique = len({name for name, _ in route.query}) == len(route.query)
        out["query"] = dict(route.query) if unique else [list(pair) for pair in route.query]
    if route.headers:
        out["headers"] = dict(route.headers)
    return out


def route_from_record(record: object, where: str = "route") -> Route:
    """A :class:`Route` from its cassette form.

    Raises:
        ConfigError: Not the shape :func:`route_record` writes.
    """
    if not isinstance(record, dict) or not isinstance(record.get("upstream"), str):
        raise ConfigError(f"{where}: a route is a mapping with a string 'upstream'")
    parts: dict[str, tuple[tuple[str, str], ...]] = {}
    for name in ("query", "headers"):
        value = record.get(name) or {}
        pairs = list(value.items()) if isinstance(value, dict) else value
        if not isinstance(pairs, list) or not all(
            isinstance(p, list | tuple) and len(p) == 2 and all(isinstance(x, str) for x in p) for p in pairs
        ):
            raise ConfigError(f"{where}: '{name}' must map names to strings")
        parts[name] = tuple(sorted((str(k), str(v)) for k, v in pairs))
    return Route(upstream=record["upstream"], method=str(record.get("method", "POST")), **parts)


def check_alias(alias: object) -> str | None:
    """Validate an upstream alias given by a user (None means "the upstream's URL").

    Raises:
        ConfigError: Not a non-empty string without whitespace.
    """
    if alias is None:
        return None
    if not isinstance(alias, str) or not alias or alias != alias.strip() or any(c.isspace() for c in alias):
        raise ConfigError(f"upstream alias must be a non-empty string without whitespace, got {alias!r}")
    return alias


def check_header_names(names: Iterable[str]) -> tuple[str, ...]:
    """Validate extra header names to key by; lower-cased and sorted.

    Raises:
        ConfigError: ``names`` is a single string, or a name is not a valid HTTP header name, or is a
            credential header (keys never depend on credentials).
    """
    if isinstance(names, str | bytes):
        raise ConfigError(f"key_headers must be a list of header names, not the string {names!r}")
    out: set[str] = set()
    for name in names:
        if not isinstance(name, str) or not _TOKEN.fullmatch(name):
            raise ConfigError(f"key_headers: {name!r} is not an HTTP header name")
        if name.lower() in _CREDENTIAL_HEADERS:
            raise ConfigError(f"key_headers: {name!r} carries a credential; keys never include credentials")
        out.add(name.lower())
    return tuple(sorted(out))


def _header_value(name: str, values: list[str]) -> str:
    if name in _LIST_HEADERS:
        items = {item.strip() for value in values for item in value.split(",")}
        return ",".join(sorted(item for item in items if item))
    joined = ",".join(value.strip() for value in values)
    if name in _FINGERPRINTED:
        # An organisation or project id is not a secret, but an entry, a cassette or `explain` has no need
        # to show it: the key needs only to tell two apart.
        return "sha256:" + hashlib.sha256(joined.encode("utf-8")).hexdigest()[:24]
    return joined


def route_of(  # noqa: PLR0913 - the parts of a URL and its headers, read off whatever HTTP library sent it
    *,
    method: str,
    scheme: str,
    host: str,
    port: int | None,
    prefix: str,
    query: Iterable[tuple[str, str]],
    headers: Iterable[tuple[str, str]],
    alias: str | None = None,
    extra_headers: Iterable[str] = (),
) -> Route:
    """The route of one request, normalised: default ports filled in, query sorted, header lists sorted."""
    scheme = scheme.lower()
    full_port = port if port is not None else _DEFAULT_PORTS.get(scheme, 0)
    url = f"{scheme}://{host.lower()}:{full_port}{prefix.rstrip('/')}"
    wanted = set(KEY_HEADERS) | {name.lower() for name in extra_headers}
    found: dict[str, list[str]] = {}
    for name, value in headers:
        lower = name.lower()
        if lower in wanted:
            found.setdefault(lower, []).append(value)
    return Route(
        upstream=alias if alias is not None else KNOWN_UPSTREAMS.get(url, url),
        method=method.upper(),
        query=tuple(sorted((k, v) for k, v in query if k.lower() not in CREDENTIAL_QUERY)),
        headers=tuple(sorted((name, _header_value(name, values)) for name, values in found.items())),
    )
