"""The worker's metrics, exported on ``/metrics`` in the Prometheus text format.

The hot path counts per batch, never per metric call per event: the guard
tallies a batch in plain dicts and lists and hands them over once
(:meth:`Metrics.batch_decided`), so a batch of 500 intents costs a handful of
counter increments and one bisect per intent for the latency histogram.

Each worker has its own :class:`~prometheus_client.CollectorRegistry` (not the
global one), so tests and benchmarks can build several apps in one process.
Everything here runs on the worker's event loop, the scrape included, so the
batch histograms need no lock.
"""

from __future__ import annotations

import contextlib
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from callguard import __version__

#: Content type of the Prometheus text exposition format (0.0.4).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: Decision latency buckets (seconds): a guard answers within milliseconds,
#: a lagging one within seconds or minutes.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
REDIS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
BATCH_BUCKETS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)

# ``*_created`` series double the series count and no dashboard or alert here uses them
disable_created_metrics()  # type: ignore[no-untyped-call]


class BatchHistogram(Collector):
    """A histogram filled a batch at a time, exposed like any other.

    ``prometheus_client.Histogram.observe`` takes a lock and walks the buckets
    per value; here a batch is bucketed with one C-level bisect per value and
    the counts are added in one go.
    """

    def __init__(self, name: str, documentation: str, buckets: Sequence[float]) -> None:
        self.name = name
        self.documentation = documentation
        self.bounds = list(buckets)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe_many(self, values: Iterable[float]) -> None:
        counts, bounds = self.counts, self.bounds
        total = 0.0
        for value in values:
            counts[bisect_left(bounds, value)] += 1
            total += value
        self.sum += total

    def collect(self) -> Iterable[Metric]:
        cumulative, running = [], 0
        for bound, count in zip([*map(str, self.bounds), "+Inf"], self.counts, strict=True):
            running += count
            cumulative.append((bound, running))
        yield HistogramMetricFamily(self.name, self.documentation, buckets=cumulative, sum_value=self.sum)


@dataclass
class Totals:
    """Plain running totals for ``/health`` and the log summary line."""

    allowed: int = 0
    denied: int = 0
    deadletters: int = 0
    lookup_errors: int = 0
    batches: int = 0
    optouts: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    @property
    def decisions(self) -> int:
        return self.allowed + self.denied


