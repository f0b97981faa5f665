"""``genai-prices`` prices what the dated table does not know; the table (and a caller's figures) win."""

from __future__ import annotations

import sys

import pytest

from promptcache import PriceTable
from promptcache._prices import DEFAULT_PRICES

genai_prices = pytest.importorskip("genai_prices", reason="the prices extra (make test installs it)")

NOT_IN_TABLE = "gemini-2.5-flash"  # a model genai-prices knows and the dated table does not


def genai_cost(model: str, input_tokens: int, output_tokens: int) -> float:
    usage = genai_prices.Usage(input_tokens=input_tokens, output_tokens=output_tokens)
    return float(genai_prices.calc_price(usage, model).total_price)


def test_a_model_missing_from_the_table_is_priced_by_genai_prices_tiers_included() -> None:
    prices = PriceTable()
    assert prices.lookup(NOT_IN_TABLE) is None
    assert prices.genai_prices is True
    for tokens in ((1_000, 200), (300_000, 1_000)):  # the second one is past a long-context tier
        assert prices.cost(NOT_IN_TABLE, *tokens) == pytest.approx(genai_cost(NOT_IN_TABLE, *tokens))
    assert prices.cost(f"google/{NOT_IN_TABLE}", 1_000, 200) == pytest.approx(
        genai_cost(NOT_IN_TABLE, 1_000, 200)
    )


def test_the_dated_table_and_a_callers_figures_stay_the_override() -> None:
    assert PriceTable().cost("gpt-4o", 1_000_000, 0) == pytest.approx(DEFAULT_PRICES["gpt-4o"].input)
    mine = PriceTable({NOT_IN_TABLE: (1.0, 1.0)})
    assert mine.cost(NOT_IN_TABLE, 1_000_000, 1_000_000) == pytest.approx(2.0)


def test_a_model_nobody_knows_stays_unpriced_and_genai_prices_can_be_turned_off() -> None:
    assert PriceTable().cost("no-such-model-anywhere", 10, 10) is None
    assert PriceTable().cost("no-such-model-anywhere", 10, 10) is None  # the memoised answer too
    assert PriceTable(genai_prices=False).cost(NOT_IN_TABLE, 10, 10) is None


def test_without_the_package_the_table_alone_prices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "genai_prices", None)  # as if not installed
    prices = PriceTable()
    assert prices.genai_prices is False
    assert prices.cost(NOT_IN_TABLE, 10, 10) is None
    assert prices.cost("gpt-4o", 1_000_000, 0) == pytest.approx(DEFAULT_PRICES["gpt-4o"].input)
