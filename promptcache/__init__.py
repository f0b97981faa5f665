"""promptcache: one canonical cache key for an LLM response cache and a pytest record/replay harness.

Everything public is re-exported here; the modules behind it are private.
"""

from __future__ import annotations

from promptcache._cache import PromptCache as PromptCache
from promptcache._canonical import canonical_json as canonical_json
from promptcache._config import CacheConfig as CacheConfig
from promptcache._entry import Entry as Entry
from promptcache._events import Hook as Hook
from promptcache._keys import CacheKey as CacheKey
from promptcache._keys import Endpoint as Endpoint
from promptcache._keys import KeyPolicy as KeyPolicy
from promptcache._keys import generate_cache_key as generate_cache_key
from promptcache._keys import make_key as make_key
from promptcache._prices import ModelPrice as ModelPrice
from promptcache._prices import PriceTable as PriceTable
from promptcache._scope import Scope as Scope
from promptcache._stats import CacheStats as CacheStats
from promptcache.exceptions import CassetteError as CassetteError
from promptcache.exceptions import CassetteFormatError as CassetteFormatError
from promptcache.exceptions import CassetteMissError as CassetteMissError
from promptcache.exceptions import ConfigError as ConfigError
from promptcache.exceptions import EntryError as EntryError
from promptcache.exceptions import InvalidScopeError as InvalidScopeError
from promptcache.exceptions import PromptCacheError as PromptCacheError
from promptcache.exceptions import SecretLeakError as SecretLeakError
from promptcache.exceptions import StoreError as StoreError
from promptcache.exceptions import UncacheableRequestError as UncacheableRequestError
from promptcache.integrations.agent import CachedAgent as CachedAgent

__version__ = "0.1.0"

__all__ = [
    "CacheConfig",
    "CacheKey",
    "CacheStats",
    "CachedAgent",
    "CassetteError",
    "CassetteFormatError",
    "CassetteMissError",
    "ConfigError",
    "Endpoint",
    "Entry",
    "EntryError",
    "Hook",
    "InvalidScopeError",
    "KeyPolicy",
    "ModelPrice",
    "PriceTable",
    "PromptCache",
    "PromptCacheError",
    "Scope",
    "SecretLeakError",
    "StoreError",
    "UncacheableRequestError",
    "canonical_json",
    "generate_cache_key",
    "make_key",
]
