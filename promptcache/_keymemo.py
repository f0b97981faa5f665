"""Keys memoised per cache: agents repeat requests, and the hit path should not rebuild the same key."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Final

import orjson

from promptcache._keys import CacheKey, Endpoint, KeyPolicy, make_key

if TYPE_CHECKING:
    from collections.abc import Mapping

    from promptcache._route import Route
    from promptcache._scope import Scope

__all__ = ["KeyMemo"]

_MEMO_OPTIONS: Final = (
    orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME
)
MAX_REQUEST_BYTES: Final = 64 * 1024
MAX_TOTAL_BYTES: Final = 16 * 1024 * 1024
MAX_KEYS: Final = 4096


class KeyMemo:
    """Builds keys in one namespace, remembering them by the request's JSON bytes and scope.

    A request whose JSON holds ``null`` is never memoised, because orjson writes NaN as ``null`` too and
    NaN must stay uncacheable. Bounded by count and by the bytes of the requests it holds.
    """

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self._keys: OrderedDict[tuple[Any, ...], CacheKey] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._keys)

    def key(
        self,
        request: Mapping[str, Any],
        scope: Scope,
        endpoint: Endpoint | str,
        policy: KeyPolicy,
        route: Route | None = None,
    ) -> CacheKey:
        """:func:`~promptcache.make_key` of ``request`` in ``scope`` (its ``policy`` already resolved)."""
        memo: tuple[Any, ...] | None = None
        if type(request) is dict:
            try:
                raw = orjson.dumps(request, option=_MEMO_OPTIONS)
            except (orjson.JSONEncodeError, TypeError):
                raw = b"null"
            if len(raw) <= MAX_REQUEST_BYTES and b"null" not in raw:
                memo = (
                    raw,
                    scope.agent_id,
                    scope.agent_version,
                    scope.tenant,
                    scope.cache_server_state,
                    endpoint,
                    policy,
                    route,
                )
                found = self._keys.get(memo)
                if found is not None:
                    try:  # noqa: SIM105 - contextlib.suppress costs a context manager per hit
                        self._keys.move_to_end(memo)
                    except KeyError:  # another thread has just evicted it: still the right key
                        pass
                    return found
        key = make_key(
            request,
            namespace=self.namespace,
            agent_id=scope.agent_id,
            agent_version=scope.agent_version,
            tenant=scope.tenant,
            endpoint=endpoint,
            policy=policy,
            route=route,
            server_state=scope.cache_server_state,
        )
        if memo is not None:
            with self._lock:  # sync clients key on their own threads: the byte count must stay true
                if memo not in self._keys:
                    self._bytes += len(memo[0])
                self._keys[memo] = key
                while self._keys and (self._bytes > MAX_TOTAL_BYTES or len(self._keys) > MAX_KEYS):
                    old, _ = self._keys.popitem(last=False)
                    self._bytes -= len(old[0])
        return key
