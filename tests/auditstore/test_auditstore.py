"""The durable audit store: decisions flow worker -> callguard.audit -> sink -> PostgreSQL,
and ``callguard audit search`` answers by number, even with the sink stopped.

Real broker, Redis, worker and PostgreSQL (the session's own, on a free port).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any

import asyncpg
import orjson
import pytest

from callguard.auditstore.store import POSTGRES_OUTAGE, _store, migrate, stored_records, to_row
from callguard.core.audit import Stored, verify
from callguard.core.schema import DECISIONS_TOPIC, INTENTS_TOPIC
from callguard.dev.embedded import Server, free_port
from tests.auditstore.sink import Sink, stored_ids, wait_stored
from tests.conftest import Worker, cli, collect, operators_csv, produce, replay, today, write_csv

pytestmark = pytest.mark.e2e

# numbers of this module: +39 351 700 00NN
OPPOSED, CLEAR, CONSENT, DNC, LATER = (f"+39351700{n:04d}" for n in range(5))
BULK = [f"+39351701{n:04d}" for n in range(100)]


@pytest.fixture(scope="module")
def store_env(env: dict[str, str], postgres: Server) -> dict[str, str]:
    return {**env, "CALLGUARD_AUDIT_DSN": postgres.url}


@pytest.fixture(scope="module")
def sink(store_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sink]:
    # small batches: a kill -9 lands between batches, not after the last one
    running = Sink({**store_env, "CALLGUARD_BATCH_SIZE": "50"}, tmp_path_factory.mktemp("sink") / "sink.log").start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def loaded(env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> None:
    d = tmp_path_factory.mktemp("data")
    t = date.fromisoformat(today())
    for argv in (
        ("operators", "load", str(operators_csv(d,
                                            ["as-ok,active,2024-01-01,2030-12-31,"]))),
        ("register", "load", str(write_csv(d / "reg.csv", "number,status,registered_at",
                                           [f"{OPPOSED},opposed,2024-02-01", f"{CONSENT},opposed,2024-02-01"])),
         "--as-of", str(t - timedelta(days=2))),
        # a clear result loaded for every client ('*') is nobody's check: acme's own
        ("register", "load", str(write_csv(d / "clear.csv", "number,status",
                                           [f"{CLEAR},clear", f"{DNC},clear", f"{LATER},clear"])),
         "--as-of", str(t - timedelta(days=2)), "--client", "acme"),
        ("consents", "load", str(write_csv(d / "consents.csv", "callee,client_id,basis,granted_at,ends_at",
                                           [f"{CONSENT},acme,consent,2025-03-01,"]))),
        ("optouts", "load", str(write_csv(d / "optouts.csv", "callee,client_id,at", [f"{DNC},*,2025-05-05"]))),
    ):  # fmt: skip
        result = cli(env, *argv)
        assert result.returncode == 0, result.stderr


def intent(intent_id: str, callee: str, client: str = "acme", campaign: str = "winter") -> bytes:
    return orjson.dumps(
        {"intent_id": intent_id, "callee": callee, "operator_id": "as-ok", "client_id": client, "campaign_id": campaign}
    )


async def decide(env: dict[str, str], intents: dict[str, bytes]) -> dict[str, Any]:
    """Publish intents and wait for every decision."""
    await produce(env["CALLGUARD_BROKER"], INTENTS_TOPIC, list(intents.values()))
    found = await collect(env["CALLGUARD_BROKER"], DECISIONS_TOPIC, set(intents), timeout=60)
    assert set(found) == set(intents), f"missing decisions: {set(intents) - set(found)}"
    return {key: messages[0] for key, messages in found.items()}


def search(env: dict[str, str], *argv: str) -> dict[str, Any]:
    result = cli(env, "audit", "search", *argv, "--json")
    assert result.returncode == 0, result.stderr
    answer: dict[str, Any] = orjson.loads(result.stdout)
    return answer


async def test_search_answers_every_decision_about_a_number_with_why_and_on_which_data(
    store_env: dict[str, str], worker: Worker, loaded: None, sink: Sink
) -> None:
    decisions = await decide(
        store_env,
        {
            "as-opp-1": intent("as-opp-1", OPPOSED),
            "as-opp-2": intent("as-opp-2", "351 700 0000", client="beta", campaign="spring"),  # national form
            "as-clear": intent("as-clear", CLEAR),
            "as-consent": intent("as-consent", CONSENT),
            "as-dnc": intent("as-dnc", DNC),
        },
    )
    await wait_stored(store_env["CALLGUARD_AUDIT_DSN"], "as-", 5, sink)

    answer = search(store_env, "--callee", "0039 351 700 0000")  # any written form finds it
    assert answer["callee"] == OPPOSED
    assert sorted(d["intent_id"] for d in answer["decisions"]) == ["as-opp-1", "as-opp-2"]
    times = [d["decided_at"] for d in answer["decisions"]]
    assert times == sorted(times, reverse=True)  # newest first
    for d in answer["decisions"]:
        assert d["decision"] == "deny" and d["reasons"] == ["opposition_register"]
        assert d["in_store"]
        register = next(r for r in d["rules"] if r["rule"] == "opposition_register")
        assert register["detail"]["result"]["as_of"] == str(date.fromisoformat(today()) - timedelta(days=2))
        assert d["decision"] == decisions[d["intent_id"]]["decision"]

    consent = search(store_env, "--callee", CONSENT)["decisions"]
    assert [(d["intent_id"], d["decision"], d["reasons"]) for d in consent] == [("as-consent", "allow", ["consent"])]

    text = cli(store_env, "audit", "search", "--callee", CONSENT)
    assert text.returncode == 0, text.stderr
    print(text.stdout)
    assert "ALLOW  reasons: consent" in text.stdout
    assert "register: opposed as of" in text.stdout
    assert "consent/contract used: consent of client acme granted 2025-03-01" in text.stdout
    assert "1 decision(s), 1 allow, 0 deny" in text.stdout.splitlines()[-1]

    dnc = cli(store_env, "audit", "search", "--callee", DNC)
    assert "DENY  reasons: internal_dnc" in dnc.stdout and "opt-outs: client * at 2025-05-05" in dnc.stdout


async def test_since_and_client_filters(store_env: dict[str, str], sink: Sink) -> None:
    await wait_stored(store_env["CALLGUARD_AUDIT_DSN"], "as-opp-", 2, sink)
    beta = search(store_env, "--callee", OPPOSED, "--client", "beta")["decisions"]
    assert [d["intent_id"] for d in beta] == ["as-opp-2"]
    assert beta[0]["intent"]["campaign_id"] == "spring"
    assert len(search(store_env, "--callee", OPPOSED, "--since", today())["decisions"]) == 2
    tomorrow = str(date.fromisoformat(today()) + timedelta(days=1))
    assert search(store_env, "--callee", OPPOSED, "--since", tomorrow)["decisions"] == []
    assert search(store_env, "--callee", "+39 351 700 0099")["decisions"] == []  # never called
    bad = cli(store_env, "audit", "search", "--callee", OPPOSED, "--since", "28/11/2026")
    assert bad.returncode == 2 and "--since" in bad.stderr


async def test_replay_from_the_store_reproduces_every_stored_decision(store_env: dict[str, str], sink: Sink) -> None:
    """Determinism from the store: every decision the session's worker made
    so far (register, consents, opt-outs, operators: its core policy), read
    back from PostgreSQL and decided again under the same policy file."""
    await wait_stored(store_env["CALLGUARD_AUDIT_DSN"], "as-", 5, sink)
    everything = replay(store_env, "--policy", store_env["CALLGUARD_POLICY"])
    assert everything["source"] == "audit store" and everything["records"] >= 5
    assert everything["recorded_policies"] == {"test-core": everything["records"]}
    assert (everything["replayed"], everything["changed"], everything["not_replayable"]) == (
        everything["records"], 0, 0,
    ), everything  # fmt: skip
    beta = replay(store_env, "--policy", store_env["CALLGUARD_POLICY"], "--client", "beta", "--since", today())
    assert beta["records"] == 1 and beta["filters"]["client"] == "beta"
    tomorrow = str(date.fromisoformat(today()) + timedelta(days=1))
    assert replay(store_env, "--policy", store_env["CALLGUARD_POLICY"], "--since", tomorrow)["records"] == 0
    bad = cli(
        store_env, "replay", "--policy", store_env["CALLGUARD_POLICY"], "--audit-dsn", "postgresql://x@127.0.0.1:1/db"
    )
    assert bad.returncode == 2 and bad.stderr.startswith("callguard: cannot reach the audit store at")
    assert len(bad.stderr.strip().splitlines()) == 1


async def test_a_sink_killed_mid_stream_stores_everything_once(
    store_env: dict[str, str], worker: Worker, loaded: None, sink: Sink
) -> None:
    dsn = store_env["CALLGUARD_AUDIT_DSN"]
    ids = [f"as-bulk-{n:05d}" for n in range(3000)]
    first, second = ids[:1500], ids[1500:]
    publishing = asyncio.create_task(
        decide(store_env, {i: intent(i, BULK[n % len(BULK)]) for n, i in enumerate(first)})
    )
    deadline = time.monotonic() + 30
    while not await stored_ids(dsn, "as-bulk-") and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    sink.kill()  # mid-stream: as soon as the first batch is stored, its offsets maybe not committed
    await publishing
    at_kill = len(await stored_ids(dsn, "as-bulk-"))
    await decide(store_env, {i: intent(i, BULK[n % len(BULK)]) for n, i in enumerate(second, 1500)})
    sink.start()
    stored = await wait_stored(dsn, "as-bulk-", 3000, sink)
    await asyncio.sleep(1.0)  # anything redelivered late would show up as extra rows
    stored = await stored_ids(dsn, "as-bulk-")
    print(f"kill -9 with {at_kill} of 1500 stored; after restart {len(stored)} rows for 3000 intents")
    assert sorted(stored) == ids  # nothing missing, no second row (intent_id is the key)
    conn = await asyncpg.connect(dsn)
    try:
        repeats = await conn.fetchval("SELECT count(*) FROM callguard_audit_other WHERE intent_id LIKE 'as-bulk-%'")
    finally:
        await conn.close()
    assert repeats == 0  # redelivered records are the same positions, not new records
    # the store is a copy of the topic: the hash chains verify from it
    report = verify(await stored_records(dsn))
    assert report.ok, report.problems[:5]


async def test_search_answers_with_the_sink_stopped_and_reports_how_far_behind(
    store_env: dict[str, str], worker: Worker, loaded: None, sink: Sink
) -> None:
    await decide(store_env, {"as-before-stop": intent("as-before-stop", CLEAR)})
    await wait_stored(store_env["CALLGUARD_AUDIT_DSN"], "as-before-stop", 1, sink)
    sink.stop()
    await decide(store_env, {f"as-later-{n}": intent(f"as-later-{n}", LATER) for n in range(3)})
    answer = search(store_env, "--callee", LATER)
    assert answer["store_behind"] >= 3
    assert sum(p["behind"] for p in answer["lag"]) == answer["store_behind"]
    assert {d["intent_id"] for d in answer["decisions"]} == {"as-later-0", "as-later-1", "as-later-2"}
    assert not any(d["in_store"] for d in answer["decisions"])
    old = search(store_env, "--callee", CLEAR)  # stored before the stop: still answered from the store
    assert "as-before-stop" in {d["intent_id"] for d in old["decisions"]}
    assert all(d["in_store"] for d in old["decisions"])
    text = cli(store_env, "audit", "search", "--callee", LATER)
    last = text.stdout.splitlines()[-1]
    print(last)
    assert "behind callguard.audit" in last and "read from the topic instead: 3" in last
    assert "not yet in the store" in text.stdout
    # restarted, the sink catches up and the answer comes from the store alone
    sink.start()
    await wait_stored(store_env["CALLGUARD_AUDIT_DSN"], "as-later-", 3, sink)
    deadline = time.monotonic() + 30
    while (answer := search(store_env, "--callee", LATER))["store_behind"] and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
    assert answer["store_behind"] == 0 and all(d["in_store"] for d in answer["decisions"])


def test_unreadable_records_are_kept_aside() -> None:
    assert to_row(Stored(0, 1, b"not json")) is None
    assert to_row(Stored(0, 2, b'{"intent_id": "x"}')) is None
    row = to_row(Stored(3, 7, orjson.dumps({"intent_id": "x", "decision": "deny", "reasons": ["malformed_intent"],
                                             "callee": None, "decided_at": "2026-11-28T10:00:00.000Z",
                                             "intent": None})))  # fmt: skip
    assert to_row(Stored(0, 3, orjson.dumps({"intent_id": "nul\u0000", "decision": "deny", "reasons": [],
                                              "decided_at": "2026-11-28T10:00:00.000Z"}))) is None  # fmt: skip
    assert row is not None and row.partition == 3 and row.offset == 7 and row.client_id is None


async def test_search_without_a_broker_answers_from_the_store_and_says_the_lag_is_unknown(
    store_env: dict[str, str], sink: Sink
) -> None:
    await wait_stored(store_env["CALLGUARD_AUDIT_DSN"], "as-consent", 1, sink)
    env = {**store_env, "CALLGUARD_BROKER": f"kafka://127.0.0.1:{free_port()}"}
    result = cli(env, "audit", "search", "--callee", CONSENT)
    assert result.returncode == 0, result.stderr
    assert "as-consent" in result.stdout
    assert "could not read callguard.audit" in result.stdout.splitlines()[-1]
    gone = cli({**store_env, "CALLGUARD_AUDIT_DSN": f"postgresql://u:secret@127.0.0.1:{free_port()}/x"},
               "audit", "search", "--callee", CONSENT)  # fmt: skip
    assert gone.returncode == 1 and "audit store" in gone.stderr and "secret" not in gone.stderr


@pytest.fixture(scope="module")
def own_database(postgres: Server) -> str:
    """A database of this module's own in the session's PostgreSQL, so the
    records written here are not in the store the other tests search."""

    async def create() -> None:
        admin = await asyncpg.connect(postgres.url, timeout=10)
        try:
            await admin.execute("CREATE DATABASE sink_outage")
        finally:
            await admin.close()
        conn = await asyncpg.connect(postgres.url.rsplit("/", 1)[0] + "/sink_outage", timeout=10)
        try:
            await migrate(conn)
        finally:
            await conn.close()

    asyncio.run(create())
    return postgres.url.rsplit("/", 1)[0] + "/sink_outage"


async def _store_after_a_lost_connection(
    own_database: str, dsn: str, record: Stored, stop: asyncio.Event
) -> tuple[asyncpg.Connection, int | None]:
    """The sink's ``_store`` of one record, handed a connection that was lost
    (closed) and ``dsn`` to reconnect to; a failure, not a hang, if it has not
    returned within 10 s."""
    lost: asyncpg.Connection = await asyncpg.connect(own_database, timeout=10)
    await lost.close()
    storing = asyncio.ensure_future(_store(lost, dsn, [record], stop))
    await asyncio.wait({storing}, timeout=10)
    if not storing.done():
        stop.set()
        storing.cancel()
        pytest.fail("the sink's store neither returned nor stopped within 10 s")
    return storing.result()


async def test_the_sink_reconnects_to_store_a_batch(own_database: str) -> None:
    """A connection lost between batches is opened again, and the batch stored on it."""
    conn, stored = await _store_after_a_lost_connection(
        own_database, own_database, Stored(0, 1, b"not json"), asyncio.Event()
    )
    try:
        assert stored == 0 and not conn.is_closed()  # an unreadable record: kept aside, no decision
        assert await conn.fetchval("SELECT count(*) FROM callguard_audit_other WHERE audit_offset = 1") == 1
    finally:
        await conn.close()


async def test_the_sink_waits_for_postgresql_and_stops_when_told(
    own_database: str, caplog: pytest.LogCaptureFixture
) -> None:
    """With PostgreSQL unreachable the batch is neither skipped nor lost: the
    sink tries again (saying so) until told to stop, and then stops at once
    with the batch not stored, so its offsets are not committed."""
    nowhere = f"postgresql://callguard@127.0.0.1:{free_port()}/postgres"  # nothing listens there
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.3, stop.set)
    started = time.monotonic()
    _, stored = await _store_after_a_lost_connection(own_database, nowhere, Stored(0, 2, b"{}"), stop)
    assert stored is None
    assert time.monotonic() - started < POSTGRES_OUTAGE.first  # the stop cut the wait short
    assert "audit store unavailable (ConnectionRefusedError); retrying in 1 s" in caplog.text
    assert "1 records not stored, read again at the next start" in caplog.text
