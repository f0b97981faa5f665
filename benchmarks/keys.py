"""What the canonical key costs, next to the seed tutorial's key and one raw Redis GET on loopback.

Run it with ``.venv/bin/python benchmarks/keys.py`` (or ``make bench``). It measures, in one run:

(a) ``make_key`` for a chat request with one 8 KB user prompt,
(b) ``make_key`` for a 40-message, 10-tool chat request (about 40 KB of JSON),
(c) the seed tutorial's ``generate_cache_key`` logic on the same inputs (for (b): the first system message
    and the concatenated user messages, which is all the seed's signature can take),
(d) one raw ``GET`` with ``redis.asyncio`` against a redis-server this script starts on a free loopback port
    (skipped, with a note, when ``redis-server`` is not on PATH).

Each figure is the median per call, in microseconds, over many timed batches (``time.perf_counter_ns``).

Aim: the key of the 40-message request, computed on first sight (``make_key`` itself, not the memo in
front of it), costs at most 0.5x one raw loopback GET, so keying never matters next to the round trip it
guards. Next to it the benchmark prints the floors no key over the same bytes can go below: sha256 of the
request's canonical bytes alone, and orjson writing those bytes from the request plus sha256 over them
(the least an exact key built with orjson can cost), both also as fractions of the GET.

``--stages`` prints instead where (b)'s microseconds go, stage by stage (field rules, trim, orjson, the
scan that lets orjson's bytes stand, hashing, the rest) with what each check costs at its core.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import json
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from typing import TYPE_CHECKING, Any

import orjson
import redis.asyncio as aioredis

from promptcache._canonical import (
    _BLANK_BEFORE_LINE_END,
    _FAST_OPTIONS,
    TRIM_RULE,
    _dumps,
    _needs_walk,
    _with_text_policy,
)
from promptcache._endpoints import Endpoint
from promptcache._fields import key_body, server_state_reason
from promptcache._keys import _TEXT_FIELDS, KeyPolicy, _material_head, agent_prefix, make_key

if TYPE_CHECKING:
    from collections.abc import Callable

AIM = 0.5
MODEL = "gpt-4o-mini"
AGENT_ID = "support-bot"

WORD_TEXT = (
    "the order customer refund shipping invoice account policy warehouse delivery tracking number "
    "please check status within days business return label item quantity price discount code email "
    "address update request ticket escalate manager approve deny reason note history summary"
)
WORDS = tuple(WORD_TEXT.split())


# --- the seed tutorial's key, copied inline --------------------------------------------------------


def seed_generate_cache_key(
    system_prompt: str,
    user_prompt: str,
    model: str,
    temperature: float,
    max_tokens: int,
    agent_id: str | None = None,
) -> str:
    """The seed tutorial's key: collapse whitespace, json.dumps with sorted keys, sha256."""
    normalized_system = " ".join(system_prompt.split())
    normalized_user = " ".join(user_prompt.split())
    key_data = {
        "system": normalized_system,
        "user": normalized_user,
        "model": model,
        "temperature": temperature,
        "max_tokens": max_tokens,
        "agent_id": agent_id or "default",
    }
    key_string = json.dumps(key_data, sort_keys=True)
    return hashlib.sha256(key_string.encode()).hexdigest()


# --- inputs --------------------------------------------------------------------------------------


def prose(rnd: random.Random, size: int) -> str:
    """Deterministic prompt-like text of about ``size`` characters: sentences, paragraphs, a bullet list."""
    out: list[str] = []
    total = 0
    while total < size:
        sentence = " ".join(rnd.choice(WORDS) for _ in range(rnd.randint(6, 18))).capitalize() + "."
        if rnd.random() < 0.1:
            sentence = "  - " + sentence
        sep = "\n\n" if rnd.random() < 0.15 else "\n" if sentence.startswith("  -") else " "
        out.append(sentence + sep)
        total += len(sentence) + len(sep)
    return "".join(out)[:size]


SYSTEM_PROMPT = (
    "You are a customer-support assistant for an online shop.\n"
    "Rules:\n"
    "  1. Be concise and polite.\n"
    "  2. Never invent order numbers; use the tools.\n"
    "  3. Escalate refunds above 500 EUR to a human.\n"
)


