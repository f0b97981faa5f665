"""Instrumentation: a hook Protocol fed frozen event records, and two hooks that count them.

A :class:`~promptcache.PromptCache` built with ``hooks=[...]`` calls each hook with one frozen record
for every request it answers (:class:`RequestEvent`: a hit, a miss or a bypass, exactly one per request,
so hit accounting never double-counts), every store call (:class:`StoreEvent`) and every circuit-breaker
transition (:class:`BreakerEvent`). With no hooks nothing is built: the hit path pays one truth test.

Two hooks ship here:

- :class:`MetricsRecorder` keeps in-process totals by agent and model, money included (the demo and
  tests use it; so can a health endpoint).
- :class:`PrometheusHook` feeds ``prometheus-client`` counters and histograms (``pip install
  promptcache[prometheus]``); :func:`start_exporter` serves them over HTTP. Metric names::

      promptcache_requests_total{agent,model,result}            result: hit | miss | bypass
      promptcache_tier_hits_total{agent,model}                  hits served from the hot tier
      promptcache_tokens_saved_total{agent,model,token_type}    token_type: input | output
      promptcache_cost_saved_usd_total{agent,model}             priced by a PriceTable
      promptcache_unpriced_hits_total{agent,model}              hits whose model has no price
      promptcache_latency_saved_seconds_total{agent,model}      upstream time the hits did not spend
      promptcache_store_latency_seconds{operation}              histogram of store call durations
      promptcache_store_errors_total{operation,outcome}         outcome: error | timeout | skipped
      promptcache_breaker_state{namespace,state}                1 for the current state, else 0

Label sets are bounded: an ``agent`` or ``model`` outside the hook's allow-list is reported as
``other`` (:data:`OTHER`). By default the models are those of the hook's price table (a dated snapshot
of a priced model counts as listed) and the agents are those configured in code: the ``agent_id`` given
to ``wrap()`` or ``CachedAgent`` in this process (:func:`declare_agent`), never one a request header
chose. Pass ``models=`` / ``agents=`` to list them yourself.

Several worker processes (uvicorn/gunicorn workers): every process counts its own requests. Either
scrape each worker and add them up (``promptcache stats --metrics URL --metrics URL``), or use
``prometheus_client``'s multiprocess mode: set ``PROMETHEUS_MULTIPROC_DIR`` to an empty directory shared
by the workers before they start, and serve :func:`multiprocess_registry` from one exporter; the
breaker gauge then carries a ``pid`` label, one series per worker.

A hook that raises is logged (once) and otherwise ignored: metrics never break an answer.
"""

from __future__ import annotations

import importlib
import threading
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from promptcache._events import (
    UNKNOWN,
    BreakerEvent,
    CacheEvent,
    Hook,
    RequestEvent,
    Result,
    StoreEvent,
    configured_agents,
    declare_agent,
)
from promptcache._prices import PRICES_AS_OF, ModelPrice, PriceTable

if TYPE_CHECKING:
    from collections.abc import Iterable

    from prometheus_client import CollectorRegistry

__all__ = [
    "OTHER",
    "PRICES_AS_OF",
    "UNKNOWN",
    "BreakerEvent",
    "CacheEvent",
    "Hook",
    "MetricsRecorder",
    "ModelPrice",
    "PriceTable",
    "PrometheusHook",
    "RequestEvent",
    "Result",
    "StoreEvent",
    "UsageRow",
    "declare_agent",
    "multiprocess_registry",
    "render_prometheus",
    "start_exporter",
]

OTHER: Final = "other"
"""The label value of an agent or model outside a :class:`PrometheusHook`'s allow-list."""

