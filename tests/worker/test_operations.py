"""Operations end to end: /metrics moving with traffic, /ready, ``callguard lag`` and
``status``, JSON logs without a clear number, and dashboards/alerts naming real metrics.

This module runs its own broker, Redis and worker (group ``callguard-ops``,
JSON logs, samples every half second): stopping that worker and letting
intents pile up must not touch the session's worker or its decisions.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import orjson
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from callguard.core.schema import DECISIONS_TOPIC, INTENTS_TOPIC
from callguard.dev.embedded import Server, start_redis
from callguard.worker.health import ROME, day_start
from tests.conftest import Worker, cli, collect, env_for, produce, start_test_broker, today, write_csv
from tests.paths import ROOT

pytestmark = pytest.mark.e2e

GROUP = "callguard-ops"
# numbers of this module: +39 349 880 00NN
CLEAR, OPPOSED, OLD, CONSENT, DNC = (f"+39349880{n:04d}" for n in range(5))
ALL_NUMBERS = (CLEAR, OPPOSED, OLD, CONSENT, DNC)
#: the client whose own register check of OLD is 20 days old
OLD_CLIENT = "ops-old"


@dataclass
class Stack:
    broker: Server
    redis: Server
    env: dict[str, str]
    worker: Worker

    @property
    def broker_url(self) -> str:
        return self.env["CALLGUARD_BROKER"]

    def get(self, page: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.worker.web_port}/{page}", timeout=5) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def scrape(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        status, body = self.get("metrics")
        assert status == 200
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body.decode())
            for s in family.samples
        }


def value(metrics: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return metrics.get((name, tuple(sorted(labels.items()))), 0.0)


def matching(metrics: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str) -> dict[str, float]:
    return {dict(k[1]).get("partition", dict(k[1]).get("scope", "")): v for k, v in metrics.items() if k[0] == name}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("ops")
    broker = start_test_broker(workdir)
    redis_server = start_redis(workdir)
    env = env_for(
        f"kafka://127.0.0.1:{broker.port}",
        f"redis://127.0.0.1:{redis_server.port}/0",
        CALLGUARD_APP_ID=GROUP,
        CALLGUARD_LOG_FORMAT="json",
        CALLGUARD_METRICS_INTERVAL="0.5",
        CALLGUARD_SESSION_TIMEOUT="4",
    )
    t = date.fromisoformat(today())
    files = {
        "ops": write_csv(workdir / "ops.csv", "operator_id,status,valid_from,valid_until", ["ops-ok,active,2024-01-01,2030-12-31"]),
        "reg": write_csv(workdir / "reg.csv", "number,status,registered_at",
                         [f"{CLEAR},clear,", f"{OPPOSED},opposed,2024-01-01", f"{CONSENT},opposed,2024-01-01", f"{DNC},clear,"]),
        "old": write_csv(workdir / "old.csv", "number,status", [f"{OLD},clear"]),
        "acme": write_csv(workdir / "acme.csv", "number,status", [f"{CLEAR},clear"]),
        "consents": write_csv(workdir / "consents.csv", "callee,client_id,basis,granted_at", [f"{CONSENT},acme,consent,2025-01-01"]),
        "optouts": write_csv(workdir / "optouts.csv", "callee,client_id,at", [f"{DNC},*,2025-01-01"]),
    }  # fmt: skip
    worker = Worker(env, workdir / "worker.log")
    try:
        for argv in (
            ("operators", "load", str(files["ops"])),
            ("register", "load", str(files["reg"]), "--as-of", str(t - timedelta(days=1))),
            # a '*' clear result is nobody's check (a '*' result may only deny): it is
            # still loaded for the '*' scope's ages below, and again for the client
            # of the ops-old intents, whose stale check they are about
            ("register", "load", str(files["old"]), "--as-of", str(t - timedelta(days=20))),
            ("register", "load", str(files["old"]), "--as-of", str(t - timedelta(days=20)), "--client", OLD_CLIENT),
            ("register", "load", str(files["acme"]), "--as-of", str(t), "--client", "acme"),
            ("consents", "load", str(files["consents"])),
            ("optouts", "load", str(files["optouts"])),
        ):
            result = cli(env, *argv)
            assert result.returncode == 0, result.stderr
        worker.start()
        yield Stack(broker, redis_server, env, worker)
    finally:
        worker.stop()
        redis_server.stop()
        broker.stop()


def intent(intent_id: str, callee: str, **extra: Any) -> bytes:
    return orjson.dumps(
        {"intent_id": intent_id, "callee": callee, "operator_id": "ops-ok", "client_id": "acme", **extra}
    )


def wait_for(check: Any, timeout: float, what: str, interval: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


async def test_metrics_move_as_intents_flow(stack: Stack) -> None:
    before = stack.scrape()
    # national written forms too, so the log test below sees them go through the worker
    values = [intent(f"ops-clear-{n}", "349 880 0000" if n % 2 else CLEAR) for n in range(30)]
    values += [intent(f"ops-opposed-{n}", OPPOSED) for n in range(10)]
    values += [intent(f"ops-old-{n}", OLD, client_id=OLD_CLIENT) for n in range(5)]
    values += [b"not json at all " + CLEAR.encode(), orjson.dumps({"intent_id": "ops-bad", "callee": CLEAR})]
    await produce(stack.broker_url, INTENTS_TOPIC, values)
    want = {f"ops-clear-{n}" for n in range(30)} | {f"ops-opposed-{n}" for n in range(10)} | {"ops-bad"}
    found = await collect(stack.broker_url, DECISIONS_TOPIC, want | {f"ops-old-{n}" for n in range(5)})
    assert len(found) == 46, stack.worker.log_tail()

    def moved() -> dict[Any, float] | None:
        after = stack.scrape()
        return (
            after if value(after, "callguard_intents_total") - value(before, "callguard_intents_total") >= 47 else None
        )

    after = wait_for(moved, 10, "the intents counter")

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("callguard_decisions_total", decision="allow") == 30
    assert delta("callguard_decisions_total", decision="deny") == 16
    assert delta("callguard_decision_reasons_total", decision="deny", reason="opposition_register") == 10
    assert delta("callguard_decision_reasons_total", decision="deny", reason="register_stale") == 5
    assert delta("callguard_decision_reasons_total", decision="deny", reason="malformed_intent") == 1
    assert delta("callguard_deadletters_total", source=INTENTS_TOPIC) == 2
    assert delta("callguard_decision_latency_seconds_count") == 47
    assert 0 < delta("callguard_decision_latency_seconds_sum") < 47 * 60
    assert delta("callguard_batch_size_intents_sum") == 47
    assert delta("callguard_batch_size_intents_count") >= 1
    assert delta("callguard_redis_lookup_seconds_count") >= 1
    assert value(after, "callguard_redis_errors_total", operation="lookup") == 0

    # the gauges follow the sampling timer, which may not have run yet on a fast start
    def sampled() -> dict[Any, float] | None:
        scraped = stack.scrape()
        return scraped if value(scraped, "callguard_ready") == 1 else None

    after = wait_for(sampled, 10, "the ready gauge")
    assert value(after, "callguard_register_max_age_seconds") == 15 * 86400

    # register age per scope: the oldest check in use of '*' is 20 days old, acme's is today's
    t = date.fromisoformat(today())
    now = datetime.now(ROME)
    ages = matching(after, "callguard_register_age_seconds")
    assert abs(ages["*"] - (now - day_start(t - timedelta(days=20))).total_seconds()) < 60
    assert abs(ages["acme"] - (now - day_start(t)).total_seconds()) < 60
    assert matching(after, "callguard_register_newest_age_seconds")["*"] < ages["*"]
    assert matching(after, "callguard_register_numbers") == {"*": 5, "acme": 1, OLD_CLIENT: 1}

    # lag per partition: every partition assigned to the only worker, drained to 0
    def drained() -> dict[Any, float] | None:
        now_metrics = stack.scrape()
        lag = matching(now_metrics, "callguard_consumer_lag_offsets")
        return now_metrics if len(lag) == 6 and sum(lag.values()) == 0 else None

    drained_metrics = wait_for(drained, 20, "lag 0 on 6 partitions")
    assert sum(matching(drained_metrics, "callguard_consumer_committed_offset").values()) >= 47
    assert set(matching(drained_metrics, "callguard_consumer_lag_seconds").values()) == {0.0}


def test_ready_says_ready_with_every_check(stack: Stack) -> None:
    status, body = stack.get("ready")
    ready = orjson.loads(body)
    assert status == 200, ready
    assert ready["status"] == "ready" and ready["problems"] == []
    checks = ready["checks"]
    assert set(checks) == {"consuming", "redis", "register", "policy"}
    assert checks["consuming"]["assigned_partitions"] == [0, 1, 2, 3, 4, 5]
    assert checks["policy"]["operators"] == 1 and checks["policy"]["version"]
    star = checks["register"]["scopes"]["*"]
    assert star["oldest_age_days"] == 20 and star["newest_age_days"] == 1 and star["stale_numbers_possible"] is True
    status, body = stack.get("health")
    assert status == 200 and orjson.loads(body)["status"] == "ok"


def test_status_prints_data_workers_and_lag(stack: Stack) -> None:
    result = cli(stack.env, "status")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    t = date.fromisoformat(today())
    assert "operators: 1 (version" in out
    assert f"register for every client: 5 numbers, newest as of {t - timedelta(days=1)} (1 days old)" in out
    assert f"oldest still in use as of {t - timedelta(days=20)} (20 days old) (older than the maximum" in out
    assert f"register for client acme: 1 numbers, newest as of {t}" in out
    assert "consents: 1, contracts: 0, call requests: 0, opt-outs: 1" in out
    assert f"workers: group {GROUP}" in out and "on 6 partitions" in out
    assert "data: ok" in out


def lag_samples(env: dict[str, str], *argv: str) -> list[dict[str, Any]]:
    result = cli(env, "lag", "--json", *argv)
    assert result.returncode == 0, result.stderr
    return [orjson.loads(line) for line in result.stdout.splitlines() if line.strip()]


def total(sample: dict[str, Any]) -> int:
    return sum(p["lag"] for p in sample["partitions"])


async def test_lag_grows_while_the_worker_is_stopped_and_recovers(stack: Stack) -> None:
    samples = lag_samples(stack.env, "--samples", "1")
    assert samples[0]["status"] == "OK" and total(samples[0]) == 0
    assert [p["partition"] for p in samples[0]["partitions"]] == list(range(6))

    stack.worker.stop()
    stop = asyncio.Event()

    async def dial() -> int:
        sent = 0
        while not stop.is_set():
            await produce(stack.broker_url, INTENTS_TOPIC, [intent(f"ops-lag-{sent + n}", CLEAR) for n in range(12)])
            sent += 12
            await asyncio.sleep(0.3)
        return sent

    dialer = asyncio.create_task(dial())
    try:
        await asyncio.sleep(1.0)
        samples = await asyncio.to_thread(lag_samples, stack.env, "--samples", "4", "--interval", "0.7")
        assert total(samples[-1]) > total(samples[0]) > 0, samples
        assert samples[-1]["status"] in ("STALL", "STOP"), samples[-1]
        lagging = [p for p in samples[-1]["partitions"] if p["lag"]]
        assert lagging and all(p["status"] in ("STALL", "STOP") for p in lagging)
        assert max(p["lag_seconds"] for p in lagging) >= 1.0
        table = cli(stack.env, "lag", "--samples", "2", "--interval", "0.2")
        assert table.returncode == 0 and f"group {GROUP}:" in table.stdout
        assert "STALL" in table.stdout or "STOP" in table.stdout
    finally:
        stop.set()
        sent = await dialer
    assert sent > 0

    stack.worker.start()

    def caught_up() -> dict[str, Any] | None:
        sample = lag_samples(stack.env, "--samples", "1")[-1]
        return sample if sample["status"] == "OK" and total(sample) == 0 else None

    recovered = await asyncio.to_thread(wait_for, caught_up, 60, "lag back to 0 and OK", 1.0)
    assert all(p["status"] == "OK" and p["lag_seconds"] == 0 for p in recovered["partitions"])


def test_dashboards_and_alerts_name_only_exported_metrics(stack: Stack) -> None:
    """Every ``callguard_*`` series a rule or panel queries is one the worker exports."""
    _, body = stack.get("metrics")
    exported: set[str] = set()
    for family in text_string_to_metric_families(body.decode()):
        suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}.get(family.type, ("",))
        exported |= {family.name + suffix for suffix in suffixes}
    queries: list[str] = []
    rules = yaml.safe_load((ROOT / "deploy" / "prometheus" / "alerts.yml").read_text())
    queries += [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    dashboard = orjson.loads((ROOT / "deploy" / "grafana" / "dashboards" / "callguard.json").read_bytes())
    queries += [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    assert len(queries) >= 10
    named = {name for query in queries for name in re.findall(r"\bcallguard_[a-z_]+\b", query)}
    assert named, "no callguard metric in the rules and dashboards?"
    assert named <= exported, f"not exported by the worker: {sorted(named - exported)}"


def test_logs_are_json_lines_without_a_clear_number(stack: Stack) -> None:
    lines = [line for line in stack.worker.log_path.read_text().splitlines() if line.strip()]
    assert len(lines) > 20
    events = set()
    for line in lines:
        record = orjson.loads(line)  # every line: JSON
        assert {"ts", "level", "logger", "msg"} <= record.keys()
        events.add(record.get("event"))
        for number in ALL_NUMBERS:
            national = number[3:]
            spaced = f"{national[:3]} {national[3:6]} {national[6:]}"
            for form in (number, number[1:], national, spaced):
                assert form not in line, f"clear number in a log line: {line}"
    assert {"worker_starting", "partitions_assigned", "ready"} <= events


def test_lag_with_no_broker_is_one_line(stack: Stack) -> None:
    result = cli({**stack.env, "CALLGUARD_BROKER": "kafka://127.0.0.1:1"}, "lag", "--samples", "1")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"callguard: cannot read the lag of group {GROUP}"), result.stderr


def test_ready_says_what_is_wrong_when_redis_is_gone(stack: Stack) -> None:
    """Last in the module: it stops this module's Redis."""
    stack.redis.stop()
    with contextlib.suppress(AssertionError):
        wait_for(lambda: stack.get("ready")[0] == 503, 10, "503")
    status, body = stack.get("ready")
    ready = orjson.loads(body)
    assert status == 503 and ready["status"] == "not_ready"
    assert ready["checks"]["redis"]["ok"] is False
    assert any(problem.startswith("redis: not answering") for problem in ready["problems"])
