"""A dated, overridable price table that turns token counts into money.

Prices are list prices in US dollars per million tokens, for input (prompt) and output (completion)
tokens. They change: the table carries the date it was compiled (:data:`PRICES_AS_OF`), and every
:class:`PriceTable` can be given its own figures (a negotiated rate, a model the table does not know).
An unknown model never raises: its cost is ``None`` and callers count it as unpriced.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Final

from promptcache import _genai_prices

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["DEFAULT_PRICES", "PRICES_AS_OF", "ModelPrice", "PriceTable"]

PRICES_AS_OF: Final = "2026-11-26"
"""When :data:`DEFAULT_PRICES` was compiled from the providers' published list prices (standard tier,
no batch or prompt-caching discounts). Verify them before you bill anyone by them."""


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """What one model costs, in US dollars per million tokens.

    .. versionadded:: 0.1.0
    """

    input: float
    output: float

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        """The price of ``input_tokens`` prompt tokens and ``output_tokens`` completion tokens."""
        return (input_tokens * self.input + output_tokens * self.output) / 1_000_000


def _p(input_price: float, output_price: float) -> ModelPrice:
    return ModelPrice(input_price, output_price)


DEFAULT_PRICES: Final[Mapping[str, ModelPrice]] = MappingProxyType(
    {
        # OpenAI
        "gpt-5": _p(1.25, 10.00),
        "gpt-5.1": _p(1.25, 10.00),
        "gpt-5-mini": _p(0.25, 2.00),
        "gpt-5-nano": _p(0.05, 0.40),
        "gpt-4.1": _p(2.00, 8.00),
        "gpt-4.1-mini": _p(0.40, 1.60),
        "gpt-4.1-nano": _p(0.10, 0.40),
        "gpt-4o": _p(2.50, 10.00),
        "gpt-4o-mini": _p(0.15, 0.60),
        "gpt-4-turbo": _p(10.00, 30.00),
        "gpt-3.5-turbo": _p(0.50, 1.50),
        "o1": _p(15.00, 60.00),
        "o3": _p(2.00, 8.00),
        "o3-mini": _p(1.10, 4.40),
        "o4-mini": _p(1.10, 4.40),
        "text-embedding-3-small": _p(0.02, 0.0),
        "text-embedding-3-large": _p(0.13, 0.0),
        # Anthropic
        "claude-opus-4-6": _p(5.00, 25.00),
        "claude-opus-4-5": _p(5.00, 25.00),
        "claude-opus-4-1": _p(15.00, 75.00),
        "claude-opus-4": _p(15.00, 75.00),
        "claude-sonnet-4-6": _p(3.00, 15.00),
        "claude-sonnet-4-5": _p(3.00, 15.00),
        "claude-sonnet-4": _p(3.00, 15.00),
        "claude-3-7-sonnet": _p(3.00, 15.00),
        "claude-3-5-sonnet": _p(3.00, 15.00),
        "claude-haiku-4-5": _p(1.00, 5.00),
        "claude-3-5-haiku": _p(0.80, 4.00),
        "claude-3-haiku": _p(0.25, 1.25),
    }
)
"""Per-million-token list prices as of :data:`PRICES_AS_OF`. Dated snapshots (``gpt-4o-2024-08-06``,
``claude-sonnet-4-5-20250929``) resolve to their family by the longest ``-``-separated prefix."""


class PriceTable:
    """Model name to :class:`ModelPrice`, with the defaults underneath unless told otherwise.

    Args:
        prices: Prices to add or override, as :class:`ModelPrice` or ``(input, output)`` pairs in dollars
            per million tokens. Names are matched case-insensitively.
        include_defaults: Start from :data:`DEFAULT_PRICES` (the default) or from nothing.
        as_of: The date your figures were taken; defaults to :data:`PRICES_AS_OF`.
        genai_prices: Price the models this table does not know with ``genai-prices``
            (``promptcache[prices]``): None (the default) does when it is installed, False never. The table
            stays the override: a model it knows is priced by it.

    Example::

        prices = PriceTable({"gpt-4o": (2.00, 8.00), "my-finetune": (0.30, 1.20)}, as_of="2026-12-01")
        prices.cost("gpt-4o-2024-08-06", 1200, 300)  # 0.0048
        prices.cost("unheard-of-model", 10, 10)      # None: unknown, never a crash

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        prices: Mapping[str, ModelPrice | tuple[float, float]] | None = None,
        *,
        include_defaults: bool = True,
        as_of: str | None = None,
        genai_prices: bool | None = None,
    ) -> None:
        table: dict[str, ModelPrice] = dict(DEFAULT_PRICES) if include_defaults else {}
        for name, price in (prices or {}).items():
            table[name.lower()] = price if isinstance(price, ModelPrice) else ModelPrice(*price)
        self._table = table
        self.as_of = PRICES_AS_OF if as_of is None else as_of
        self._resolved: dict[str, ModelPrice | None] = {}
        self.genai_prices = _genai_prices.available() if genai_prices is None else genai_prices

    def __repr__(self) -> str:
        return f"PriceTable({len(self._table)} models, as_of={self.as_of!r})"

    def __contains__(self, model: object) -> bool:
        return isinstance(model, str) and self.lookup(model) is not None

    def lookup(self, model: str | None) -> ModelPrice | None:
        """The price of ``model`` (exact name, a provider-qualified name, or a dated snapshot), or None."""
        if not model:
            return None
        try:
            return self._resolved[model]
        except KeyError:
            pass
        name = model.lower().rsplit("/", 1)[-1]  # "openai/gpt-4o" -> "gpt-4o"
        found = self._table.get(name)
        while found is None and "-" in name:
            name = name.rsplit("-", 1)[0]  # the longest "-"-separated prefix wins
            found = self._table.get(name)
        if len(self._resolved) < 4096:  # model names come from requests: keep the memo bounded
            self._resolved[model] = found
        return found

    def cost(self, model: str | None, input_tokens: int, output_tokens: int) -> float | None:
        """Dollars for the tokens, or None when the model has no price (counted as unpriced, not zero).

        A model the table does not know is priced by ``genai-prices`` when this table uses it.
        """
        price = self.lookup(model)
        if price is not None:
            return price.cost(input_tokens, output_tokens)
        if model and self.genai_prices:
            return _genai_prices.cost(model, input_tokens, output_tokens)
        return None