STORE_LATENCY_BUCKETS: Final = (
    *(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005),
    *(0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)


@dataclass(slots=True)
class UsageRow:
    """Totals for one (agent, model) pair, as counted by :class:`MetricsRecorder`."""

    hits: int = 0
    misses: int = 0
    bypasses: int = 0
    coalesced: int = 0
    tier_hits: int = 0
    input_tokens_saved: int = 0
    output_tokens_saved: int = 0
    cost_saved: float = 0.0
    unpriced_hits: int = 0
    latency_saved: float = 0.0

    @property
    def requests(self) -> int:
        return self.hits + self.misses + self.bypasses

    @property
    def hit_rate(self) -> float:
        """Hits over lookups (hits + misses), 0.0 before the first lookup."""
        lookups = self.hits + self.misses
        return self.hits / lookups if lookups else 0.0

    @property
    def tokens_saved(self) -> int:
        return self.input_tokens_saved + self.output_tokens_saved

    def add(self, other: UsageRow) -> None:
        for name in self.__slots__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


class MetricsRecorder:
    """A hook that keeps in-process totals by ``(agent, model)``, money included.

    Args:
        prices: Turns saved tokens into dollars; :class:`~promptcache.PriceTable` defaults if None.

    .. versionadded:: 0.1.0
    """

    def __init__(self, prices: PriceTable | None = None) -> None:
        self.prices = prices if prices is not None else PriceTable()
        self.rows: dict[tuple[str, str], UsageRow] = {}
        self.store_errors = 0
        self.breaker_state = "closed"

    def __call__(self, event: CacheEvent) -> None:
        if isinstance(event, RequestEvent):
            key = (event.agent_id or UNKNOWN, event.model or UNKNOWN)
            row = self.rows.get(key)
            if row is None:
                row = self.rows[key] = UsageRow()
            if event.result is Result.HIT:
                row.hits += 1
                row.coalesced += event.coalesced
                row.tier_hits += event.tier
                row.input_tokens_saved += event.input_tokens
                row.output_tokens_saved += event.output_tokens
                row.latency_saved += event.latency_saved
                cost = self.prices.cost(event.model, event.input_tokens, event.output_tokens)
                if cost is None:
                    row.unpriced_hits += 1
                else:
                    row.cost_saved += cost
            elif event.result is Result.MISS:
                row.misses += 1
            else:
                row.bypasses += 1
        elif isinstance(event, StoreEvent):
            self.store_errors += event.outcome in {"error", "timeout"}
        else:
            self.breaker_state = event.new

    def total(self) -> UsageRow:
        """Every row added up."""
        out = UsageRow()
        for row in self.rows.values():
            out.add(row)
        return out


# -- Prometheus ------------------------------------------------------------------------------------


def _prometheus() -> Any:  # noqa: ANN401 - the module, imported on first use only
    try:
        import prometheus_client  # noqa: PLC0415 - optional extra, imported lazily
    except ImportError:
        raise ImportError(
            "Prometheus metrics need prometheus-client: pip install 'promptcache[prometheus]'"
        ) from None
    return prometheus_client


@dataclass(slots=True)
class _PromMetrics:
    requests: Any
    tokens: Any
    cost: Any
    unpriced: Any
    latency_saved: Any
    tier_hits: Any
    store_latency: Any
    store_errors: Any
    breaker: Any
    lock: threading.Lock = field(default_factory=threading.Lock)
    namespaces: set[str] = field(default_factory=set)  # those whose breaker gauge is set

    def set_breaker(self, namespace: str, current: str) -> None:
        with self.lock:  # the three gauges move together
            self.namespaces.add(namespace)
            for state in ("closed", "open", "half_open"):
                self.breaker.labels(namespace, state).set(1 if state == current else 0)


# One metric set per registry, created on first use: two hooks on one registry share the series
# instead of failing with "Duplicated timeseries".
_REGISTRIES: weakref.WeakKeyDictionary[Any, _PromMetrics] = weakref.WeakKeyDictionary()
_REGISTRIES_LOCK = threading.Lock()


def _metrics_for(registry: Any) -> _PromMetrics:  # noqa: ANN401
    with _REGISTRIES_LOCK:
        found = _REGISTRIES.get(registry)
        if found is not None:
            return found
        prom = _prometheus()
        agent_model = ("agent", "model")
        metrics = _PromMetrics(
            requests=prom.Counter(
                "promptcache_requests", "Requests answered, by result.", (*agent_model, "result"),
                registry=registry,
            ),
            tokens=prom.Counter(
                "promptcache_tokens_saved", "Tokens cache hits did not spend.", (*agent_model, "token_type"),
                registry=registry,
            ),
            cost=prom.Counter(
                "promptcache_cost_saved_usd", "US dollars cache hits did not spend.", agent_model,
                registry=registry,
            ),
            unpriced=prom.Counter(
                "promptcache_unpriced_hits", "Hits whose model has no price (cost saved unknown).",
                agent_model, registry=registry,
            ),
            latency_saved=prom.Counter(
                "promptcache_latency_saved_seconds", "Upstream seconds cache hits did not wait.",
                agent_model, registry=registry,
            ),
            tier_hits=prom.Counter(
                "promptcache_tier_hits", "Hits served from the in-process hot tier.", agent_model,
                registry=registry,
            ),
            store_latency=prom.Histogram(
                "promptcache_store_latency_seconds", "Store call duration.", ("operation",),
                buckets=STORE_LATENCY_BUCKETS, registry=registry,
            ),
            store_errors=prom.Counter(
                "promptcache_store_errors", "Store calls that failed, timed out or were skipped.",
                ("operation", "outcome"), registry=registry,
            ),
            breaker=prom.Gauge(
                "promptcache_breaker_state", "1 for the store circuit breaker's current state.",
                ("namespace", "state"), registry=registry,
            ),
        )  # fmt: skip
        _REGISTRIES[registry] = metrics
        return metrics


class PrometheusHook:
    """A hook feeding Prometheus counters and histograms (labels ``agent`` and ``model``, bounded).

    Args:
        registry: The ``prometheus_client.CollectorRegistry``; the global default if None.
        prices: Turns saved tokens into dollars; :class:`~promptcache.PriceTable` defaults if None.
        models: The model names reported by name; others are ``other``. None (the default): every model
            the price table prices.
        agents: The agent ids reported by name; others are ``other``. None (the default): the agents
            configured in code in this process (``wrap()``, ``CachedAgent``, :func:`declare_agent`),
            looked up when an event arrives, so a client wrapped after the hook was made counts too.

    Raises:
        ImportError: prometheus-client is not installed (the message names the extra).

    Example::

        hook = PrometheusHook()
        cache = PromptCache.from_url("redis://localhost:6379/0", hooks=[hook])
        start_exporter(9464)  # http://localhost:9464/metrics

    .. versionadded:: 0.1.0
    .. versionchanged:: 0.3.0 ``models``, ``agents``: bounded label sets; the breaker gauge's ``namespace``.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        prices: PriceTable | None = None,
        *,
        models: Iterable[str] | None = None,
        agents: Iterable[str] | None = None,
    ) -> None:
        prom = _prometheus()
        self.registry = registry if registry is not None else prom.REGISTRY
        self.prices = prices if prices is not None else PriceTable()
        self.models = None if models is None else frozenset(models)
        self.agents = None if agents is None else frozenset(agents)
        self._metrics: _PromMetrics | None = None

    def _labels(self, event: RequestEvent) -> tuple[str, str]:
        agent, model = event.agent_id, event.model
        allowed = configured_agents() if self.agents is None else self.agents
        agent_label = UNKNOWN if agent is None else agent if agent in allowed else OTHER
        if model is None:
            return agent_label, UNKNOWN
        listed = model in self.prices if self.models is None else model in self.models
        return agent_label, model if listed else OTHER

    def __call__(self, event: CacheEvent) -> None:
        m = self._metrics
        if m is None:
            m = self._metrics = _metrics_for(self.registry)
        if event.namespace not in m.namespaces:
            m.set_breaker(event.namespace, "closed")  # a namespace's first event: its breaker is closed
        if isinstance(event, RequestEvent):
            agent, model = self._labels(event)
            m.requests.labels(agent, model, event.result.value).inc()
            if event.result is not Result.HIT:
                return
            if event.tier:
                m.tier_hits.labels(agent, model).inc()
            m.tokens.labels(agent, model, "input").inc(event.input_tokens)
            m.tokens.labels(agent, model, "output").inc(event.output_tokens)
            m.latency_saved.labels(agent, model).inc(event.latency_saved)
            cost = self.prices.cost(event.model, event.input_tokens, event.output_tokens)
            if cost is None:
                m.unpriced.labels(agent, model).inc()
            else:
                m.cost.labels(agent, model).inc(cost)
        elif isinstance(event, StoreEvent):
            if event.outcome != "skipped":
                m.store_latency.labels(event.operation).observe(event.seconds)
            if event.outcome != "ok":
                m.store_errors.labels(event.operation, event.outcome).inc()
        else:
            m.set_breaker(event.namespace, event.new)


def multiprocess_registry(path: str | None = None) -> CollectorRegistry:
    """A registry that adds up every worker's metrics (``prometheus_client``'s multiprocess mode).

    Every worker must run with ``PROMETHEUS_MULTIPROC_DIR`` set (to one shared, initially empty
    directory) before it imports prometheus-client, and use :class:`PrometheusHook` on the default
    registry; one exporter then serves this registry: ``start_exporter(9464,
    registry=multiprocess_registry())``, or ``render_prometheus(multiprocess_registry())`` in a web
    framework's ``/metrics`` route. ``path`` defaults to ``PROMETHEUS_MULTIPROC_DIR``.

    Raises:
        ImportError: prometheus-client is not installed (the message names the extra).
        ValueError: No directory: neither ``path`` nor ``PROMETHEUS_MULTIPROC_DIR`` is set.
    """
    prom = _prometheus()
    multiprocess: Any = importlib.import_module("prometheus_client.multiprocess")
    registry: CollectorRegistry = prom.CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=path)
    return registry


def render_prometheus(registry: CollectorRegistry | None = None) -> str:
    """The registry's metrics in the Prometheus text exposition format (what ``/metrics`` serves)."""
    prom = _prometheus()
    data: bytes = prom.generate_latest(registry if registry is not None else prom.REGISTRY)
    return data.decode("utf-8")


def start_exporter(
    port: int = 9464, addr: str = "127.0.0.1", registry: CollectorRegistry | None = None
) -> Any:  # noqa: ANN401 - the http.server instance prometheus-client returns
    """Serve ``/metrics`` on ``addr:port`` from a daemon thread; returns the server (``.shutdown()``).

    Port 0 picks a free port: read it from ``server.server_port``. Binds to loopback unless told otherwise.
    """
    prom = _prometheus()
    server, _thread = prom.start_http_server(
        port, addr=addr, registry=registry if registry is not None else prom.REGISTRY
    )
    return server
