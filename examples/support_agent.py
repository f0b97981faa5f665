"""A customer-support triage agent with promptcache in front of its LLM calls.

For each ticket the agent makes two calls:

1. **classify** it into one of ``billing``, ``shipping``, ``technical``, ``account`` or ``other``, with the
   seed tutorial's :class:`promptcache.CachedAgent` (which caches through ``PromptCache.get_or_call``);
2. **draft a reply** for that team, with a plain ``openai.AsyncOpenAI`` client wrapped by
   :func:`promptcache.openai.wrap` (the caching transport sits inside the SDK's HTTP client).

Both share one cache: ``PROMPTCACHE_URL`` (default ``sqlite:///.promptcache/examples.db``, relative to the
current directory). Asking the same tickets again is answered from the cache: no call, no tokens paid.

Run it offline, against the project's local OpenAI-compatible test server (``tests/fake_llm.py``, started
by the script; it answers ``answer #<n> to: <the last user message>``)::

    .venv/bin/python examples/support_agent.py --fake            # first run: misses, upstream calls
    .venv/bin/python examples/support_agent.py --fake            # second run: the same tickets are hits
    .venv/bin/python examples/support_agent.py --fake --passes 2 # both in one process

Against any OpenAI-compatible endpoint (OpenAI, vLLM, Ollama, a proxy...)::

    export OPENAI_API_KEY=...
    .venv/bin/python examples/support_agent.py --base-url https://api.openai.com/v1 --model gpt-4o-mini
    .venv/bin/python examples/support_agent.py "Subject: refund?\n\nI was billed after cancelling."

``--base-url`` defaults to ``OPENAI_BASE_URL`` (else the SDK's default), ``--model`` to ``OPENAI_MODEL``
(else ``gpt-4o-mini``). ``--fake`` answers are kept under their own cache namespace, so they are never
served to a run against a real model. The example tests in ``tests/examples/`` replay this agent from
recorded cassettes (``fixtures/cassettes``) with no server and no key.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final, Self

from openai import AsyncOpenAI

from promptcache import CachedAgent, PromptCache
from promptcache.openai import wrap

if TYPE_CHECKING:
    from collections.abc import Sequence

    from openai.types.chat import ChatCompletionMessageParam

    from promptcache import CacheStats

__all__ = [
    "DEFAULT_CACHE_URL",
    "LABELS",
    "PROMPT_VERSION",
    "SAMPLE_TICKETS",
    "SupportAgent",
    "Triage",
    "main",
    "parse_label",
]

DEFAULT_CACHE_URL: Final = "sqlite:///.promptcache/examples.db"
DEFAULT_MODEL: Final = "gpt-4o-mini"
NAMESPACE: Final = "support-agent"
FAKE_NAMESPACE: Final = "support-agent-fake"  # answers of the fake server never reach a real-model run
PROMPT_VERSION: Final = "1"  # part of every key: bump it when a prompt below changes
LABELS: Final = ("billing", "shipping", "technical", "account", "other")
FALLBACK_LABEL: Final = "other"

CLASSIFY_PROMPT: Final = (
    "You triage customer-support tickets for an online shop. "
    f"Answer with exactly one word, the ticket's category: {', '.join(LABELS)}."
)
REPLY_PROMPT: Final = (
    "You are a friendly support agent on the {team} team of an online shop. "
    "Draft a short reply to the customer's ticket: acknowledge the problem, say what happens next, "
    "and do not promise refunds or dates you cannot check."
)

SAMPLE_TICKETS: Final = (
    (
        "Subject: Billing - charged twice\n\n"
        "Hi, I was charged twice for order #1042 this morning. Can you refund one of the payments?"
    ),
    (
        "Subject: Shipping delay\n\n"
        "My order #2231 was due last Friday and the tracking page has not changed for nine days."
    ),
    (
        "Subject: Locked out of my account\n\n"
        "The password reset email never arrives, so I cannot log in since yesterday."
    ),
    "Subject: Idea\n\nIt would be great if the mobile app had a dark mode.",
)

_LABEL_WORD: Final = re.compile(rf"\b({'|'.join(LABELS)})\b", re.IGNORECASE)


def parse_label(answer: str) -> str:
    """The category named in the classifier's answer: the first label word in it, else ``other``.

    A model asked for one word usually answers ``Billing`` or ``billing.``; the first whole-word match wins,
    so ``"shipping (maybe billing)"`` is ``shipping`` and ``"rebilling"`` names no label.
    """
    found = _LABEL_WORD.search(answer)
    return found.group(1).lower() if found else FALLBACK_LABEL


@dataclass(frozen=True, slots=True)
class Triage:
    """One handled ticket: the classifier's raw answer, the label parsed from it, and the drafted reply."""

    ticket: str
    answer: str
    label: str
    reply: str


