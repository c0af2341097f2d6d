"""``callguard demo``: the whole guard on a laptop, in one command.

Starts a Kafka-protocol broker and a Redis on free loopback ports, loads the
sample register, operators, consents and opt-outs through the same CLI a user
runs, starts a worker process, publishes sample intents as a dialer would,
prints decisions as they arrive (numbers masked), shows a real-time opt-out
taking effect, then prints a summary and stops everything it started.

The worker decides by ``sample/demo-policy.toml``, a policy set: Italian
callees by the shipped Italian pack, callees of the 50 states by the shipped
US pack, both with calling hours open around the clock so the demo shows the
same at any hour; Canadian callees are denied ``no_policy_for_country``. At
the end ``callguard explain`` shows an Italian and a US intent under the real
hours at the time the demo runs. It ends with a what-if (its own decisions
replayed under a stricter sample policy) and the regulator's report on one
number: a PostgreSQL audit store is started and filled by ``callguard audit
sink``, and ``callguard audit report`` writes the HTML file.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from callguard.core.numbers import mask
from callguard.core.schema import CONSENTS_TOPIC, DECISIONS_TOPIC, INTENTS_TOPIC, OPTOUTS_TOPIC, rfc3339
from callguard.dev.embedded import Embedded, EmbeddedError, Server, free_port, start_postgres, wait_healthy

SAMPLE = resources.files("callguard") / "sample"
CLIENTS = ("acme", "acme", "acme", "beta")
OPERATORS = ("op-roma",) * 6 + ("op-milano",) * 3 + ("op-napoli", "op-torino", "op-unknown", "op-tirana")
#: The caller ID each operator shows (declared in sample/operators.csv), and some that are not right.
CALLER_IDS = {"op-roma": "+39 0844 000001", "op-milano": "+39 0844 000002", "op-tirana": "+39 06 5555 0000"}
#: The number the real-time opt-out is shown on: kept out of the random intents,
#: which would otherwise use up its frequency cap (3 calls per 24 h per client).
OPTOUT_INDEX = 7
#: The number the regulator's report is about: called at random, then given a
#: real-time consent (so its report shows a consent_required deny, then an allow).
REPORT_INDEX = 113
#: The same numbers written the ways dialers write them.
WRITTEN_FORMS = ("+39 347 000 {:04d}", "0039 347 000{:04d}", "347-000{:04d}", "(347) 000{:04d}", "+39347000{:04d}")
#: United States callees (decided by the US pack): New York and Miami numbers
#: 0100-0159 (sample/us-dnc.txt registers 212 555 0100-0139 and 305 555 0100-0109;
#: sample/us-fl-dnc.csv, Florida's list, 305 555 0110-0119), and Toronto
#: (Canada: no pack, no_policy_for_country). Written with their country code:
#: the worker's default region is Italy.
US_FORMS = ("+1 212 555 01{:02d}", "001 212 555 01{:02d}", "+1 305 555 01{:02d}", "+1 416 555 01{:02d}")
#: The US call centre and the caller ID it declared.
US_OPERATOR, US_CALLER_ID = "op-newyork", "+1 212 555 0100"


def sample_path(name: str) -> Path:
    return Path(str(SAMPLE / name))


def sample_intents(count: int, seed: int = 7) -> list[dict[str, Any]]:
    """A realistic mix: most numbers clear (some not in the public
    directories, with and without consent), some opposed (with and without
    consent), some never checked, a few automated, invalid or malformed."""
    rng = random.Random(seed)
    intents: list[dict[str, Any]] = []
    indexes = [i for i in range(200) if i != OPTOUT_INDEX]
    for n in range(count):
        if n % 5 == 4:  # a fifth of the intents call the United States (and a few Canada)
            intents.append(_us_intent(rng, n))
            continue
        callee = rng.choice(WRITTEN_FORMS).format(rng.choice(indexes))
        operator = rng.choice(OPERATORS)
        intent: dict[str, Any] = {
            "intent_id": f"demo-{n:05d}",
            "callee": callee,
            "operator_id": operator,
            "client_id": rng.choice(CLIENTS),
            "campaign_id": "autumn-offers",
            "purpose": rng.choices(("marketing", "survey", "statistical", "service"), (8, 1, 1, 1))[0],
            "caller_id": CALLER_IDS.get(operator, "+39 0844 000009"),
        }
        if n % 71 == 7:
            intent["automated"] = True  # no operator: needs a consent (consent_required)
        if n % 97 == 13:
            intent["callee"] = "12"  # invalid_number
        if n % 89 == 5:
            intent["caller_id"] = "anonymous"  # caller_id_missing
        if n % 83 == 3:
            intent["caller_id"] = "+39 06 9999 0000"  # caller_id_not_declared
        intents.append(intent)
    return intents


def _us_intent(rng: random.Random, n: int) -> dict[str, Any]:
    """An intent to a US callee (or a Canadian one) by the US call centre."""
    form = rng.choices(US_FORMS, (5, 2, 3, 1))[0]
    intent: dict[str, Any] = {
        "intent_id": f"demo-{n:05d}",
        "callee": form.format(rng.randrange(60)),
        "operator_id": US_OPERATOR,
        "client_id": rng.choice(CLIENTS),
        "campaign_id": "us-winter",
        "purpose": rng.choices(("marketing", "survey", "service"), (8, 1, 1))[0],
        "caller_id": US_CALLER_ID,
    }
    if n % 13 == 4:
        intent["automated"] = True  # a prerecorded call: needs a written consent (consent_required)
    return intent


def _cli(argv: list[str], env: dict[str, str]) -> None:
    print("$ callguard " + " ".join(argv), flush=True)
    result = subprocess.run([sys.executable, "-m", "callguard", *argv], env=env, capture_output=True, text=True)
    output = (result.stdout + result.stderr).strip()
    if output:
        print("  " + output.replace("\n", "\n  "), flush=True)
    if result.returncode != 0:
        raise RuntimeError(f"callguard {argv[0]} failed with exit code {result.returncode}")


async def _exchange(
    broker: str, intents: Sequence[dict[str, Any]], show: int, optout_callee: str
) -> tuple[dict[str, dict[str, Any]], float]:
    bootstrap = broker.split("://", 1)[1]
    consumer = AIOKafkaConsumer(DECISIONS_TOPIC, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await consumer.start()
    await producer.start()
    decisions: dict[str, dict[str, Any]] = {}
    try:
        started = time.monotonic()
        for intent in intents:
            await producer.send(INTENTS_TOPIC, orjson.dumps(intent), key=intent["callee"].encode())
        # two malformed messages: one without a readable id, one with
        await producer.send(INTENTS_TOPIC, b"{not json", key=b"x")
        await producer.send(INTENTS_TOPIC, orjson.dumps({"intent_id": "demo-malformed", "callee": 3}), key=b"y")
        await producer.flush()
        expected = len(intents) + 1
        print(f"\npublished {len(intents):,} intents (+2 malformed); decisions as they arrive:\n")
        printed = 0
        async for record in consumer:
            decision = orjson.loads(record.value)
            decisions[decision["intent_id"]] = decision
            if printed < show:
                printed += 1
                verdict = "ALLOW" if decision["decision"] == "allow" else "DENY "
                reasons = ",".join(decision["reasons"]) or "-"
                print(f"  {verdict} {decision['intent_id']:<15} {mask(decision['callee']):<16} {reasons}")
            if len(decisions) >= expected:
                break
        elapsed = time.monotonic() - started

        # real-time consents: an unlisted number needs one (consent_required); the
        # person asks acme to call back (a request), or gives a consent, on callguard.consents
        print("\nreal-time consents (numbers not in the public directories):")
        for label, number, basis in (
            ("call request", "+39347000" + "0112", "request"),
            ("consent", f"+39347000{REPORT_INDEX:04d}", "consent"),
        ):
            probe_intent = {"operator_id": "op-roma", "client_id": "acme", "caller_id": CALLER_IDS["op-roma"]}
            for step in ("before", "after"):
                if step == "after":
                    given = {
                        "callee": number,
                        "client_id": "acme",
                        "basis": basis,
                        "granted_at": rfc3339(datetime.now(UTC)),
                    }
                    await producer.send_and_wait(CONSENTS_TOPIC, orjson.dumps(given), key=number.encode())
                    print(f"  {label} published on {CONSENTS_TOPIC} for {mask(number)}")
                    await asyncio.sleep(1.0)
                intent_id = f"demo-{basis}-{step}"
                await producer.send_and_wait(
                    INTENTS_TOPIC, orjson.dumps({"intent_id": intent_id, "callee": number, **probe_intent})
                )
                async for record in consumer:
                    decision = orjson.loads(record.value)
                    if decision["intent_id"] == intent_id:
                        print(f"  {step:<6} the {label}: {decision['decision']} {decision['reasons']}")
                        break

        # the real-time opt-out: the same number, allowed, then opted out, then denied
        print("\nreal-time opt-out:")
        probe = {
            "callee": optout_callee,
            "operator_id": "op-roma",
            "client_id": "acme",
            "purpose": "marketing",
            "caller_id": CALLER_IDS["op-roma"],
        }
        for step, message in (("before", None), ("after", {"callee": optout_callee, "client_id": "acme"})):
            if message is not None:
                await producer.send_and_wait(OPTOUTS_TOPIC, orjson.dumps(message), key=optout_callee.encode())
                print(f"  opt-out published on {OPTOUTS_TOPIC} for {mask(optout_callee)}")
                await asyncio.sleep(1.0)
            intent_id = f"demo-optout-{step}"
            await producer.send_and_wait(INTENTS_TOPIC, orjson.dumps({"intent_id": intent_id, **probe}))
            async for record in consumer:
                decision = orjson.loads(record.value)
                if decision["intent_id"] == intent_id:
                    print(f"  {step:<6} the opt-out: {decision['decision']} {decision['reasons']}")
                    break
    finally:
        await producer.stop()
        await consumer.stop()
    return decisions, elapsed


def _summary(decisions: dict[str, dict[str, Any]], elapsed: float) -> None:
    verdicts = Counter(d["decision"] for d in decisions.values())
    reasons = Counter(r for d in decisions.values() for r in d["reasons"])
    print(f"\nsummary: {len(decisions):,} decisions in {elapsed:.1f}s ({len(decisions) / elapsed:,.0f}/s end to end)")
    print(f"  allow {verdicts['allow']:,}   deny {verdicts['deny']:,}")
    packs = Counter(d["versions"]["policy"] for d in decisions.values() if "policy_set" in d["versions"])
    print("  decided by: " + ", ".join(f"{version} {count:,}" for version, count in packs.most_common()))
    for reason, count in reasons.most_common():
        print(f"  {reason:<22} {count:,}")


def _stored(dsn: str) -> int:
    import asyncpg

    async def count() -> int:
        conn = await asyncpg.connect(dsn, timeout=5)
        try:
            return int(await conn.fetchval("SELECT count(*) FROM callguard_audit"))
        except asyncpg.UndefinedTableError:
            return 0
        finally:
            await conn.close()

    return asyncio.run(count())


def _report(embedded: Embedded, env: dict[str, str], out: Path) -> None:
    """A PostgreSQL audit store filled by ``callguard audit sink``, then the
    regulator's report on one number (skipped, saying why, without PostgreSQL)."""
    print("\nthe regulator's report on one number (audit store: a PostgreSQL filled by callguard audit sink):")
    try:
        postgres: Server = start_postgres(embedded.workdir)
    except EmbeddedError as exc:
        print(f"  skipped: no PostgreSQL to start here ({exc})")
        return
    env = {**env, "CALLGUARD_AUDIT_DSN": postgres.url}
    log_path = embedded.workdir / "sink.log"
    print(f"$ callguard audit sink   (log: {log_path})", flush=True)
    with log_path.open("wb") as log:
        sink = subprocess.Popen([sys.executable, "-m", "callguard", "audit", "sink"], env=env, stdout=log, stderr=log)
    try:
        # until the store stops growing: the report would read what is missing from the topic anyway
        deadline, last, still = time.monotonic() + 60, -1, 0
        while time.monotonic() < deadline and still < 4 and sink.poll() is None:
            time.sleep(0.5)
            with contextlib.suppress(Exception):
                now = _stored(postgres.url)
                still = still + 1 if now == last and now > 0 else 0
                last = now
        print(f"  {max(last, 0):,} decisions stored", flush=True)
        _cli(["audit", "report", "--callee", f"+39 347 000 {REPORT_INDEX:04d}", "--out", str(out)], env)
        print(f"  open {out} in a browser, or print it to PDF")
    finally:
        sink.send_signal(signal.SIGTERM)
        try:
            sink.wait(20)
        except subprocess.TimeoutExpired:
            sink.kill()
        postgres.stop()


