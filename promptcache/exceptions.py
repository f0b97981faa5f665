"""Every error promptcache raises on purpose.

The tree::

    PromptCacheError                      base of everything below
    ├── ConfigError (ValueError)          a bad URL, option or constructor argument
    ├── InvalidScopeError (ValueError)    an empty, non-string or unencodable namespace/agent/version/tenant
    ├── UncacheableRequestError (TypeError)
    │                                     a request value with no canonical JSON form (NaN, bytes, a set,
    │                                     a callable, a class, a non-string dict key, a lone surrogate);
    │                                     the cache turns it into a counted bypass, never a failed call
    ├── EntryError (ValueError)           a stored value that is not a valid entry for the key it was
    │                                     found under (corrupt, foreign, wrong version, wrong scope);
    │                                     the cache treats it as a counted miss
    ├── StoreError                        a store operation failed where the caller must know
    │                                     (invalidation); lookups and writes fail open instead
    └── CassetteError                     record/replay problems
        ├── CassetteFormatError (ValueError)
        │                                 a cassette file that does not parse or has the wrong shape
        ├── CassetteMissError (LookupError)
        │                                 replay found no recording for a request
        └── SecretLeakError               a cassette about to be written still holds a credential

Subclasses also inherit the builtin a caller would naturally catch, so ``except ValueError`` around a
constructor still works. Errors from redis-py, sqlite3 or YAML are wrapped with ``raise ... from exc``.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

__all__ = [
    "CassetteError",
    "CassetteFormatError",
    "CassetteMissError",
    "ConfigError",
    "EntryError",
    "InvalidScopeError",
    "PromptCacheError",
    "SecretLeakError",
    "ServerStateError",
    "StoreError",
    "UncacheableRequestError",
]


class PromptCacheError(Exception):
    """Base class of every error promptcache raises on purpose."""


class ConfigError(PromptCacheError, ValueError):
    """A URL, option or constructor argument is not valid; the message names it."""


class InvalidScopeError(PromptCacheError, ValueError):
    """A namespace, agent id, agent version or tenant cannot be used as part of a key."""


class UncacheableRequestError(PromptCacheError, TypeError):
    """A request holds a value with no canonical JSON form; ``path`` says where.

    Args:
        message: What was wrong.
        path: A JSONPath-like location of the offending value, e.g. ``$.messages[2].content``.
    """

    def __init__(self, message: str, path: str = "$") -> None:
        super().__init__(f"{message} at {path}")
        self.path = path


class ServerStateError(UncacheableRequestError):
    """A request refers to mutable provider state (a conversation, an unversioned prompt, a container...).

    The same request can get another answer tomorrow, so it is not keyed: the cache sends it upstream
    uncached and counts it (``server_state`` in stats) unless the scope opts in with
    ``cache_server_state=True``. ``reason`` names the field.

    .. versionadded:: 0.3.0
    """

    def __init__(self, reason: str) -> None:
        super().__init__(f"refers to mutable server-side state ({reason})", "$")
        self.reason = reason


class EntryError(PromptCacheError, ValueError):
    """A stored value is not a valid entry for the key it was found under."""


class StoreError(PromptCacheError):
    """A store operation failed where the caller must be told (for example during invalidation)."""


class CassetteError(PromptCacheError):
    """Base class of record/replay errors."""


class CassetteFormatError(CassetteError, ValueError):
    """A cassette file does not parse, or does not have the cassette shape; the message names the file."""


class CassetteMissError(CassetteError, LookupError):
    """Replay found no recording for a request."""


class SecretLeakError(CassetteError):
    """A cassette about to be written still holds something that looks like a credential."""
