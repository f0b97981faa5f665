"""The demo's agent workload: many agents, fresh queries, exact repeats and near-repeats, reproducibly.

Everything is drawn from one seeded ``random.Random``, so a given set of parameters always produces the
same list of calls. Near-repeats come in two kinds, to show what exact caching does and does not merge:
whitespace noise (a trailing space, a stray newline) that the default ``trim`` text policy removes, so the
call gets the original's key; and rewordings (different case or punctuation) that get a new key.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from promptcache._keys import chat_request
from promptcache.exceptions import ConfigError

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["AGENTS", "Call", "WorkloadParams", "build_workload"]

AGENT_VERSION: Final = "1"


@dataclass(frozen=True, slots=True)
class AgentSpec:
    agent_id: str
    weight: int
    system: str
    templates: tuple[str, ...]


_FILL: Final[dict[str, tuple[str, ...]]] = {
    "order": tuple(f"#{n}" for n in range(48_300, 48_420)),
    "weeks": ("1", "2", "3", "4"),
    "item": tuple(f"SKU-{n}" for n in range(1200, 1280)),
    "country": (
        "Vietnam",
        "Germany",
        "Brazil",
        "Japan",
        "Kenya",
        "Canada",
        "India",
        "Mexico",
        "France",
        "Australia",
        "Egypt",
        "Poland",
    ),
    "year": ("2023", "2024", "2025", "2026"),
    "n": ("3", "5", "10", "20", "50"),
    "city": (
        "Can Tho",
        "Ho Chi Minh City",
        "Hanoi",
        "Da Nang",
        "Hue",
        "Hai Phong",
        "Nha Trang",
        "Vung Tau",
        "Da Lat",
        "Quy Nhon",
    ),
    "topic": (
        "refund policy",
        "shipping times",
        "warranty",
        "gift cards",
        "account deletion",
        "price matching",
        "order tracking",
        "store pickup",
        "bulk discounts",
        "loyalty points",
        "exchanges",
        "invoices",
    ),
    "lang": ("Vietnamese", "German", "Spanish", "French", "Japanese", "Portuguese"),
    "phrase": (
        "Your parcel is on its way.",
        "We are sorry for the delay.",
        "Thank you for your order.",
        "Your refund has been issued.",
        "The item is back in stock.",
        "Please confirm your address.",
        "Your account has been updated.",
        "We could not charge your card.",
    ),
}

AGENTS: Final[tuple[AgentSpec, ...]] = (
    AgentSpec("support-classifier", 6,
              "You are a customer support classifier. Answer with one label: shipping, billing, returns, "
              "account or other.",
              ("Classify: My order {order} hasn't arrived in {weeks} weeks.",
               "Classify: I need a refund for item {item}.",
               "Classify: I was charged twice for order {order}.",
               "Classify: How do I change the address on order {order}?")),
    AgentSpec("faq-answerer", 4,
              "Answer the customer's question in two sentences using the help centre.",
              ("What is your {topic}?", "How does the {topic} work in {country}?",
               "Is the {topic} different for orders shipped to {city}?")),
    AgentSpec("sql-writer", 3,
              "Write one SQL query. Schema: orders(id, customer_id, total, created_at), "
              "customers(id, name, country).",
              ("Total revenue from customers in {country} in {year}.",
               "Top {n} customers by order count in {year}.",
               "Average order total per customer in {country} for {year}.",
               "Customers in {country} with more than {n} orders in {year}.")),
    AgentSpec("router", 3,
              "Route the message to one team: logistics, payments, catalogue or people. Reply with the team.",
              ("Delivery to {city} is late for order {order}.", "Price of {item} looks wrong.")),
    AgentSpec("extractor", 2,
              "Extract order id, item and city as JSON with keys order, item, city.",
              ("Order {order} with {item} should go to {city}.",)),
    AgentSpec("translator", 2,
              "Translate the message for the customer. Keep the tone.",
              ("Translate to {lang}: {phrase}", "Translate to {lang} for a customer in {city}: {phrase}")),
    AgentSpec("summarizer", 1,
              "Summarise the ticket in one line for the on-call engineer.",
              ("Ticket: customer in {city} reports order {order} stuck for {weeks} weeks; item {item}.",)),
    AgentSpec("moderator", 1,
              "Say 'ok' or 'flag' for the review text.",
              ("Review of {item}: arrived late to {city}, otherwise fine.",)),
)  # fmt: skip

_WHITESPACE_NOISE: Final = ("{} ", "{}\n", "\n{}", "{}  \n\n", "{}\r\n")


@dataclass(frozen=True, slots=True)
class WorkloadParams:
    """What the workload looks like; every field is shown on screen before the demo runs."""

    calls: int = 800
    agents: int = len(AGENTS)
    repeat_share: float = 0.25
    whitespace_share: float = 0.10
    reworded_share: float = 0.05
    model: str = "gpt-4o"
    temperature: float = 0.1
    max_tokens: int = 512
    seed: int = 7

    def __post_init__(self) -> None:
        if not 1 <= self.agents <= len(AGENTS):
            raise ConfigError(f"agents must be between 1 and {len(AGENTS)}, got {self.agents}")
        if self.calls < 1:
            raise ConfigError(f"calls must be at least 1, got {self.calls}")
        shares = (self.repeat_share, self.whitespace_share, self.reworded_share)
        if any(s < 0 for s in shares) or sum(shares) > 1:
            raise ConfigError("repeat, whitespace and reworded shares must be >= 0 and add up to at most 1")


@dataclass(frozen=True, slots=True)
class Call:
    """One request of the workload: which agent asks, what it sends, and how it came about."""

    agent_id: str
    request: dict[str, Any]
    kind: str  # fresh | repeat | whitespace | reworded


def _fresh(spec: AgentSpec, rng: random.Random, seen: set[str]) -> str:
    """A question this agent has not been asked yet (a few redraws; the pools make a clash rare)."""
    text = ""
    for _ in range(20):
        template = rng.choice(spec.templates)
        text = template.format(**{name: rng.choice(values) for name, values in _FILL.items()})
        if text not in seen:
            break
    return text


def _reworded(text: str, rng: random.Random) -> str:
    choices = (text.lower(), text.rstrip(".?") + "?", "Please help. " + text)
    return rng.choice([c for c in choices if c != text] or [text + "!"])


def _pick(history: Sequence[str], rng: random.Random) -> str:
    # Older queries are the popular ones: a squared uniform draw favours the start of the history.
    return history[int(len(history) * rng.random() ** 2)]


def build_workload(params: WorkloadParams) -> list[Call]:
    """The calls of one run, in order; the same ``params`` always give the same list."""
    shares = (params.repeat_share, params.whitespace_share, params.reworded_share)
    rng = random.Random(params.seed)  # noqa: S311 - a reproducible workload, not cryptography
    specs = AGENTS[: params.agents]
    history: dict[str, list[str]] = {s.agent_id: [] for s in specs}  # fresh questions, in order
    asked: dict[str, set[str]] = {s.agent_id: set() for s in specs}  # every text sent
    calls: list[Call] = []
    for _ in range(params.calls):
        spec = rng.choices(specs, weights=[s.weight for s in specs])[0]
        seen = history[spec.agent_id]
        draw = rng.random()
        if seen and draw < shares[0]:
            kind, text = "repeat", _pick(seen, rng)
        elif seen and draw < shares[0] + shares[1]:
            kind, text = "whitespace", rng.choice(_WHITESPACE_NOISE).format(_pick(seen, rng))
        elif seen and draw < sum(shares):
            kind, text = "reworded", _reworded(_pick(seen, rng), rng)
        else:
            kind, text = "fresh", _fresh(spec, rng, asked[spec.agent_id])
            seen.append(text)
        asked[spec.agent_id].add(text)
        request = chat_request(spec.system, text, params.model, params.temperature, params.max_tokens)
        calls.append(Call(spec.agent_id, request, kind))
    return calls