def request_8kb() -> dict[str, Any]:
    """A chat request with a short system prompt and one 8 KB user prompt (ending in a newline)."""
    user = prose(random.Random(8), 8 * 1024 - 1) + "\n"
    return {
        "model": MODEL,
        "messages": [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}],
        "temperature": 0.2,
        "max_tokens": 512,
    }


def tool(rnd: random.Random, name: str) -> dict[str, Any]:
    """A function tool with a realistic JSON-schema parameter object."""
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": prose(rnd, 160),
            "parameters": {
                "type": "object",
                "properties": {
                    "order_id": {
                        "type": "string",
                        "pattern": "^[A-Z]{2}-[0-9]{6}$",
                        "description": prose(rnd, 60),
                    },
                    "customer_email": {"type": "string", "format": "email"},
                    "status": {
                        "type": "string",
                        "enum": ["pending", "paid", "shipped", "delivered", "returned", "refunded"],
                    },
                    "limit": {"type": "integer", "minimum": 1, "maximum": 100, "default": 10},
                    "include_history": {"type": "boolean", "default": False},
                    "date_range": {
                        "type": "object",
                        "properties": {
                            "from": {"type": "string", "format": "date"},
                            "to": {"type": "string", "format": "date"},
                        },
                        "required": ["from"],
                        "additionalProperties": False,
                    },
                },
                "required": ["order_id"],
                "additionalProperties": False,
            },
            "strict": True,
        },
    }


def request_40_messages() -> dict[str, Any]:
    """A 40-message conversation (user, assistant, tool calls and results) with 10 tools, about 40 KB."""
    rnd = random.Random(40)
    messages: list[dict[str, Any]] = [{"role": "system", "content": SYSTEM_PROMPT + prose(rnd, 1500)}]
    turn = 0
    while len(messages) < 40:
        messages.append({"role": "user", "content": prose(rnd, rnd.randint(600, 1200))})
        if turn % 4 == 1 and len(messages) <= 37:
            call_id = f"call_{turn:04d}"
            arguments = json.dumps({"order_id": f"DE-{100000 + turn}", "include_history": True})
            messages.append(
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": call_id,
                            "type": "function",
                            "function": {"name": "lookup_order", "arguments": arguments},
                        }
                    ],
                }
            )
            messages.append({"role": "tool", "tool_call_id": call_id, "content": prose(rnd, 400)})
        messages.append({"role": "assistant", "content": prose(rnd, rnd.randint(350, 900))})
        turn += 1
    names = ["lookup_order", "list_orders", "refund", "cancel", "update_address"]
    names += ["track_parcel", "send_email", "escalate", "apply_discount", "create_ticket"]
    return {
        "model": MODEL,
        "messages": messages[:40],
        "tools": [tool(rnd, name) for name in names],
        "tool_choice": "auto",
        "temperature": 0.2,
        "max_tokens": 512,
    }


def seed_inputs(request: dict[str, Any]) -> tuple[str, str]:
    """What the seed's signature can take from a request: the first system message and all user text."""
    messages = request["messages"]
    system = next(m["content"] for m in messages if m["role"] == "system")
    user = "\n".join(m["content"] for m in messages if m["role"] == "user")
    return system, user


# --- timing --------------------------------------------------------------------------------------


