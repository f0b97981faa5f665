"""One worker process of a two-worker deployment, for tests/redis/test_ops_redis.py.

``python ops_worker.py URL NAMESPACE MODE PROMPT...`` answers each prompt through a PromptCache on the
shared store (an in-process upstream, so a miss costs nothing), counting with a PrometheusHook on the
default registry and, with ``count_in_store``, in the store. MODE ``export``: then serves ``/metrics`` on a
free port, prints ``port <n>`` and waits for stdin to close. MODE ``multiprocess``: exits (its counters
stay in ``PROMETHEUS_MULTIPROC_DIR``). MODE ``plain``: exits. Prints ``done`` after the last answer.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from promptcache import PromptCache
from promptcache.metrics import PrometheusHook, start_exporter

MODEL = "gpt-4o"
AGENT = "writer"


def request_for(prompt: str) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": prompt}], "temperature": 0}


def answer(prompt: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-w",
        "object": "chat.completion",
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": f"re: {prompt}"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }


async def serve(url: str, namespace: str, prompts: list[str], count_in_store: bool) -> None:
    hook = PrometheusHook(agents=[AGENT])
    options: dict[str, Any] = {"count_in_store": True} if count_in_store else {}
    cache = PromptCache.from_url(url, namespace=namespace, hooks=[hook], **options)
    for prompt in prompts:

        async def call(prompt: str = prompt) -> dict[str, Any]:
            return answer(prompt)

        await cache.get_or_call(request_for(prompt), call, agent_id=AGENT)
        await cache.drain()  # each answer written before the next request: the figures are exact
    await cache.aclose()


def main() -> None:
    url, namespace, mode, *prompts = sys.argv[1:]
    asyncio.run(serve(url, namespace, prompts, count_in_store=mode == "store"))
    if mode == "export":
        server = start_exporter(0)
        sys.stdout.write(f"port {server.server_port}\n")
        sys.stdout.flush()
        sys.stdin.read()  # serve /metrics until the test closes stdin
        server.shutdown()
    sys.stdout.write("done\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
