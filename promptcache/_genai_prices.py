"""Prices from ``genai-prices`` (pydantic's maintained price data), when that package is installed.

:class:`~promptcache.PriceTable` asks here for a model its own table does not know: the dated table (and
a caller's own figures) stay the override, ``genai-prices`` fills in the rest. Its bundled snapshot is
used as installed; nothing here fetches newer data over the network (``genai_prices.UpdatePrices`` is the
caller's choice). Tiered prices (long-context rates) are applied by ``genai-prices`` itself, so the cost of
a call is asked for whole, never as a per-million rate.
"""

from __future__ import annotations

import importlib
import importlib.util
import threading
from typing import Any, Final

__all__ = ["available", "cost", "version"]

_UNKNOWN_LIMIT: Final = 4096  # model names come from requests: keep the memo of unknown ones bounded
_unknown: set[str] = set()
_lock = threading.Lock()


def _module() -> Any | None:  # noqa: ANN401 - an optional module
    try:
        return importlib.import_module("genai_prices")
    except ImportError:
        return None


def available() -> bool:
    """True when ``genai-prices`` is installed (found, not imported: its data loads on first use)."""
    try:
        return importlib.util.find_spec("genai_prices") is not None
    except (ImportError, ValueError):  # a module hidden as None in sys.modules, or a broken spec
        return False


def version() -> str | None:
    """The installed ``genai-prices`` version (its data's age), or None."""
    module = _module()
    return None if module is None else str(module.__version__)


def cost(model: str, input_tokens: int, output_tokens: int) -> float | None:
    """Dollars for the tokens by ``genai-prices``, or None (not installed, or it knows no such model)."""
    module = _module()
    if module is None or model in _unknown:
        return None
    usage = module.Usage(input_tokens=input_tokens, output_tokens=output_tokens)
    for ref in dict.fromkeys((model, model.rsplit("/", 1)[-1])):  # "openai/gpt-4o" is asked as "gpt-4o" too
        try:
            return float(module.calc_price(usage, ref).total_price)
        except LookupError:
            continue
    with _lock:
        if len(_unknown) < _UNKNOWN_LIMIT:
            _unknown.add(model)
    return None