def median_us(fn: Callable[[], object], *, batches: int, per_batch: int) -> float:
    """Median per-call time in microseconds over ``batches`` timed batches of ``per_batch`` calls."""
    for _ in range(per_batch):  # warm-up
        fn()
    per_call: list[float] = []
    for _ in range(batches):
        start = time.perf_counter_ns()
        for _ in range(per_batch):
            fn()
        per_call.append((time.perf_counter_ns() - start) / per_batch)
    return statistics.median(per_call) / 1000


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_redis(binary: str, port: int, workdir: str) -> subprocess.Popen[bytes]:
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    args += ["--dir", workdir, "--daemonize", "no"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"redis-server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return proc
        except OSError:
            time.sleep(0.02)
    proc.kill()
    proc.wait(timeout=10)
    raise RuntimeError(f"redis-server did not answer PING on port {port}")


async def redis_get_us(port: int, *, calls: int, value_size: int = 1024) -> float:
    """Median time of one ``await client.get(key)`` on loopback, for a ``value_size``-byte value."""
    client = aioredis.Redis(host="127.0.0.1", port=port)
    try:
        await client.set("bench:entry", b"x" * value_size)
        for _ in range(500):  # warm-up: connection made, loop and server caches hot
            await client.get("bench:entry")
        times: list[int] = []
        for _ in range(calls):
            start = time.perf_counter_ns()
            await client.get("bench:entry")
            times.append(time.perf_counter_ns() - start)
    finally:
        await client.aclose()
    return statistics.median(times) / 1000


def measure_get() -> float | None:
    binary = shutil.which("redis-server")
    if binary is None:
        print("redis-server not found on PATH: skipping (d), the raw GET; install it to get the ratios.")
        return None
    with tempfile.TemporaryDirectory(prefix="promptcache-bench-") as workdir:
        port = free_port()
        proc = start_redis(binary, port, workdir)
        try:
            return asyncio.run(redis_get_us(port, calls=50_000))
        finally:
            proc.terminate()
            proc.wait(timeout=10)


# --- report --------------------------------------------------------------------------------------


def main() -> None:
    small = request_8kb()
    large = request_40_messages()
    sizes = {name: len(json.dumps(req).encode()) for name, req in [("8kb", small), ("40msg", large)]}
    small_seed = seed_inputs(small)
    large_seed = seed_inputs(large)
    # Same digest every call: make_key is pure, so this only times the work.
    assert make_key(large, agent_id=AGENT_ID).digest == make_key(large, agent_id=AGENT_ID).digest

    def key_small() -> object:
        return make_key(small, agent_id=AGENT_ID)

    def key_large() -> object:
        return make_key(large, agent_id=AGENT_ID)

    def seed_small() -> object:
        return seed_generate_cache_key(*small_seed, MODEL, 0.2, 512, AGENT_ID)

    def seed_large() -> object:
        return seed_generate_cache_key(*large_seed, MODEL, 0.2, 512, AGENT_ID)

    canonical_large = make_key(large, agent_id=AGENT_ID).canonical

    def sha_large() -> object:
        return hashlib.sha256(canonical_large).hexdigest()

    trimmed_large = trimmed_body(large)

    def serialise_and_sha_large() -> object:
        return hashlib.sha256(orjson.dumps(trimmed_large, option=_FAST_OPTIONS)).hexdigest()

    results = {
        "key_8kb": median_us(key_small, batches=1000, per_batch=20),
        "key_40msg": median_us(key_large, batches=1000, per_batch=10),
        "seed_8kb": median_us(seed_small, batches=1000, per_batch=20),
        "seed_40msg": median_us(seed_large, batches=1000, per_batch=10),
        "sha_40msg": median_us(sha_large, batches=1000, per_batch=10),
        "dumps_sha_40msg": median_us(serialise_and_sha_large, batches=1000, per_batch=10),
    }
    get = measure_get()

    rows = [
        ("(a) make_key, 8 KB prompt", f"{sizes['8kb'] / 1024:.1f} KB", results["key_8kb"]),
        ("(b) make_key, 40 msgs + 10 tools", f"{sizes['40msg'] / 1024:.1f} KB", results["key_40msg"]),
        ("(c) seed key, 8 KB prompt", "sys + user", results["seed_8kb"]),
        ("(c) seed key, 40-msg (sys + users)", "sys + user", results["seed_40msg"]),
        (
            "    ref: sha256 of (b)'s canonical bytes",
            f"{len(canonical_large) / 1024:.1f} KB",
            results["sha_40msg"],
        ),
        (
            "    ref: orjson of (b)'s body + sha256",
            f"{len(canonical_large) / 1024:.1f} KB",
            results["dumps_sha_40msg"],
        ),
    ]
    if get is not None:
        rows.append(("(d) redis.asyncio GET, loopback", "1 KB value", get))
    print(f"{'measurement':<40} {'input':>11} {'median µs/call':>15}")
    print("-" * 68)
    for label, size, value in rows:
        print(f"{label:<40} {size:>11} {value:>15.1f}")
    print()
    print(f"key/seed, 8 KB prompt:       {results['key_8kb'] / results['seed_8kb']:.2f}x")
    print(f"key/seed, 40-msg request:    {results['key_40msg'] / results['seed_40msg']:.2f}x")
    if get is not None:
        ratio = results["key_40msg"] / get
        print(f"key(8 KB)/GET:               {results['key_8kb'] / get:.2f}x")
        print(f"key(40-msg)/GET:             {ratio:.2f}x")
        floor = results["sha_40msg"] / get
        print(f"floor: sha256(40-msg)/GET:   {floor:.2f}x (hashing its canonical bytes alone)")
        both = results["dumps_sha_40msg"] / get
        print(f"floor: orjson+sha256/GET:    {both:.2f}x (writing those bytes with orjson, then hashing)")
        verdict = "met" if ratio <= AIM else "NOT met"
        print(f"aim: key(40-msg) <= {AIM}x one raw GET -> {verdict}")
    else:
        print(f"aim: key(40-msg) <= {AIM}x one raw GET -> not measured (no redis-server)")


# --- where (b)'s microseconds go ----------------------------------------------------------------


def trimmed_body(request: dict[str, Any]) -> dict[str, Any]:
    """The chat request after the field rules and the default ``trim`` text policy: what orjson writes."""
    fields, messages = _TEXT_FIELDS[Endpoint.CHAT_COMPLETIONS]
    return _with_text_policy(key_body(Endpoint.CHAT_COMPLETIONS, request), fields, messages, TRIM_RULE)


def level_walk(body: dict[str, Any]) -> int:
    """``gc.get_referents`` level by level alone: the object walk under the scan, with no type looked at."""
    level: list[Any] = [body]
    seen = 0
    while level:
        level = gc.get_referents(*level)
        seen += len(level)
    return seen


def stages() -> None:
    """Print make_key's stages on request (b), each timed alone on its own input (the same make_key runs)."""
    request = request_40_messages()
    ep = Endpoint.CHAT_COMPLETIONS
    body = key_body(ep, request)
    trimmed = trimmed_body(request)
    canonical = orjson.dumps(trimmed, option=_FAST_OPTIONS)
    assert canonical == make_key(request, agent_id=AGENT_ID).canonical
    assert not _needs_walk(trimmed), "request (b) no longer takes the fast path"
    texts = [m["content"] for m in trimmed["messages"] if isinstance(m.get("content"), str)]
    fields, messages = _TEXT_FIELDS[ep]
    head = _material_head(ep, KeyPolicy.TRIM)

    def hashing() -> object:
        hasher = hashlib.sha256(head)
        hasher.update(canonical)
        hasher.update(b',"route":null,"scope":%s}' % _dumps(["promptcache", AGENT_ID, "0", None]))
        return hasher.hexdigest()

    def timed(fn: Callable[[], object]) -> float:
        return median_us(fn, batches=500, per_batch=10)

    total = timed(lambda: make_key(request, agent_id=AGENT_ID))
    rows = [
        (
            "field rules (bypass check, key_body)",
            timed(lambda: (server_state_reason(ep, request), key_body(ep, request))),
        ),
        ("text policy: trim", timed(lambda: _with_text_policy(body, fields, messages, TRIM_RULE))),
        ("canonical JSON: orjson.dumps", timed(lambda: orjson.dumps(trimmed, option=_FAST_OPTIONS))),
        ("canonical JSON: float/type scan", timed(lambda: _needs_walk(trimmed))),
        (
            "scope: prefix and scope bytes",
            timed(
                lambda: (agent_prefix("promptcache", AGENT_ID), _dumps(["promptcache", AGENT_ID, "0", None]))
            ),
        ),
        ("hashing: sha256, hexdigest", timed(hashing)),
    ]
    rest = total - sum(value for _, value in rows)
    cores = [
        (
            f"trim's line-end regex over its {len(texts)} texts",
            timed(lambda: [_BLANK_BEFORE_LINE_END.search(t) for t in texts]),
        ),
        (f"scan's gc.get_referents over {level_walk(trimmed)} objects", timed(lambda: level_walk(trimmed))),
    ]
    print(f"make_key on request (b), {len(canonical) / 1024:.1f} KB canonical: median µs per stage")
    print("-" * 68)
    for label, value in [*rows, ("rest (enums, CacheKey, store key, model)", rest)]:
        print(f"{label:<52} {value:>8.1f} {value / total:>6.0%}")
    print(f"{'make_key total':<52} {total:>8.1f}")
    print()
    print("at the core of the two checks:")
    for label, value in cores:
        print(f"  {label:<50} {value:>8.1f}")


if __name__ == "__main__":
    if "--stages" in sys.argv[1:]:
        stages()
    else:
        main()
