"""Process A of the hot tier tests (tests/redis/test_tier_redis.py): a cache on a shared Redis that
answers commands on stdin, one JSON line each on stdout.

``python tier_worker.py URL NAMESPACE`` then lines ``get PROMPT`` (prints ``{"value": content or null,
"tier_hits": n}``), ``stats`` (the cache's counters) and ``quit``. One ``asyncio.run`` per command: the
cache (and its tier) is module-level and outlives each loop, as in a worker that runs many.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import orjson

from promptcache import PromptCache

AGENT = "tiered"


def request_for(prompt: str) -> dict[str, Any]:
    return {"model": "gpt-4o", "messages": [{"role": "user", "content": prompt}], "temperature": 0}


def main() -> int:
    url, namespace = sys.argv[1], sys.argv[2]
    cache = PromptCache.from_url(url, namespace=namespace, breaker_threshold=1_000_000)
    for line in sys.stdin:
        command, _, prompt = line.strip().partition(" ")
        if command == "quit":
            break
        if command == "get":
            body = asyncio.run(cache.get(request_for(prompt), agent_id=AGENT))
            value = None if body is None else body["choices"][0]["message"]["content"]
            out: dict[str, Any] = {"value": value, "tier_hits": cache.stats().tier_hits}
        else:
            out = cache.stats().as_dict()
        sys.stdout.write(orjson.dumps(out).decode() + "\n")
        sys.stdout.flush()
    cache.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