class SupportAgent:
    """Classify a ticket, then draft a reply for its team; both calls go through one :class:`PromptCache`.

    The agent builds its own OpenAI clients from ``base_url`` and ``api_key`` (as production code does),
    so tests see them only at the HTTP transport. Use it as an async context manager, or call
    :meth:`aclose`: that closes both clients and the cache (after its pending writes).

    Args:
        base_url: An OpenAI-compatible API root such as ``https://api.openai.com/v1``; None: the SDK's
            default (``OPENAI_BASE_URL`` or OpenAI).
        api_key: The API key; None: ``OPENAI_API_KEY``.
        model: The chat model for both steps (part of the cache key).
        cache_url: Where answers are kept: ``sqlite:///...``, ``redis://...`` or ``memory://``.
        namespace: The cache namespace; keep different upstreams apart with different namespaces.
        max_retries: The SDK's retries on rate limits and server errors.
    """

    def __init__(  # noqa: PLR0913 - each knob is a keyword a caller may want
        self,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        model: str = DEFAULT_MODEL,
        cache_url: str = DEFAULT_CACHE_URL,
        namespace: str = NAMESPACE,
        max_retries: int = 2,
    ) -> None:
        self.model = model
        # Clients first: a missing API key fails here, before the cache opens anything.
        classifier_client = AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=max_retries)
        writer_client = AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=max_retries)
        self.cache = PromptCache.from_url(cache_url, namespace=namespace)
        # CachedAgent does its own caching through the cache, so its client stays unwrapped.
        self.classifier = CachedAgent(
            classifier_client,
            self.cache,
            model=model,
            temperature=0.0,
            max_tokens=10,
            agent_id="support-classifier",
            agent_version=PROMPT_VERSION,
        )
        # The writer is an ordinary SDK client with promptcache's caching transport inside.
        self.writer = wrap(writer_client, self.cache, agent_id="support-writer", agent_version=PROMPT_VERSION)
        self._clients = (classifier_client, writer_client)

    async def classify(self, ticket: str) -> tuple[str, str]:
        """The classifier's raw answer for ``ticket`` and the label parsed from it."""
        answer = await self.classifier.think(CLASSIFY_PROMPT, ticket)
        return answer, parse_label(answer)

    async def draft_reply(self, ticket: str, label: str) -> str:
        """A reply to ``ticket`` written for the ``label`` team."""
        messages: list[ChatCompletionMessageParam] = [
            {"role": "system", "content": REPLY_PROMPT.format(team=label)},
            {"role": "user", "content": ticket},
        ]
        completion = await self.writer.chat.completions.create(
            model=self.model, messages=messages, temperature=0.3, max_tokens=300
        )
        return completion.choices[0].message.content or ""

    async def triage(self, ticket: str) -> Triage:
        """Classify ``ticket``, then draft the reply for its team (the reply prompt depends on the label)."""
        answer, label = await self.classify(ticket)
        reply = await self.draft_reply(ticket, label)
        return Triage(ticket=ticket, answer=answer, label=label, reply=reply)

    async def triage_all(self, tickets: Sequence[str]) -> list[Triage]:
        """Triage ``tickets`` one after the other, then wait for the cache's background writes.

        Once this returns, asking the same tickets again is answered from the cache.
        """
        results = [await self.triage(ticket) for ticket in tickets]
        await self.cache.drain()
        return results

    def stats(self) -> CacheStats:
        """The cache's counters for both steps (a hit on either one is a call not made)."""
        return self.cache.stats()

    async def aclose(self) -> None:
        """Close both SDK clients, then the cache (its pending writes are finished first)."""
        try:
            for client in self._clients:
                await client.close()
        finally:
            await self.cache.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


