"""Replaying recorded chat completions in pytest: this plugin against vcrpy + pytest-recording.

Run it with ``.venv/bin/python benchmarks/replay.py`` (``--sizes 200,1000``, ``--repeats 3``,
``--profile`` for a cProfile of this plugin's replay run, ``--keep DIR`` to keep the generated project).
The vcrpy rows need ``vcrpy`` and ``pytest-recording`` (the ``bench`` extra); without them only this
plugin and the floor are measured, and the output says so.

For each cassette size N it writes a throwaway pytest project, starts the fake OpenAI server
(``tests/fake_llm.py``), and records N distinct chat completions once with each tool:

* promptcache: ``pytest --promptcache=auto``, one YAML cassette keyed by the production cache key;
* vcrpy: ``@pytest.mark.vcr(record_mode="once", match_on=[method, scheme, host, port, path, query, body],
  filter_headers=["authorization"])``. Matching on the body is the only vcrpy setting under which an
  edited prompt cannot replay a stale answer (its default matches method + URL only).

Then the server is stopped, the inner conftest refuses every socket connect, and each replay runs in its
own ``python -m pytest`` process (both plugins installed and loaded in every run, so each row pays the
same pytest start-up). The inner test times each of the N ``client.chat.completions.create`` calls with
``time.perf_counter`` after a common SDK warm-up; cassette loading happens in the fixtures, before the
timed loop, and is measured separately here in-process: promptcache's ``load_cassette`` against vcrpy's
``FilesystemPersister.load_cassette`` with its YAML serializer (read + parse + build its request objects).

All rows use the same client, ``openai.OpenAI(max_retries=0, http_client=httpx2.Client(...))``, and the
same N requests in the same order. The floor is that client over ``httpx2.MockTransport`` whose handler
returns the very bytes this plugin replays (no lookup at all): the SDK's own request building, response
parsing and typing with zero I/O. Aims: promptcache within 1.25x of the floor per call, >= 10x faster than
vcrpy, and flat as the cassette grows. This is a measurement, never a timed test.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import importlib.util
import json
import os
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import fake_llm
from fake_llm import FakeLLM

from promptcache._cassette import load_cassette

AIM_FLOOR_RATIO = 1.25
AIM_VS_VCR = 10.0
# "Flat": promptcache's added time per call (p50 over the floor) grows by at most this much from the
# smallest cassette to the largest; the slack covers run-to-run noise of the p50s (about +-15 us here).
AIM_FLAT_US = 20.0
LOAD_REPEATS = 5
INNER_TIMEOUT = 600
MATCH_ON = ["method", "scheme", "host", "port", "path", "query", "body"]

SYSTEM = (
    "You are the triage assistant of an online shop's support desk. Read the customer's ticket and answer "
    "with one short paragraph: the category (delivery, refund, account, product or other), the urgency "
    "(low, normal or high) and the next step an agent should take. Never invent order numbers, never "
    "promise refunds, and ask for the order number when the ticket does not give one. Keep a friendly, "
    "professional tone and do not repeat the ticket back to the customer."
)
TOPICS = (
    "my parcel was marked as delivered but it is not at my door",
    "I was charged twice for the same order and want one payment back",
    "I cannot log in since I changed my e-mail address",
    "the blender I received makes a loud grinding noise on the lowest speed",
    "can I change the delivery address of an order that has already shipped",
)

# The inner project: one conftest (client factory, warm-up, network guard, timed loop) and three tests.
INNER_INI = """\
[pytest]
addopts = -p no:cacheprovider
promptcache_store = promptcache_cassettes
"""

INNER_CONFTEST = '''\
import cProfile
import json
import os
import socket
import time
from pathlib import Path

import httpx2
import openai
import pytest

HERE = Path(__file__).parent
MODEL = "gpt-4o-mini"
API_KEY = "sk-bench-0000000000000000000000"
JSON_HEADERS = [("content-type", "application/json")]
WARMUP = 50


def make_client(http_client):
    return openai.OpenAI(
        api_key=API_KEY, base_url=os.environ["PCB_BASE_URL"], max_retries=0, http_client=http_client
    )


@pytest.fixture(scope="session", autouse=True)
def _warm_sdk():
    """The same SDK warm-up for every row (lazy imports, pydantic schemas), before any tool is active."""
    body = (HERE / "warmup.json").read_bytes()
    transport = httpx2.MockTransport(lambda request: httpx2.Response(200, headers=JSON_HEADERS, content=body))
    client = make_client(httpx2.Client(transport=transport))
    messages = [{"role": "user", "content": "warm-up"}]
    for _ in range(WARMUP):
        client.chat.completions.create(model=MODEL, messages=messages)
    client.close()


@pytest.fixture(scope="session", autouse=True)
def _no_network():
    """Replay runs: every connect is refused and logged, so a replay that tried the network shows."""
    if not os.environ.get("PCB_BLOCK_NETWORK"):
        yield
        return
    real = socket.socket.connect

    def connect(self, address):
        with (HERE / "connects.log").open("a") as handle:
            handle.write(repr(address) + "\\n")
        raise ConnectionRefusedError(f"network blocked by the benchmark: {address!r}")

    socket.socket.connect = connect
    yield
    socket.socket.connect = real


def run_calls(client, label):
    prompts = json.loads((HERE / "prompts.json").read_text())
    system = {"role": "system", "content": prompts["system"]}
    conversations = [[system, {"role": "user", "content": text}] for text in prompts["user"]]
    create = client.chat.completions.create
    perf = time.perf_counter
    samples, answers = [], []
    profile_to = os.environ.get("PCB_PROFILE")
    profiler = cProfile.Profile() if profile_to else None
    if profiler is not None:
        profiler.enable()
    started = perf()
    for messages in conversations:
        t0 = perf()
        reply = create(model=MODEL, messages=messages)
        samples.append(perf() - t0)
        answers.append(reply.choices[0].message.content)
    total = perf() - started
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(profile_to)
    client.close()
    wrong = [i for i, (q, a) in enumerate(zip(prompts["user"], answers)) if not (a or "").endswith(q)]
    assert not wrong, f"{label}: {len(wrong)} answers do not match their prompts, first at call {wrong[0]}"
    out = os.environ.get("PCB_OUT")
    if out:
        Path(out).write_text(json.dumps({"label": label, "samples": samples, "total": total}))
'''

INNER_TESTS = f"""\
import json

