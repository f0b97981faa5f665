"""The ``stats`` table (stored entries and request counters by agent and model), and the table formatter.

Pure functions over stored or counted numbers; nothing here measures, prints or reads a clock.
``promptcache stats`` prints the table; the demo prints it too, under its own results table
(:mod:`promptcache.demo._report`, which uses :func:`format_table` and :func:`money` from here).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from promptcache._tally import parse_counts
from promptcache.metrics import UNKNOWN, PriceTable, UsageRow

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    from promptcache._entry import Entry
    from promptcache.cli._support import StoredEntry

__all__ = [
    "StoredRow",
    "counted_in_store",
    "format_table",
    "money",
    "parse_prometheus",
    "render_stats",
    "stats_json",
    "stored_rows",
    "sum_counters",
]


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]], align: str = "") -> str:
    """Columns padded to their widest cell; ``align`` has one ``l``/``r`` per column (default: left)."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    sides = align.ljust(len(headers), "l")

    def line(cells: Sequence[str]) -> str:
        padded = [
            cell.rjust(w) if side == "r" else cell.ljust(w)
            for cell, w, side in zip(cells, widths, sides, strict=True)
        ]
        return "  ".join(padded).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


def money(value: float | None) -> str:
    """Dollars as the tables show them: cents from $1 up, tenths of a cent below; None is unpriced."""
    if value is None:
        return "unpriced"
    return f"${value:,.2f}" if value >= 1 else f"${value:,.4f}"


@dataclass(slots=True)
class StoredRow:
    """What the store holds for one (agent, model): entries and the tokens each future hit saves."""

    entries: int = 0
    input_tokens: int = 0
    output_tokens: int = 0


def _model_of(entry: Entry) -> str:
    # The model the request asked for, as metrics label it; the answer's model when no request was kept.
    asked = entry.request.get("model") if isinstance(entry.request, dict) else None
    return asked if isinstance(asked, str) else (entry.model or UNKNOWN)


def stored_rows(entries: Iterable[StoredEntry]) -> dict[tuple[str, str], StoredRow]:
    """Stored entries grouped by (agent, model)."""
    rows: dict[tuple[str, str], StoredRow] = {}
    for stored in entries:
        entry = stored.entry
        if entry is None:
            continue
        row = rows.setdefault((entry.scope[1], _model_of(entry)), StoredRow())
        row.entries += 1
        usage = entry.usage or {}
        row.input_tokens += int(usage.get("prompt_tokens", usage.get("input_tokens", 0)) or 0)
        row.output_tokens += int(usage.get("completion_tokens", usage.get("output_tokens", 0)) or 0)
    return rows


def parse_prometheus(text: str) -> dict[tuple[str, str], UsageRow]:
    """promptcache's counters by (agent, model) from Prometheus text (parsed by prometheus-client).

    Raises:
        ImportError: prometheus-client is not installed (the message names the extra).
        ValueError: The text is not in the Prometheus exposition format.
    """
    try:
        from prometheus_client.parser import text_string_to_metric_families  # noqa: PLC0415 - optional
    except ImportError:
        raise ImportError(
            "reading metrics needs prometheus-client: pip install 'promptcache[prometheus]'"
        ) from None
    rows: dict[tuple[str, str], UsageRow] = {}
    fields = {
        "promptcache_cost_saved_usd_total": "cost_saved",
        "promptcache_unpriced_hits_total": "unpriced_hits",
        "promptcache_latency_saved_seconds_total": "latency_saved",
    }
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if "agent" not in labels or "model" not in labels:
                continue
            row = rows.setdefault((labels["agent"], labels["model"]), UsageRow())
            if sample.name == "promptcache_requests_total" and labels.get("result") in {
                "hit",
                "miss",
                "bypass",
            }:
                name = {"hit": "hits", "miss": "misses", "bypass": "bypasses"}[labels["result"]]
                setattr(row, name, getattr(row, name) + int(sample.value))
            elif sample.name == "promptcache_tokens_saved_total":
                name = "input_tokens_saved" if labels.get("token_type") == "input" else "output_tokens_saved"
                setattr(row, name, getattr(row, name) + int(sample.value))
            elif sample.name in fields:
                name = fields[sample.name]
                cast = float if name != "unpriced_hits" else int
                setattr(row, name, getattr(row, name) + cast(sample.value))
    return rows