class Metrics:
    """Every metric of one worker, on its own registry."""

    def __init__(self, registry: CollectorRegistry | None = None, process: bool = True) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        self.totals = Totals()
        if process:
            ProcessCollector(registry=r)
            PlatformCollector(registry=r)
        info = Gauge("callguard_build_info", "Always 1; labels say which callguard runs.", ["version"], registry=r)
        info.labels(__version__).set(1)

        self.intents = Counter("callguard_intents", "Messages read from callguard.intents (valid or not).", registry=r)
        self.decisions = Counter("callguard_decisions", "Decisions published, by outcome.", ["decision"], registry=r)
        self.reasons = Counter(
            "callguard_decision_reasons",
            "Reasons carried by published decisions (a deny lists every reason that applies).",
            ["decision", "reason"],
            registry=r,
        )
        self.latency = BatchHistogram(
            "callguard_decision_latency_seconds",
            "Seconds from an intent's record timestamp (set by the dialer's producer) to its decision being "
            "acknowledged by the broker.",
            LATENCY_BUCKETS,
        )
        self.batch_size = BatchHistogram(
            "callguard_batch_size_intents", "Intents decided together (one Redis round trip each).", BATCH_BUCKETS
        )
        r.register(self.latency)
        r.register(self.batch_size)
        self.redis_seconds = Histogram(
            "callguard_redis_lookup_seconds",
            "Seconds of one pipelined Redis lookup round trip (one per batch).",
            buckets=REDIS_BUCKETS,
            registry=r,
        )
        self.redis_errors = Counter(
            "callguard_redis_errors",
            "Redis operations that failed or timed out (lookup: a batch denied lookup_unavailable; "
            "optouts: a retried write).",
            ["operation"],
            registry=r,
        )
        self.deadletters = Counter(
            "callguard_deadletters", "Messages sent to callguard.deadletter, by source topic.", ["source"], registry=r
        )
        self.optouts = Counter("callguard_optouts_applied", "Opt-outs from callguard.optouts written.", registry=r)
        self.check_refusals = Counter(
            "callguard_check_refusals",
            "POST /v1/check requests refused before any intent was published, by HTTP status "
            "(401 no valid token, 403 operator or client not the token's, 429 too many bad tokens, 503 Redis).",
            ["status"],
            registry=r,
        )
        self.consents = Counter(
            "callguard_consents_applied",
            "Consents, contracts and call requests from callguard.consents written.",
            registry=r,
        )
        self.outcomes = Counter(
            "callguard_call_outcomes",
            "Call outcomes from callguard.outcomes applied, per campaign (none: intents without campaign_id). "
            "Silent-call rate (Garante: at most 3 per 100 answered, enforced by campaign_silent_rate): "
            "(silent + abandoned) / answered.",
            ["campaign", "outcome"],
            registry=r,
        )
        self.cap_races = Counter(
            "callguard_frequency_cap_races",
            "Allows decided again because another worker filled the callee's frequency cap meanwhile.",
            registry=r,
        )
        self.publish_errors = Counter(
            "callguard_publish_errors", "Batches whose publication failed and was retried.", registry=r
        )
        self.register_age = Gauge(
            "callguard_register_age_seconds",
            "Seconds since the start (Europe/Rome) of the as-of day of the oldest register result still in use, "
            "per scope (client id, or * for every client).",
            ["scope"],
            registry=r,
        )
        self.register_newest_age = Gauge(
            "callguard_register_newest_age_seconds",
            "Seconds since the start (Europe/Rome) of the as-of day of the newest register load, per scope.",
            ["scope"],
            registry=r,
        )
        self.register_numbers = Gauge(
            "callguard_register_numbers", "Numbers with a register result, per scope.", ["scope"], registry=r
        )
        self.register_max_age = Gauge(
            "callguard_register_max_age_seconds",
            "A register result older than this (the policy's max_age_days) gives register_stale.",
            registry=r,
        )
        self.lag_offsets = Gauge(
            "callguard_consumer_lag_offsets",
            "End offset minus committed offset of the worker group, per partition assigned to this worker.",
            ["topic", "partition"],
            registry=r,
        )
        self.lag_seconds = Gauge(
            "callguard_consumer_lag_seconds",
            "Age of the oldest intent not yet committed (now minus the record timestamp at the committed offset); "
            "0 when there is no lag.",
            ["topic", "partition"],
            registry=r,
        )
        self.end_offset = Gauge(
            "callguard_consumer_end_offset",
            "End (high-water) offset per assigned partition: its rate is the rate intents arrive.",
            ["topic", "partition"],
            registry=r,
        )
        self.committed_offset = Gauge(
            "callguard_consumer_committed_offset",
            "Committed offset of the worker group per assigned partition.",
            ["topic", "partition"],
            registry=r,
        )
        self.assigned = Gauge(
            "callguard_assigned_partitions", "Partitions of callguard.intents assigned to this worker.", registry=r
        )
        self.ready = Gauge("callguard_ready", "1 when /ready answers 200, else 0.", registry=r)
        self._decision_children = {verdict: self.decisions.labels(verdict).inc for verdict in ("allow", "deny")}
        self._reason_children: dict[tuple[str, str], Counter] = {}
        self._lag_labels: set[tuple[str, str]] = set()

    # --- hot path: once per batch ---------------------------------------------

    def batch_decided(
        self, intents: int, outcomes: dict[tuple[bool, tuple[str, ...]], int], latencies: Iterable[float]
    ) -> None:
        """Record one batch: ``outcomes`` maps (allow, reasons) to how many
        decisions had them; ``latencies`` are seconds per decided intent."""
        t = self.totals
        t.batches += 1
        self.intents.inc(intents)
        self.batch_size.observe_many((intents,))
        allowed = denied = 0
        reasons: dict[tuple[str, str], int] = {}
        for (allow, codes), count in outcomes.items():
            verdict = "allow" if allow else "deny"
            if allow:
                allowed += count
            else:
                denied += count
            for code in codes:
                reasons[(verdict, code)] = reasons.get((verdict, code), 0) + count
        if allowed:
            self._decision_children["allow"](allowed)
            t.allowed += allowed
        if denied:
            self._decision_children["deny"](denied)
            t.denied += denied
        for key, count in reasons.items():
            child = self._reason_children.get(key)
            if child is None:
                child = self._reason_children[key] = self.reasons.labels(*key)
            child.inc(count)
            t.reasons[key[1]] = t.reasons.get(key[1], 0) + count
        self.latency.observe_many(latencies)

    def deadlettered(self, source: str, count: int = 1) -> None:
        self.deadletters.labels(source).inc(count)
        self.totals.deadletters += count

    def lookup_failed(self) -> None:
        self.redis_errors.labels("lookup").inc()
        self.totals.lookup_errors += 1

    def optouts_applied(self, count: int) -> None:
        self.optouts.inc(count)
        self.totals.optouts += count

    # --- periodic ------------------------------------------------------------

    def set_lag(self, rows: Iterable[tuple[str, int, int, int | None, int, float | None]]) -> None:
        """Replace the lag series with ``rows`` of (topic, partition, end, committed,
        lag, lag seconds); partitions no longer assigned here lose their series, so
        the group's workers never report one partition twice."""
        seen: set[tuple[str, str]] = set()
        for topic, partition, end, committed, lag, seconds in rows:
            labels = (topic, str(partition))
            seen.add(labels)
            self.end_offset.labels(*labels).set(end)
            self.lag_offsets.labels(*labels).set(lag)
            if committed is not None:
                self.committed_offset.labels(*labels).set(committed)
            if seconds is not None:
                self.lag_seconds.labels(*labels).set(seconds)
        for labels in self._lag_labels - seen:
            for gauge in (self.end_offset, self.committed_offset, self.lag_offsets, self.lag_seconds):
                with contextlib.suppress(KeyError):
                    gauge.remove(*labels)
        self._lag_labels = seen

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