import httpx2
import pytest

from conftest import HERE, JSON_HEADERS, make_client, run_calls


def test_floor():
    bodies = iter([b.encode() for b in json.loads((HERE / "floor_bodies.json").read_text())])
    transport = httpx2.MockTransport(
        lambda request: httpx2.Response(200, headers=JSON_HEADERS, content=next(bodies))
    )
    run_calls(make_client(httpx2.Client(transport=transport)), "floor")


def test_promptcache():
    run_calls(make_client(httpx2.Client()), "promptcache")


@pytest.mark.vcr(record_mode="once", match_on={MATCH_ON!r}, filter_headers=["authorization"])
def test_vcr():
    run_calls(make_client(httpx2.Client()), "vcrpy")
"""


@dataclass
class Row:
    """Per-call samples (seconds) of one row, pooled over its runs."""

    samples: list[float]

    @property
    def p50_us(self) -> float:
        return statistics.median(self.samples) * 1e6

    @property
    def mean_us(self) -> float:
        return statistics.fmean(self.samples) * 1e6

    @property
    def p90_us(self) -> float:
        return statistics.quantiles(self.samples, n=10)[-1] * 1e6


@dataclass
class Run:
    """One inner replay run: per-call samples (seconds) and the wall time of the whole pytest process."""

    samples: list[float]
    wall: float


@dataclass
class SizeResult:
    n: int
    rows: dict[str, Row]
    loads_ms: dict[str, float]
    files_kb: dict[str, float]
    walls: dict[str, float]
    vcr_failure: str | None = None


# --- the inner project -----------------------------------------------------------------------------


def prompts(n: int) -> list[str]:
    """N distinct user prompts (the ticket number makes each one a different request)."""
    return [f"Ticket #{10_000 + i}: {TOPICS[i % len(TOPICS)]}. What should happen next?" for i in range(n)]


def warmup_body() -> bytes:
    return orjson.dumps(
        {
            "id": "chatcmpl-warmup",
            "object": "chat.completion",
            "created": 1_700_000_000,
            "model": "gpt-4o-mini",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "warm", "refusal": None, "annotations": []},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
        }
    )


def write_project(root: Path, n: int) -> None:
    root.mkdir(parents=True)
    (root / "pytest.ini").write_text(INNER_INI)
    (root / "conftest.py").write_text(INNER_CONFTEST)
    (root / "test_replay.py").write_text(INNER_TESTS)
    (root / "prompts.json").write_text(json.dumps({"system": SYSTEM, "user": prompts(n)}))
    (root / "warmup.json").write_bytes(warmup_body())


def our_cassette(root: Path) -> Path:
    return root / "promptcache_cassettes" / "test_replay" / "test_promptcache.yaml"


def vcr_cassette(root: Path) -> Path:
    return root / "cassettes" / "test_replay" / "test_vcr.yaml"


def _absolute_pythonpath() -> dict[str, str]:
    """PYTHONPATH with absolute entries: the inner runs work in another folder."""
    entries = [e for e in os.environ.get("PYTHONPATH", "").split(os.pathsep) if e]
    return {"PYTHONPATH": os.pathsep.join(str(Path(e).resolve()) for e in entries)} if entries else {}


def run_inner(root: Path, test: str, flags: list[str], env: dict[str, str]) -> float:
    """One ``python -m pytest`` run of one inner test (its wall time); output is shown only on failure."""
    started = time.perf_counter()
    command = [sys.executable, "-m", "pytest", "-q", "-x", f"test_replay.py::{test}", *flags]
    done = subprocess.run(
        command,
        cwd=root,
        env={**os.environ, **_absolute_pythonpath(), **env},
        capture_output=True,
        text=True,
        timeout=INNER_TIMEOUT,
        check=False,
    )
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-40:])
        raise RuntimeError(f"inner run {' '.join(command[3:])} failed ({done.returncode}):\n{tail}")
    return time.perf_counter() - started


def write_floor_bodies(root: Path, questions: list[str]) -> None:
    """The exact bytes this plugin replays for each call (``orjson.dumps`` of the recorded body), in order."""
    doc = load_cassette(our_cassette(root))
    if doc is None:
        raise RuntimeError(f"{our_cassette(root)} was not recorded")
    by_question = {rec["request"]["messages"][-1]["content"]: rec["response"] for rec in doc["recordings"]}
    bodies = [orjson.dumps(by_question[q]).decode() for q in questions]
    (root / "floor_bodies.json").write_text(json.dumps(bodies))


# --- measuring -------------------------------------------------------------------------------------


def vcr_missing() -> str | None:
    """Why the vcrpy rows cannot run here, or None when vcrpy and pytest-recording are importable."""
    missing = [name for name in ("vcr", "pytest_recording") if importlib.util.find_spec(name) is None]
    if missing:
        return f"{' and '.join(missing)} not installed (pip install vcrpy pytest-recording)"
    return None


def replay(root: Path, test: str, flags: list[str], base_url: str, profile: Path | None = None) -> Run:
    out = root / f"timings-{test}.json"
    env = {"PCB_BASE_URL": base_url, "PCB_BLOCK_NETWORK": "1", "PCB_OUT": str(out)}
    if profile is not None:
        env["PCB_PROFILE"] = str(profile)
    wall = run_inner(root, test, flags, env)
    if (root / "connects.log").exists():
        raise RuntimeError(f"{test} tried the network during replay: {(root / 'connects.log').read_text()}")
    samples: list[float] = json.loads(out.read_text())["samples"]
    return Run(samples, wall)


def load_ms(load: Any, path: Path) -> float:  # noqa: ANN401 - a loader from either library
    """Median wall time of ``load(path)`` over a few runs, in milliseconds."""
    times = []
    for _ in range(LOAD_REPEATS):
        started = time.perf_counter()
        load(path)
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e3


def vcr_loader() -> Any:  # noqa: ANN401 - vcrpy is untyped and optional
    persister = importlib.import_module("vcr.persisters.filesystem").FilesystemPersister
    serializer = importlib.import_module("vcr.serializers.yamlserializer")
    return lambda path: persister.load_cassette(path, serializer=serializer)


def fast_loopback_server() -> None:
    """Send the fake server's replies with TCP_NODELAY (recording only; replays never touch the network).

    ``FakeLLM`` writes the status line + headers and the body in two sends; with Nagle's algorithm on,
    the body waits for the client's delayed ACK, about 40 ms per call, which made recording 1,000 calls
    take ~45 s per tool. ``disable_nagle_algorithm`` is socketserver's own switch for this.
    """
    fake_llm._Handler.disable_nagle_algorithm = True  # noqa: SLF001 - the benchmark's own server only


def measure_size(work: Path, n: int, repeats: int, *, with_vcr: bool, profile: Path | None) -> SizeResult:
    root = work / f"n{n}"
    write_project(root, n)
    walls: dict[str, float] = {}
    fast_loopback_server()
    with FakeLLM() as server:
        base_url = server.base_url
        env = {"PCB_BASE_URL": base_url}
        walls["record promptcache"] = run_inner(root, "test_promptcache", ["--promptcache=auto"], env)
        if server.calls != n:
            raise RuntimeError(f"promptcache recorded {server.calls} upstream calls, expected {n}")
        vcr_failure = None
        if with_vcr:
            try:
                walls["record vcrpy"] = run_inner(root, "test_vcr", [], env)
            except RuntimeError as exc:  # vcrpy is the other tool: its failure is reported, not fatal
                vcr_failure, with_vcr = f"recording failed: {exc}", False
    write_floor_bodies(root, prompts(n))

    # The server is stopped from here on. Rows alternate so that drift hits each alike.
    pooled: dict[str, list[float]] = {"floor": [], "promptcache": [], "vcrpy": []}
    for rep in range(repeats):
        for name, test, flags in (
            ("floor", "test_floor", []),
            ("promptcache", "test_promptcache", ["--promptcache=replay"]),
            ("vcrpy", "test_vcr", []),
        ):
            if name == "vcrpy" and (not with_vcr or rep > 0):  # vcrpy is slow enough that one run is plenty
                continue
            try:
                run = replay(root, test, flags, base_url)
            except RuntimeError as exc:
                if name != "vcrpy":
                    raise
                vcr_failure, with_vcr = f"replay failed: {exc}", False
                (root / "connects.log").unlink(missing_ok=True)  # vcrpy's miss, not the next row's
                continue
            pooled[name] += run.samples
            walls[f"replay {name}"] = walls.get(f"replay {name}", 0.0) + run.wall
    if profile is not None:  # a separate run: the profiler's overhead stays out of the figures above
        replay(root, "test_promptcache", ["--promptcache=replay"], base_url, profile)
    rows = {name: Row(samples) for name, samples in pooled.items() if samples}

    loads = {"promptcache": load_ms(load_cassette, our_cassette(root))}
    files = {"promptcache": our_cassette(root).stat().st_size / 1024}
    if with_vcr:
        loads["vcrpy"] = load_ms(vcr_loader(), vcr_cassette(root))
        files["vcrpy"] = vcr_cassette(root).stat().st_size / 1024
    return SizeResult(n, rows, loads, files, walls, vcr_failure)


# --- reporting -------------------------------------------------------------------------------------


def versions() -> str:
    parts = [f"Python {sys.version.split()[0]}", f"openai {openai.__version__}"]
    for dist in ("httpx2", "pytest", "vcrpy", "pytest-recording", "PyYAML"):
        try:
            parts.append(f"{dist} {importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            parts.append(f"{dist} (not installed)")
    return ", ".join(parts)


def print_size(result: SizeResult) -> None:
    floor = result.rows["floor"]
    print(f"\n{result.n} recorded chat completions, replayed in order (per call)")
    print(
        f"  {'row':<14}{'calls':>7}{'p50 µs':>10}{'mean µs':>10}{'p90 µs':>10}"
        f"{'p50/floor':>11}{'mean/floor':>12}"
    )
    for name, row in result.rows.items():
        print(
            f"  {name:<14}{len(row.samples):>7}{row.p50_us:>10.1f}{row.mean_us:>10.1f}{row.p90_us:>10.1f}"
            f"{row.p50_us / floor.p50_us:>10.2f}x{row.mean_us / floor.mean_us:>11.2f}x"
        )
    ours = result.rows["promptcache"]
    print(f"  promptcache adds {ours.p50_us - floor.p50_us:.1f} µs per call over the floor (p50)")
    vcr = result.rows.get("vcrpy")
    if vcr is not None:
        print(f"  vcrpy / promptcache per call: {vcr.p50_us / ours.p50_us:.1f}x (p50)")
    print("  cassette load, file to replayable data (median of 5):")
    for name, ms in result.loads_ms.items():
        print(f"    {name:<12}{ms:>9.1f} ms   {result.files_kb[name]:>8.0f} KiB")
    if "vcrpy" in result.loads_ms:
        ratio = result.loads_ms["vcrpy"] / result.loads_ms["promptcache"]
        print(f"    vcrpy / promptcache load: {ratio:.2f}x")
    walls = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in result.walls.items())
    print(f"  wall time of the inner pytest runs (start-up included): {walls}")
    if result.vcr_failure:
        print(f"  vcrpy could not be measured at {result.n} recordings: {result.vcr_failure}")


def print_verdicts(results: list[SizeResult]) -> None:
    small, large = results[0], results[-1]
    print(f"\nAims (largest cassette, {large.n} recordings)")
    ours = large.rows["promptcache"]
    ratio = ours.p50_us / large.rows["floor"].p50_us
    verdict = "met" if ratio <= AIM_FLOOR_RATIO else "NOT met"
    print(f"  promptcache / floor p50 {ratio:.2f}x (aim <= {AIM_FLOOR_RATIO:.2f}x): {verdict}")
    vcr = large.rows.get("vcrpy")
    if vcr is not None:
        speedup = vcr.p50_us / ours.p50_us
        verdict = "met" if speedup >= AIM_VS_VCR else "NOT met"
        print(f"  vcrpy / promptcache p50 {speedup:.1f}x (aim >= {AIM_VS_VCR:.0f}x): {verdict}")
    if len(results) > 1:
        for name in ("floor", "promptcache", "vcrpy"):
            if name in small.rows and name in large.rows:
                growth = large.rows[name].p50_us / small.rows[name].p50_us
                print(f"  {name:<12} p50 per call at {large.n} / at {small.n} recordings: {growth:.2f}x")
        added = [r.rows["promptcache"].p50_us - r.rows["floor"].p50_us for r in results]
        steps = ", ".join(f"{us:.1f} µs at {r.n}" for us, r in zip(added, results, strict=True))
        verdict = "met" if added[-1] - added[0] <= AIM_FLAT_US else "NOT met"
        print(f"  promptcache added time per call (p50 over the floor): {steps}")
        print(
            f"  promptcache flat as the cassette grows (added time grows <= {AIM_FLAT_US:.0f} µs): {verdict}"
        )


def print_profile(path: Path, n: int) -> None:
    print(
        f"\ncProfile of a separate promptcache replay run ({n} calls); the SDK's own work is the floor's too."
    )
    stats = pstats.Stats(str(path), stream=sys.stdout)
    print("Top 15 by own time:")
    stats.strip_dirs().sort_stats(pstats.SortKey.TIME).print_stats(15)
    print("promptcache's part of each call, by cumulative time:")
    ours = pstats.Stats(str(path), stream=sys.stdout)  # full paths kept, to select promptcache's functions
    ours.sort_stats(pstats.SortKey.CUMULATIVE).print_stats(r"promptcache/", 12)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--sizes", default="200,1000", help="cassette sizes (comma-separated)")
    parser.add_argument(
        "--repeats", type=int, default=3, help="replay runs of the floor and promptcache rows"
    )
    parser.add_argument("--profile", action="store_true", help="cProfile promptcache's largest replay run")
    parser.add_argument("--keep", type=Path, default=None, help="write the inner projects here and keep them")
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    started = time.monotonic()

    why_not_vcr = vcr_missing()
    print(versions())
    print(
        "Rows: openai.OpenAI(max_retries=0, http_client=httpx2.Client()) making the same N "
        "chat.completions.create calls,\n"
        "  floor       = that client over httpx2.MockTransport returning the bytes promptcache replays\n"
        "  promptcache = pytest --promptcache=replay (YAML cassette, keyed by the production cache key)\n"
        f"  vcrpy       = pytest-recording @pytest.mark.vcr(record_mode='once', match_on={MATCH_ON},\n"
        "                filter_headers=['authorization']); vcrpy patches httpx2's transports itself\n"
        f"floor and promptcache rows pool {args.repeats} replay runs each, vcrpy one. Cassette load: "
        "promptcache._cassette.load_cassette vs\n"
        "  vcr FilesystemPersister.load_cassette(serializer=yamlserializer): file to replayable data."
    )
    if why_not_vcr:
        print(f"vcrpy could not be measured here: {why_not_vcr}. Only promptcache vs the floor follows.")

    if args.keep is not None and args.keep.exists() and any(args.keep.iterdir()):
        parser.error(f"--keep {args.keep}: the folder exists and is not empty")
    work = args.keep or Path(tempfile.mkdtemp(prefix="promptcache-replay-bench-"))
    results: list[SizeResult] = []
    try:
        for n in sizes:
            profile = work / f"promptcache-{n}.prof" if args.profile and n == sizes[-1] else None
            results.append(measure_size(work, n, args.repeats, with_vcr=why_not_vcr is None, profile=profile))
            print_size(results[-1])
        print_verdicts(results)
        if args.profile:
            print_profile(work / f"promptcache-{sizes[-1]}.prof", sizes[-1])
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\n(total {time.monotonic() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