def sum_counters(sources: Iterable[dict[tuple[str, str], UsageRow]]) -> dict[tuple[str, str], UsageRow]:
    """Several processes' counters added up by (agent, model): one deployment's true totals."""
    total: dict[tuple[str, str], UsageRow] = {}
    for rows in sources:
        for key, row in rows.items():
            total.setdefault(key, UsageRow()).add(row)
    return total


def counted_in_store(counts: Mapping[str, int], prices: PriceTable) -> dict[tuple[str, str], UsageRow]:
    """The counters ``count_in_store`` keeps (every process's, added up), as rows; money priced now."""
    rows: dict[tuple[str, str], UsageRow] = {}
    for (agent, model), fields in parse_counts(counts).items():
        row = rows[(agent, model)] = UsageRow(
            hits=fields.get("hit", 0),
            misses=fields.get("miss", 0),
            bypasses=fields.get("bypass", 0),
            input_tokens_saved=fields.get("input_tokens", 0),
            output_tokens_saved=fields.get("output_tokens", 0),
            latency_saved=fields.get("latency_ms", 0) / 1000,
        )
        cost = prices.cost(
            None if model == UNKNOWN else model, row.input_tokens_saved, row.output_tokens_saved
        )
        if cost is None:
            row.unpriced_hits = row.hits
        else:
            row.cost_saved = cost
    return rows


def render_stats(
    stored: dict[tuple[str, str], StoredRow], counted: dict[tuple[str, str], UsageRow] | None
) -> str:
    """The ``stats`` table: stored entries always, request counters when a source for them was given."""
    rows: list[list[str]] = []
    total_stored, total_counted = StoredRow(), UsageRow()
    unpriced = False

    def cells(agent: str, model: str, s: StoredRow, c: UsageRow | None) -> list[str]:
        head = [agent, model, f"{s.entries:,}", f"{s.input_tokens + s.output_tokens:,}"]
        if c is None:
            return [*head, "-", "-", "-", "-", "-"]
        cost = money(c.cost_saved) + ("*" if c.unpriced_hits else "")
        return [*head, f"{c.hits:,}", f"{c.misses:,}", f"{c.hit_rate:.1%}", f"{c.tokens_saved:,}", cost]

    for agent, model in sorted(stored.keys() | (counted or {}).keys()):
        s = stored.get((agent, model), StoredRow())
        c = None if counted is None else counted.get((agent, model), UsageRow())
        rows.append(cells(agent, model, s, c))
        total_stored.entries += s.entries
        total_stored.input_tokens += s.input_tokens
        total_stored.output_tokens += s.output_tokens
        if c is not None:
            total_counted.add(c)
            unpriced = unpriced or c.unpriced_hits > 0
    rows.append(cells("total", "", total_stored, None if counted is None else total_counted))
    headers = [
        "agent",
        "model",
        "entries",
        "tokens stored",
        "hits",
        "misses",
        "hit rate",
        "tokens saved",
        "cost saved",
    ]
    table = format_table(headers, rows, "llrrrrrrr")
    if unpriced:
        table += "\n* includes hits of models with no price: their savings count as $0"
    return table


def stats_json(
    stored: dict[tuple[str, str], StoredRow], counted: dict[tuple[str, str], UsageRow] | None
) -> str:
    """The ``stats`` rows as JSON; the counter fields appear only when a source for them was given."""
    rows: list[dict[str, object]] = []
    for agent, model in sorted(stored.keys() | (counted or {}).keys()):
        s = stored.get((agent, model), StoredRow())
        row: dict[str, object] = {
            "agent": agent,
            "model": model,
            "entries": s.entries,
            "input_tokens_stored": s.input_tokens,
            "output_tokens_stored": s.output_tokens,
        }
        if counted is not None:
            c = counted.get((agent, model), UsageRow())
            row.update(
                hits=c.hits,
                misses=c.misses,
                bypasses=c.bypasses,
                hit_rate=c.hit_rate,
                input_tokens_saved=c.input_tokens_saved,
                output_tokens_saved=c.output_tokens_saved,
                cost_saved_usd=c.cost_saved,
                unpriced_hits=c.unpriced_hits,
            )
        rows.append(row)
    return json.dumps({"rows": rows}, indent=2)