def run_demo(intents: int = 2000, show: int = 25, report: Path | None = None) -> int:
    today = datetime.now(ZoneInfo("Europe/Rome")).date()
    print("starting an embedded Kafka-protocol broker (Tansu) and Redis on free loopback ports…", flush=True)
    with Embedded() as embedded:
        web_port = free_port()
        env = {
            **os.environ,
            "CALLGUARD_BROKER": embedded.broker_url,
            "CALLGUARD_REDIS_URL": embedded.redis_url,
            "CALLGUARD_WEB_PORT": str(web_port),
            "CALLGUARD_POLICY": str(sample_path("demo-policy.toml")),
        }
        print(f"  broker {embedded.broker_url}   redis {embedded.redis_url}   worker web port {web_port}\n")
        _cli(["operators", "load", str(sample_path("operators.csv"))], env)
        # which call centres may call for which client (beta's mandate to op-milano has ended)
        _cli(["mandates", "load", str(sample_path("mandates.csv"))], env)
        # each client consults the register for itself (a clear result counts only for its client)
        for client, days in (("acme", 2), ("beta", 1)):
            register = str(sample_path("register.csv"))
            _cli(["register", "load", register, "--as-of", str(today - timedelta(days=days)), "--client", client], env)
        _cli(
            ["register", "load", str(sample_path("register_beta.csv")), "--as-of", str(today), "--client", "beta"],
            env,
        )
        old = str(sample_path("register_old.csv"))
        _cli(["register", "load", old, "--as-of", str(today - timedelta(days=40)), "--client", "acme"], env)
        # numbers not in the public directories need a consent (Codice di condotta art. 10 c. 2)
        _cli(["directory", "load", str(sample_path("directory.csv")), "--as-of", str(today - timedelta(days=1))], env)
        _cli(["consents", "load", str(sample_path("consents.csv"))], env)
        _cli(["optouts", "load", str(sample_path("optouts.csv"))], env)
        # the United States: the National Do Not Call Registry as the FTC ships it, Florida's own
        # list (its residents' numbers, whatever their area codes), and reassigned numbers
        us_dnc = str(sample_path("us-dnc.txt"))
        _cli(["register", "load", us_dnc, "--register", "us-dnc", "--as-of", str(today - timedelta(days=3))], env)
        florida = str(sample_path("us-fl-dnc.csv"))
        _cli(["register", "load", florida, "--register", "us-fl-dnc", "--cover", "all", "--as-of", str(today)], env)
        _cli(["reassigned", "load", str(sample_path("reassigned.csv"))], env)

        _cli(["policy", "check", env["CALLGUARD_POLICY"]], env)

        log_path = embedded.workdir / "worker.log"
        print(f"\n$ CALLGUARD_POLICY={env['CALLGUARD_POLICY']} callguard worker   (log: {log_path})", flush=True)
        with log_path.open("wb") as log:
            worker = subprocess.Popen([sys.executable, "-m", "callguard", "worker"], env=env, stdout=log, stderr=log)
        try:
            wait_healthy(web_port, worker, timeout=90)
            print("  worker healthy: consuming callguard.intents, Redis answering", flush=True)
            decisions, elapsed = asyncio.run(
                _exchange(embedded.broker_url, sample_intents(intents), show, f"+39347000{OPTOUT_INDEX:04d}")
            )
            _summary(decisions, elapsed)
            print("\nthe same kind of intent under the shipped Italian policy (real calling hours), right now:")
            shipped = {k: v for k, v in env.items() if k != "CALLGUARD_POLICY"}
            probe = ["--callee", "+39 347 000 0001", "--operator-id", "op-roma", "--client-id", "acme"]
            _cli(["explain", *probe, "--caller-id", CALLER_IDS["op-roma"]], shipped)
            print("\nand a New York callee under the shipped US pack (8:00-21:00 at the callee's location), right now:")
            us_probe = ["--callee", "+1 212 555 0150", "--operator-id", US_OPERATOR, "--client-id", "acme"]
            _cli(["explain", *us_probe, "--caller-id", US_CALLER_ID], shipped)
            print()
            _cli(["audit", "verify"], env)  # every decision's evidence, hash-chained
            # what-if: the same decisions again, from their audit records, under a stricter policy
            print("\nwhat a stricter policy would have changed (its own facts, each decision's own time):")
            stricter = str(sample_path("stricter-policy.toml"))
            _cli(["policy", "diff", env["CALLGUARD_POLICY"], stricter], env)
            _cli(["replay", "--policy", stricter, "--from", "topic", "--examples", "1"], env)
            _report(embedded, env, report or Path(tempfile.gettempdir()) / "callguard-demo-report.html")
        finally:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                worker.kill()
    print("\nstopped the worker, the sink, the broker, Redis and PostgreSQL.")
    return 0
