"""The time callguard's check adds to call setup at the SIP edge.

For each broker of ``--broker`` (Apache Kafka, then Tansu, by default): a fresh
broker and Redis with the data of ``bench/mix.py`` (``--register`` numbers), a
real ``callguard worker`` (the demo policy: every rule runs), a token issued
with ``callguard tokens issue``, a callee that answers every INVITE with 200 at
once (``callguard.client.sip.UserAgent``), and two Kamailios on this machine:

- **with the check**: ``deploy/sip/kamailio.cfg`` as shipped, asking the
  worker's ``POST /v1/check`` before it relays each INVITE;
- **baseline**: the same file with the check's ``route(CALLGUARD)`` replaced by
  the relay it ends in (``record_route``, ``dlg_manage``, ``t_relay`` to the
  carrier): the same Kamailio relaying without asking.

A dialer sends INVITEs at ``--rate`` per second to each proxy, interleaved
(one to each per tick, so both see the same machine), for ``--seconds`` after
``--warmup`` seconds that are not counted, each to a callee number every rule
allows (clear in the register, listed in the public directories, no opt-out,
each number called once, the operator's declared caller ID). Each call is
answered, ACKed and hung up through its proxy. Setup time: from the INVITE
sent to its 200 OK received. Prints p50/p99/p99.9/max for both and the
difference, the time the check adds; the issue's target is a p99 under 50 ms
added on Apache Kafka. Nothing is asserted.

    ./dev bench sip [--rate 50] [--seconds 30] [--warmup 3] [--register 20000] [--children 8] [--broker kafka,tansu]

Needs Debian's kamailio with kamailio-utils-modules and kamailio-json-modules
(``./dev bench sip`` installs them as root), and for Apache Kafka the jars
``./dev`` fetches.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import orjson
from aiokafka import AIOKafkaConsumer
from mix import POLICY, caller_ids, load_data, number

from callguard.client.sip import UserAgent
from callguard.core.schema import DECISIONS_TOPIC
from callguard.dev.embedded import (
    SIP_CONFIG,
    Server,
    free_port,
    kamailio_unavailable,
    start_broker,
    start_kafka,
    start_kamailio,
    start_redis,
    wait_healthy,
)

OPERATOR, CLIENT = "op-0", "acme"
CHECK_CALL = "\troute(CALLGUARD);\n"
RELAY = (
    "\trecord_route();\n\tdlg_manage();\n\t$du = CARRIER;\n\tif (!t_relay()) {\n\t\tsl_reply_error();\n\t}\n\texit;\n"
)


def percentile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(label: str, values: list[float], failed: int) -> str:
    if not values:
        return f"{label:<46} no samples ({failed} failed)"
    ordered = sorted(values)
    return (
        f"{label:<46} p50 {percentile(ordered, 0.5):6.1f}   p99 {percentile(ordered, 0.99):6.1f}   "
        f"p99.9 {percentile(ordered, 0.999):6.1f}   max {ordered[-1]:6.1f} ms   ({len(values)} calls, {failed} failed)"
    )


def allowed_numbers(register: int) -> list[str]:
    """Numbers the demo policy allows for acme: clear (i % 5 != 0), in the
    directories (i % 5 < 3), no opt-out (i % 100 != 7)."""
    return [number(i) for i in range(register) if i % 5 in (1, 2) and i % 100 != 7]


def baseline_config(workdir: Path) -> Path:
    """The shipped configuration relaying every INVITE without asking."""
    text = SIP_CONFIG.read_text()
    if text.count(CHECK_CALL) != 1:
        raise SystemExit(f"{SIP_CONFIG}: expected one {CHECK_CALL.strip()!r} to replace for the baseline")
    path = workdir / "baseline.cfg"
    path.write_text(text.replace(CHECK_CALL, RELAY))
    return path


@dataclass
class Timings:
    setup: dict[str, list[float]] = field(default_factory=lambda: {"baseline": [], "check": []})
    failed: dict[str, int] = field(default_factory=lambda: {"baseline": 0, "check": 0})
    statuses: dict[int, int] = field(default_factory=dict)
    #: per allowed check: intent_id -> (INVITE sent, wall clock; setup ms)
    checks: dict[str, tuple[float, float]] = field(default_factory=dict)
    #: where the checks' time went, ms: INVITE -> decided_at, decided_at -> decision written, written -> 200 OK
    split: dict[str, list[float]] = field(default_factory=dict)


async def steady(
    dialer: UserAgent, proxies: dict[str, tuple[str, int]], numbers: list[str], args: argparse.Namespace
) -> Timings:
    timings = Timings()
    caller = caller_ids(0)[0]
    tasks: list[asyncio.Task[None]] = []

    async def one(name: str, callee: str, counted: bool) -> None:
        headers = (("X-Callguard-Client", CLIENT), ("X-Callguard-Campaign", "bench-sip"))
        sent = time.time()
        result = await dialer.call(proxies[name], callee, caller=caller, headers=headers, timeout=10)
        if not counted:
            return
        if result.status == 200:
            timings.setup[name].append(result.setup_seconds * 1000)
            intent_id = result.header("X-Callguard-Intent")
            if name == "check" and intent_id:
                timings.checks[intent_id] = (sent, result.setup_seconds * 1000)
        else:
            timings.failed[name] += 1
            timings.statuses[result.status] = timings.statuses.get(result.status, 0) + 1

    interval = 1 / args.rate
    total = int((args.warmup + args.seconds) * args.rate)
    warmup = int(args.warmup * args.rate)
    start = time.perf_counter()
    for tick in range(total):
        delay = start + tick * interval - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        for name in ("baseline", "check"):
            tasks.append(asyncio.create_task(one(name, numbers.pop(), tick >= warmup)))
    await asyncio.gather(*tasks)
    return timings


async def split_checks(bootstrap: str, timings: Timings) -> None:
    """Where each allowed check's setup time went, from its decision on the
    topic: INVITE sent -> ``decided_at`` (proxy, HTTP, intent published and
    fetched), ``decided_at`` -> the decision's broker timestamp (the worker:
    lookup, policy, audit, publish), and the rest (the check API reading the
    decision, its HTTP answer, the relay and the callee's 200 OK)."""
    consumer = AIOKafkaConsumer(DECISIONS_TOPIC, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    found: dict[str, tuple[float, float]] = {}
    deadline = time.monotonic() + 30
    try:
        while len(found) < len(timings.checks) and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    intent_id = (record.key or b"").decode()
                    if intent_id in timings.checks:
                        decided = datetime.fromisoformat(orjson.loads(record.value)["decided_at"]).timestamp()
                        found[intent_id] = (decided, record.timestamp / 1000)
    finally:
        await consumer.stop()
    split: dict[str, list[float]] = {"INVITE -> decided_at": [], "decided_at -> written": [], "written -> 200 OK": []}
    for intent_id, (decided, written) in found.items():
        sent, setup = timings.checks[intent_id]
        split["INVITE -> decided_at"].append((decided - sent) * 1000)
        split["decided_at -> written"].append((written - decided) * 1000)
        split["written -> 200 OK"].append(setup - (written - sent) * 1000)
    timings.split = split


def warm_up(web_port: int, token: str, numbers: list[str]) -> tuple[int, float]:
    """HTTP checks one at a time until 20 in a row answered within 100 ms (at most
    300): the endpoint's Kafka client starts at the first check, and a fresh
    worker's first decision on each empty audit partition waits about a second
    (``audit.last_record``). Returns the checks sent and the slowest, in ms."""
    fast, sent, slowest = 0, 0, 0.0
    while fast < 20 and sent < 300:
        body = orjson.dumps({"callee": numbers.pop(), "operator_id": OPERATOR, "client_id": CLIENT})
        request = urllib.request.Request(
            f"http://127.0.0.1:{web_port}/v1/check", data=body, headers={"Authorization": f"Bearer {token}"}
        )
        started = time.perf_counter()
        with urllib.request.urlopen(request, timeout=60) as response:
            response.read()
        took = (time.perf_counter() - started) * 1000
        sent, slowest = sent + 1, max(slowest, took)
        fast = fast + 1 if took < 100 else 0
    return sent, slowest


async def run_broker(kind: str, args: argparse.Namespace, workdir: Path) -> Timings:
    workdir.mkdir()
    broker = start_kafka(workdir) if kind == "kafka" else start_broker(workdir)
    redis_server = start_redis(workdir)
    servers: list[Server] = [broker, redis_server]
    agents: list[UserAgent] = []
    worker: subprocess.Popen[bytes] | None = None
    try:
        redis_url = f"redis://127.0.0.1:{redis_server.port}/0"
        await load_data(redis_url, args.register, datetime.now(ZoneInfo("Europe/Rome")).date())
        port = free_port()
        env = {
            "CALLGUARD_BROKER": f"kafka://127.0.0.1:{broker.port}",
            "CALLGUARD_REDIS_URL": redis_url,
            "CALLGUARD_WEB_PORT": str(port),
            "CALLGUARD_WEB_HOST": "127.0.0.1",
            "CALLGUARD_APP_ID": "bench-sip",
            "CALLGUARD_POLICY": POLICY,
            "CALLGUARD_SESSION_TIMEOUT": "3",
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        }
        issued = subprocess.run(
            [sys.executable, "-m", "callguard", "tokens", "issue", "--operator-id", OPERATOR, "--client-id", CLIENT],
            env=env, capture_output=True, text=True, check=True,
        )  # fmt: skip
        token = issued.stdout.strip()
        with (workdir / "worker.log").open("wb") as log:
            worker = subprocess.Popen([sys.executable, "-m", "callguard", "worker"], env=env, stdout=log, stderr=log)
        wait_healthy(port, worker)
        numbers = allowed_numbers(args.register)
        needed = int((args.warmup + args.seconds) * args.rate) * 2 + 300
        if len(numbers) < needed:
            raise SystemExit(f"--register {args.register} gives {len(numbers)} callable numbers; {needed} needed")
        sent, slowest = await asyncio.to_thread(warm_up, port, token, numbers)
        print(f"  warm-up: {sent} HTTP checks one at a time, the slowest {slowest:.0f} ms", flush=True)

        callee = await UserAgent.listen(answer=200)
        dialer = await UserAgent.listen()
        agents += [callee, dialer]
        dialers = workdir / "dialers.list"
        dialers.write_text(f"1 127.0.0.1 32 {dialer.address[1]} operator={OPERATOR};token={token};client={CLIENT}\n")
        check_url = f"http://127.0.0.1:{port}/v1/check"
        proxies: dict[str, tuple[str, int]] = {}
        for name, config in (("baseline", baseline_config(workdir)), ("check", SIP_CONFIG)):
            (workdir / name).mkdir()
            proxy = await asyncio.to_thread(
                start_kamailio, workdir / name, callee.address, check_url, dialers, config=config,
                children=args.children,
            )  # fmt: skip
            servers.append(proxy)
            proxies[name] = ("127.0.0.1", proxy.port)
        timings = await steady(dialer, proxies, numbers, args)
        await split_checks(f"127.0.0.1:{broker.port}", timings)
        return timings
    finally:
        for agent in agents:
            agent.close()
        if worker is not None:
            worker.terminate()
            worker.wait(30)
        for server in reversed(servers):
            server.stop()


async def main(args: argparse.Namespace) -> None:
    reason = kamailio_unavailable()
    if reason:
        raise SystemExit(f"bench sip: {reason}")
    workdir = Path(tempfile.mkdtemp(prefix="callguard-bench-sip-"))
    print(
        f"{args.rate} INVITEs/s to each proxy, interleaved, for {args.seconds:g} s (after {args.warmup:g} s of "
        f"warm-up); milliseconds from the INVITE sent to its 200 OK; {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.1f}\n",
        flush=True,
    )
    for kind in args.broker.split(","):
        print(f"broker: {'Apache Kafka' if kind == 'kafka' else 'Tansu'}", flush=True)
        timings = await run_broker(kind, args, workdir / kind)
        base, check = sorted(timings.setup["baseline"]), sorted(timings.setup["check"])
        print(summary("  baseline: Kamailio relaying without asking", base, timings.failed["baseline"]))
        print(summary("  with the check (POST /v1/check)", check, timings.failed["check"]))
        if base and check:
            added = {q: percentile(check, q) - percentile(base, q) for q in (0.5, 0.99, 0.999)}
            verdict = ""
            if kind == "kafka":
                verdict = "   (target: p99 under 50 ms: " + ("met)" if added[0.99] < 50 else "NOT met)")
            print(
                f"  {'added by the check':<44} p50 {added[0.5]:+6.1f}   p99 {added[0.99]:+6.1f}   "
                f"p99.9 {added[0.999]:+6.1f} ms{verdict}"
            )
        for part, values in timings.split.items():
            print(summary(f"    check: {part}", values, 0).replace(", 0 failed", ""))
        if timings.statuses:
            print(f"  answers other than 200: {dict(sorted(timings.statuses.items()))}")
        print(f"  load average after the row: {os.getloadavg()[0]:.1f}\n", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=int, default=50, help="INVITEs per second to each proxy (default 50)")
    parser.add_argument("--seconds", type=float, default=30, help="seconds measured (default 30)")
    parser.add_argument("--warmup", type=float, default=3, help="seconds sent first and not counted (default 3)")
    parser.add_argument("--register", type=int, default=20_000, help="register numbers loaded (default 20000)")
    parser.add_argument("--children", type=int, default=8, help="Kamailio's SIP worker processes (default 8)")
    parser.add_argument("--broker", default="kafka,tansu", help="brokers to run on, in order (default kafka,tansu)")
    parsed = parser.parse_args()
    if parsed.rate <= 0 or parsed.seconds <= 0 or parsed.warmup < 0:
        parser.error("--rate and --seconds must be above 0, --warmup at least 0")
    if not set(parsed.broker.split(",")) <= {"kafka", "tansu"}:
        parser.error("--broker: a comma-separated list of kafka and tansu")
    asyncio.run(main(parsed))
