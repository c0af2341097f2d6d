"""Operations pieces without a broker: lag status rules, log scrubbing, metrics, readiness rules."""

from __future__ import annotations

import io
import logging
from datetime import UTC, date, datetime

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from callguard.kafka.lag import PartitionLag, overall, status
from callguard.logs import JsonFormatter, TextFormatter, scrub
from callguard.worker.health import DataState, ScopeState, data_checks
from callguard.worker.metrics import Metrics


def window(*points: tuple[int | None, int]) -> list[PartitionLag]:
    """(committed, end) observations, one second apart."""
    return [
        PartitionLag("t", 0, committed, end, 0, end - (committed or 0), None, float(n))
        for n, (committed, end) in enumerate(points)
    ]


@pytest.mark.parametrize(
    ("points", "state", "members", "expected"),
    [
        ([(10, 10), (10, 15), (15, 20)], "Stable", 1, "OK"),  # lag was 0 in the window
        ([(10, 12), (14, 16), (18, 19)], "Stable", 1, "OK"),  # committing, lag not growing
        ([(10, 12), (11, 15), (12, 19)], "Stable", 1, "WARN"),  # committing, lag growing every time
        ([(10, 12), (10, 15), (10, 19)], "Stable", 2, "STALL"),  # members present, offsets stuck
        ([(10, 12), (10, 15), (10, 19)], "Empty", 0, "STOP"),  # nobody left in the group
        ([(None, 3), (None, 5)], "unknown", None, "STALL"),  # never committed, intents waiting
        ([(10, 12)], "Stable", 1, "OK"),  # one observation judges nothing
    ],
)
def test_burrow_style_status(points, state, members, expected) -> None:
    assert status(window(*points), state, members) == expected


def test_overall_is_the_worst_partition() -> None:
    assert overall([{"status": "OK"}, {"status": "STALL"}, {"status": "WARN"}]) == "STALL"
    assert overall([]) == "OK"


@pytest.mark.parametrize(
    "text",
    ["+393475555555", "393475555555", "+39 347 555 5555", "0039 347 5555555", "347-5555555", "(06) 2222 3333"],
)
def test_scrub_masks_every_written_form(text: str) -> None:
    scrubbed = scrub(f"callee {text} denied")
    digits = "".join(c for c in text if c.isdigit())
    assert digits not in "".join(c for c in scrubbed if c.isdigit()), scrubbed
    assert "*" in scrubbed


def test_scrub_keeps_dates_times_and_small_numbers() -> None:
    text = "as of 2026-11-20 10:15:00, partition 3 offset 981, 2,000 intents in 0.25s"
    assert scrub(text) == text


def test_scrub_masks_like_mask() -> None:
    assert scrub("x +393475555555 y") == "x +39347*****55 y"


def _record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("callguard.test", logging.WARNING, __file__, 1, message, args, None)
    record.__dict__.update(extra)
    return record


def test_json_lines_carry_event_and_mask_numbers() -> None:
    line = JsonFormatter().format(_record("opt-out for %s", "+393475555555", event="optout", partitions=[1, 2]))
    record = orjson.loads(line)
    assert record["msg"] == "opt-out for +39347*****55"
    assert record["level"] == "warning" and record["logger"] == "callguard.test"
    assert record["event"] == "optout" and record["partitions"] == [1, 2]
    assert record["ts"].endswith("Z")


def test_text_lines_mask_numbers_and_tracebacks() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(TextFormatter())
    log = logging.getLogger("callguard.test.text")
    log.addHandler(handler)
    try:
        try:
            raise ValueError("bad callee +393475555555")
        except ValueError:
            log.exception("failed on %s", "0039 347 555 5555")
    finally:
        log.removeHandler(handler)
    out = stream.getvalue()
    assert "3475555555" not in out.replace(" ", "") and "+39347*****55" in out


def test_metrics_count_a_batch_at_a_time() -> None:
    metrics = Metrics(process=False)
    outcomes = {(True, ()): 3, (False, ("opposition_register", "register_stale")): 2, (False, ("not_checked",)): 1}
    metrics.batch_decided(7, outcomes, [0.001, 0.02, 0.02, 0.3, 2.0, 400.0])
    metrics.deadlettered("callguard.intents")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(metrics.exposition().decode())
        for s in family.samples
    }
    assert samples[("callguard_intents_total", ())] == 7
    assert samples[("callguard_decisions_total", (("decision", "allow"),))] == 3
    assert samples[("callguard_decisions_total", (("decision", "deny"),))] == 3
    assert samples[("callguard_decision_reasons_total", (("decision", "deny"), ("reason", "register_stale")))] == 2
    assert samples[("callguard_decision_latency_seconds_count", ())] == 6
    assert samples[("callguard_decision_latency_seconds_bucket", (("le", "0.005"),))] == 1
    assert samples[("callguard_decision_latency_seconds_bucket", (("le", "0.025"),))] == 3
    assert samples[("callguard_decision_latency_seconds_bucket", (("le", "300.0"),))] == 5
    assert samples[("callguard_decision_latency_seconds_bucket", (("le", "+Inf"),))] == 6
    assert samples[("callguard_batch_size_intents_sum", ())] == 7
    assert samples[("callguard_deadletters_total", (("source", "callguard.intents"),))] == 1
    assert metrics.totals.decisions == 6 and metrics.totals.reasons["opposition_register"] == 2


def test_lag_series_of_partitions_no_longer_assigned_disappear() -> None:
    metrics = Metrics(process=False)
    metrics.set_lag([("callguard.intents", 0, 10, 8, 2, 1.5), ("callguard.intents", 1, 5, None, 5, None)])
    text = metrics.exposition().decode()
    assert 'callguard_consumer_lag_offsets{partition="1",topic="callguard.intents"} 5.0' in text
    metrics.set_lag([("callguard.intents", 0, 10, 10, 0, 0.0)])
    text = metrics.exposition().decode()
    assert 'partition="1"' not in text
    assert 'callguard_consumer_lag_seconds{partition="0",topic="callguard.intents"} 0.0' in text


NOW = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("scopes", "operators", "problem"),
    [
        ((), 3, "register: no results loaded"),
        (
            (ScopeState("*", 10, date(2026, 11, 1), date(2026, 11, 10)),),
            3,
            "register: the newest result is 18 days old",
        ),
        ((ScopeState("*", 10, date(2026, 11, 1), date(2026, 11, 27)),), 0, "policy: no operators loaded"),
    ],
)
def test_readiness_names_the_problem(scopes, operators, problem) -> None:
    data = DataState(operators, "v1" if operators else None, scopes, (), {"consents": 0, "contracts": 0, "optouts": 0})
    checks, problems = data_checks(data, 15, NOW)
    assert any(p.startswith(problem) for p in problems), problems
    assert not all(check["ok"] for check in checks.values())


def test_readiness_ok_with_fresh_data_even_if_some_numbers_are_old() -> None:
    scope = ScopeState("*", 10, date(2026, 10, 1), date(2026, 11, 27))
    data = DataState(3, "v1", (scope,), (), {"consents": 0, "contracts": 0, "optouts": 0})
    checks, problems = data_checks(data, 15, NOW)
    assert problems == [] and all(check["ok"] for check in checks.values())
    assert checks["register"]["scopes"]["*"]["stale_numbers_possible"] is True