# --- the command line --------------------------------------------------------------------------------


def _say(text: str = "") -> None:
    sys.stdout.write(text + "\n")


def _report(results: Sequence[Triage], pass_number: int) -> None:
    _say(f"== pass {pass_number} ==")
    for result in results:
        subject = result.ticket.splitlines()[0]
        _say(f"[{result.label}] {subject}")
        _say(f"    classifier said: {result.answer!r}")
        _say("    reply:")
        _say(textwrap.indent(result.reply, "      "))


def _report_stats(agent: SupportAgent) -> None:
    stats = agent.stats()
    _say(
        f"cache: {stats.hits} hits, {stats.misses} misses (hit rate {stats.hit_rate:.0%}), "
        f"{stats.upstream_calls} upstream calls, {stats.tokens_saved} tokens saved"
    )
    _say(f"classifier (CachedAgent.get_cache_stats): {agent.classifier.get_cache_stats()}")


async def _run(args: argparse.Namespace, base_url: str | None, api_key: str | None, namespace: str) -> None:
    tickets = [ticket.replace("\\n", "\n") for ticket in args.tickets] or list(SAMPLE_TICKETS)
    async with SupportAgent(
        base_url=base_url, api_key=api_key, model=args.model, cache_url=args.cache_url, namespace=namespace
    ) as agent:
        _say(f"model {args.model} at {base_url or 'the SDK default endpoint'}; cache {args.cache_url}")
        for pass_number in range(1, args.passes + 1):
            _report(await agent.triage_all(tickets), pass_number)
        _report_stats(agent)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Triage support tickets with an LLM, with promptcache in front of the calls.",
        epilog="The cache is --cache-url, else PROMPTCACHE_URL, else " + DEFAULT_CACHE_URL,
    )
    parser.add_argument("tickets", nargs="*", help="tickets to triage (\\n for a new line); default: samples")
    parser.add_argument(
        "--base-url",
        default=os.environ.get("OPENAI_BASE_URL"),
        help="an OpenAI-compatible API root (default: OPENAI_BASE_URL, else the SDK's default)",
    )
    parser.add_argument(
        "--model", default=os.environ.get("OPENAI_MODEL", DEFAULT_MODEL), help="chat model (OPENAI_MODEL)"
    )
    parser.add_argument("--cache-url", default=os.environ.get("PROMPTCACHE_URL", DEFAULT_CACHE_URL))
    parser.add_argument("--passes", type=int, default=1, help="triage the tickets this many times")
    parser.add_argument(
        "--fake",
        action="store_true",
        help="start the project's local fake server (tests/fake_llm.py) and use it: offline, no key",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the agent over the tickets and print the answers and the cache's counters."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.passes < 1:
        parser.error("--passes must be at least 1")
    if not args.fake:
        if not os.environ.get("OPENAI_API_KEY"):
            parser.error("set OPENAI_API_KEY, or run offline with --fake")
        asyncio.run(_run(args, args.base_url, None, NAMESPACE))
        return 0
    # The fake server lives in the project's tests; it is stdlib-only and needs no key.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from fake_llm import OPENAI_TEST_KEY, FakeLLM  # noqa: PLC0415 - only --fake needs it

    with FakeLLM() as server:
        asyncio.run(_run(args, server.base_url, OPENAI_TEST_KEY, FAKE_NAMESPACE))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
