"""The United States pack end to end: a real worker on a broker of its own,
the session's Redis, data loaded through the CLI as a user would, deciding US,
Italian and Canadian callees under one policy set.

- the National Do Not Call Registry loaded from the FTC's flat file under
  ``--register us-dnc``, Florida's list under ``--register us-fl-dnc --cover all``;
  a reload replaces an area code's list; an old one is stale after 31 days;
- established business relationships and written consents (``consents load``
  and ``callguard.consents``), a reassigned number (``reassigned load``);
- automated calls, Florida's three calls a day, a live opt-out, a campaign
  stopped by its abandoned calls, calling hours closed at the callee's location;
- a Canadian callee denied ``no_policy_for_country``, an Italian one decided
  by the Italian pack; every decision replayed with zero differences.

Numbers: ``+1 646 555 01xx``, ``+1 305 555 01xx``, ``+1 917 555 0100`` (this
module's own buckets) and ``+39 333 5xx xxxx``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from callguard.client import GuardClient
from callguard.core.schema import AUDIT_TOPIC
from callguard.dev.embedded import Embedded
from tests.conftest import (
    CORE_POLICY,
    Worker,
    cli,
    collect,
    decide_intents,
    env_for,
    load_all,
    operators_csv,
    replay,
    start_test_broker,
    today,
    write_csv,
)
from tests.contract.reasons import US_PACK_REASONS
from tests.contract.validation import validate

pytestmark = pytest.mark.e2e

NY = ZoneInfo("America/New_York")
CLIENT = "us-acme"
CALLER = "+1 212 555 0100"
N = {
    "clear": "+16465550100",
    "listed": "+16465550101",
    "ebr": "+16465550102",
    "reassigned": "+16465550103",
    "auto_no": "+16465550104",
    "auto_yes": "+16465550105",
    "optout": "+16465550106",
    "camp_a": "+16465550107",
    "camp_b": "+16465550108",
    "dropped": "+16465550109",
    "uncovered": "+19175550100",
    "fl_listed": "+13055550101",
    "fl": "+13055550102",
    "canada": "+14165550100",
    "italy": "+393335000001",
}
US_OPEN = """
base = "us"
version = "test-us-open"
[rules.calling_hours]
window = "00:00-24:00"
state_windows = []
"""
SET = f"""
version = "test-us-set"
[countries]
IT = "{CORE_POLICY}"
US = "us-open.toml"
[other_countries]
deny = ["marketing", "survey", "statistical"]
pack = "{CORE_POLICY}"
"""


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = start_test_broker(tmp_path_factory.mktemp("us-broker"))
    yield f"kafka://127.0.0.1:{server.port}"
    server.stop()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("us")


@pytest.fixture(scope="module")
def env(broker: str, embedded: Embedded, workdir: Path) -> dict[str, str]:
    (workdir / "us-open.toml").write_text(US_OPEN)
    (workdir / "set.toml").write_text(SET)
    environment = env_for(broker, embedded.redis_url, CALLGUARD_POLICY=str(workdir / "set.toml"))
    t = date.fromisoformat(today())
    ops = operators_csv(workdir, [f"us-op,active,2024-01-01,2030-12-31,{CALLER},US"])
    # the FTC's flat file: area code, number; every number of 646 and 305 on it is registered
    (workdir / "dnc.txt").write_text(
        "".join(f"{n[2:5]},{n[5:]}\n" for n in (N["listed"], N["ebr"], N["reassigned"], N["dropped"]))
        + "305,5550199\n"  # 305 is covered too
    )
    florida = write_csv(workdir / "fl.csv", "number", [N["fl_listed"]])
    consents = write_csv(
        workdir / "consents.csv",
        "callee,client_id,basis,granted_at,ends_at",
        [
            f"{N['ebr']},{CLIENT},ebr_inquiry,{t - timedelta(days=10)},",
            f"{N['reassigned']},{CLIENT},consent,2025-01-01,",
            f"{N['auto_yes']},{CLIENT},consent,2025-01-01,",
        ],
    )
    reassigned = write_csv(workdir / "rnd.csv", "number,disconnected_at", [f"{N['reassigned']},2025-06-30"])
    load_all(
        environment,
        ("operators", "load", str(ops)),
        ("register", "load", str(workdir / "dnc.txt"), "--register", "us-dnc", "--as-of", str(t)),
        ("register", "load", str(florida), "--register", "us-fl-dnc", "--cover", "all", "--as-of", str(t)),
        ("consents", "load", str(consents)),
        ("reassigned", "load", str(reassigned)),
    )
    return environment


@pytest.fixture(scope="module")
def worker(env: dict[str, str], workdir: Path) -> Iterator[Worker]:
    running = Worker(env, workdir / "worker.log").start()
    yield running
    running.stop()


#: every reason this module's decisions gave (tests/contract/test_contract.py counts on it for the US pack's)
SEEN: set[str] = set()


async def decide(broker: str, intents: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Publish intents and read their decisions (validated against the schema)."""
    decisions = await decide_intents(broker, intents)
    SEEN.update(reason for d in decisions.values() for reason in d["reasons"])
    return decisions


def intent(intent_id: str, number: str, **extra: Any) -> dict[str, Any]:
    return {
        "intent_id": intent_id,
        "callee": N[number],
        "operator_id": "us-op",
        "client_id": CLIENT,
        "caller_id": CALLER,
        **extra,
    }


def verdicts(decisions: dict[str, dict[str, Any]]) -> dict[str, tuple[str, list[str]]]:
    return {key: (d["decision"], d["reasons"]) for key, d in decisions.items()}


def test_a_named_register_load_says_what_it_covered_and_refuses_a_client(env: dict[str, str], workdir: Path) -> None:
    result = cli(env, "register", "load", str(workdir / "dnc.txt"), "--register", "us-dnc", "--as-of", today())
    assert result.returncode == 0, result.stderr
    assert "register us-dnc: loaded 5 numbers" in result.stdout and "2 area code(s)" in result.stdout
    refused = cli(env, "register", "load", str(workdir / "dnc.txt"), "--register", "us-dnc", "--client", "x",
                  "--as-of", today())  # fmt: skip
    assert refused.returncode == 2 and "--register and --client" in refused.stderr
    bad_name = cli(env, "register", "load", str(workdir / "dnc.txt"), "--register", "US DNC", "--as-of", today())
    assert bad_name.returncode == 2 and "--register:" in bad_name.stderr
    bad_line = workdir / "bad.txt"
    bad_line.write_text("646,5550100\n111,5550100\n")
    failed = cli(env, "register", "load", str(bad_line), "--register", "us-dnc", "--as-of", today())
    assert failed.returncode == 1 and "bad.txt:2:" in failed.stderr and "nothing was loaded" in failed.stderr
    assert "555" not in failed.stderr  # errors name the line, never the number


async def test_the_us_pack_decides_us_callees_beside_italian_ones(
    broker: str, env: dict[str, str], worker: Worker
) -> None:
    decisions = await decide(
        broker,
        [
            intent("us-clear", "clear"),
            intent("us-listed", "listed"),
            intent("us-ebr", "ebr"),
            intent("us-reassigned", "reassigned"),
            intent("us-uncovered", "uncovered"),
            intent("us-fl-listed", "fl_listed"),
            intent("us-auto-no", "auto_no", automated=True),
            intent("us-auto-yes", "auto_yes", automated=True),
            intent("us-canada", "canada"),
            intent("us-canada-service", "canada", purpose="service"),
            intent("us-italy", "italy"),
            intent("us-no-caller", "clear", caller_id="anonymous"),
        ],
    )
    assert verdicts(decisions) == {
        "us-clear": ("allow", []),
        "us-listed": ("deny", ["national_dnc"]),
        "us-ebr": ("allow", ["ebr_inquiry"]),
        "us-reassigned": ("deny", ["national_dnc", "number_reassigned"]),
        "us-uncovered": ("deny", ["not_checked"]),
        "us-fl-listed": ("deny", ["state_dnc"]),
        "us-auto-no": ("deny", ["consent_required"]),
        "us-auto-yes": ("allow", ["consent"]),
        "us-canada": ("deny", ["no_policy_for_country"]),
        "us-canada-service": ("allow", []),  # the Italian test pack decides other purposes
        "us-italy": ("deny", ["not_checked"]),
        "us-no-caller": ("deny", ["caller_id_missing"]),
    }
    t = today()
    assert decisions["us-clear"]["versions"]["policy"] == "test-us-open"
    assert decisions["us-clear"]["versions"]["policy_set"] == "test-us-set"
    assert decisions["us-clear"]["versions"]["register:us-dnc"] == t
    assert decisions["us-fl-listed"]["versions"]["register:us-fl-dnc"] == t
    assert decisions["us-italy"]["versions"]["policy"] == "test-core"
    assert decisions["us-canada"]["versions"]["policy"] == "test-us-set"
    audit = await collect(broker, AUDIT_TOPIC, {"us-ebr", "us-reassigned", "us-canada"}, timeout=30)
    for records in audit.values():
        validate(records[-1], "audit")
    ebr = audit["us-ebr"][-1]
    assert {r["rule"]: r["outcome"] for r in ebr["rules"]}["do_not_call_registers"] == "allow_exception"
    assert ebr["facts"]["registers"] == [{"register": "us-dnc", "listed": True, "as_of": t}]
    voided = next(r for r in audit["us-reassigned"][-1]["rules"] if r["rule"] == "reassigned_numbers")
    assert voided["detail"]["disconnected_at"] == "2025-06-30" and len(voided["detail"]["voided"]) == 1


async def test_florida_allows_three_calls_a_day(broker: str, worker: Worker) -> None:
    decisions = await decide(broker, [intent(f"us-fl-{k}", "fl") for k in range(4)])
    assert [decisions[f"us-fl-{k}"]["decision"] for k in range(4)] == ["allow", "allow", "allow", "deny"]
    assert decisions["us-fl-3"]["reasons"] == ["frequency_cap"] and "not_before" in decisions["us-fl-3"]


async def test_live_opt_outs_relationships_and_abandoned_calls(broker: str, worker: Worker) -> None:
    first = await decide(
        broker, [intent("us-optout-0", "optout"), intent("us-camp-a", "camp_a", campaign_id="us-stop")]
    )
    assert verdicts(first) == {"us-optout-0": ("allow", []), "us-camp-a": ("allow", [])}
    async with GuardClient(broker, timeout=10) as guard:
        await guard.opt_out(N["optout"], CLIENT)
        # yesterday: "today" in Rome may still be tomorrow in New York, where the pack counts days
        yesterday = date.fromisoformat(today()) - timedelta(days=1)
        await guard.record_consent(N["listed"], CLIENT, "ebr_transaction", granted_at=yesterday)
        await guard.report_outcome("us-camp-a", "abandoned")  # no answered call: the campaign is over 3 %
    deadline = time.monotonic() + 30
    while True:
        stamp = int(time.time() * 1000)
        later = await decide(
            broker,
            [
                intent(f"us-optout-{stamp}", "optout"),
                intent(f"us-listed-{stamp}", "listed"),
                intent(f"us-camp-b-{stamp}", "camp_b", campaign_id="us-stop"),
            ],
        )
        got = [later[f"us-{k}-{stamp}"]["reasons"] for k in ("optout", "listed", "camp-b")]
        if got == [["internal_dnc"], ["ebr_transaction"], ["campaign_silent_rate"]] or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert got == [["internal_dnc"], ["ebr_transaction"], ["campaign_silent_rate"]]


async def test_a_reload_replaces_an_area_codes_list_and_an_old_one_is_stale(
    broker: str, env: dict[str, str], workdir: Path, worker: Worker
) -> None:
    before = await decide(broker, [intent("us-dropped-0", "dropped")])
    assert verdicts(before) == {"us-dropped-0": ("deny", ["national_dnc"])}
    t = date.fromisoformat(today())
    # 646's list of 40 days ago without the number: it is off the list, but the list is stale
    (workdir / "dnc-646.txt").write_text(f"646,{N['listed'][5:]}\n")
    old = str(t - timedelta(days=40))
    load_all(env, ("register", "load", str(workdir / "dnc-646.txt"), "--register", "us-dnc", "--as-of", old))
    stale = await decide(broker, [intent("us-dropped-1", "dropped"), intent("us-fl-clear-1", "fl_listed")])
    assert verdicts(stale) == {
        "us-dropped-1": ("deny", ["register_stale"]),
        "us-fl-clear-1": ("deny", ["state_dnc"]),  # 305 keeps its own list of today
    }
    assert stale["us-dropped-1"]["versions"]["register:us-dnc"] == old
    load_all(env, ("register", "load", str(workdir / "dnc-646.txt"), "--register", "us-dnc", "--as-of", str(t)))
    fresh = await decide(broker, [intent("us-dropped-2", "dropped")])
    assert verdicts(fresh) == {"us-dropped-2": ("allow", [])}


def test_status_shows_the_named_registers(env: dict[str, str], worker: Worker) -> None:
    status = cli(env, "status")
    assert status.returncode == 0, status.stderr
    assert "us-dnc" in status.stdout and "us-fl-dnc" in status.stdout and "every number" in status.stdout


def test_explain_decides_a_us_callee_by_the_us_pack(env: dict[str, str], worker: Worker) -> None:
    shown = cli(env, "explain", "--callee", N["listed"], "--operator-id", "us-op", "--client-id", "other-client",
                "--caller-id", CALLER, "--at", datetime.now(UTC).isoformat())  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert "policy test-us-open" in shown.stdout and "national_dnc" in shown.stdout
    assert N["listed"] not in shown.stdout  # numbers masked


def test_replay_reproduces_every_decision_of_this_module(env: dict[str, str], worker: Worker) -> None:
    answer = replay(env, "--policy", env["CALLGUARD_POLICY"], "--from", "topic")
    assert answer["records"] >= 25, answer
    assert (answer["replayed"], answer["changed"], answer["not_replayable"]) == (answer["records"], 0, 0), answer
    assert set(answer["recorded_policies"]) == {"test-us-open", "test-core", "test-us-set"}


async def test_calling_hours_closed_at_the_callees_location(
    broker: str, env: dict[str, str], workdir: Path, worker: Worker
) -> None:
    """A pack whose window excludes the present hour in New York: the worker
    denies outside_calling_hours with the window's next opening."""
    now = datetime.now(NY)
    start = (now.hour + 2) % 24
    if start > 22:  # a window of one hour that does not wrap midnight nor hold now
        start = 1 if now.hour not in (1, 2) else 4
    window = f"{start:02d}:00-{start + 1:02d}:00"
    opens = now.replace(hour=start, minute=0, second=0, microsecond=0)
    if opens <= now:
        opens += timedelta(days=1)
    (workdir / "us-open.toml").write_text(US_OPEN.replace('"00:00-24:00"', f'"{window}"'))
    worker.stop()
    closed = Worker(env, workdir / "worker-closed.log").start()
    try:
        decisions = await decide(broker, [intent("us-hours", "clear")])
    finally:
        closed.stop()
    (decision,) = decisions.values()
    assert (decision["decision"], decision["reasons"]) == ("deny", ["outside_calling_hours"])
    assert decision["not_before"] == opens.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    audit = await collect(broker, AUDIT_TOPIC, {"us-hours"}, timeout=30)
    hours = next(r for r in audit["us-hours"][-1]["rules"] if r["rule"] == "calling_hours")
    assert hours["detail"]["window"] == window and list(hours["detail"]["zones"]) == ["America/New_York"]


def test_every_reason_of_the_us_pack_was_given_and_validated_here() -> None:
    assert US_PACK_REASONS <= SEEN, US_PACK_REASONS - SEEN


async def test_a_batch_with_us_callees_is_still_one_redis_round_trip(
    embedded: Embedded, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The named registers' lists and their coverage are read inside the
    batch's one lookup script: one command for 500 intents, US and Italian."""
    from callguard.storage.factory import open_stores
    from callguard.storage.stores import Query

    stores = open_stores(embedded.redis_url, timeout=10)
    queries = [
        Query(N[name], CLIENT, "us-op", None, ("us-dnc", "us-fl-dnc") if N[name].startswith("+1305") else ("us-dnc",))
        for name in ("clear", "listed", "fl_listed", "fl", "uncovered")
    ] * 100
    queries += [Query(N["italy"], CLIENT, "us-op")]
    try:
        await stores.lookup(queries)  # loads the script once
        sent: list[str] = []
        original = type(stores.redis).execute_command

        async def counting(self: Any, *args: Any, **options: Any) -> Any:
            sent.append(str(args[0]))
            return await original(self, *args, **options)

        monkeypatch.setattr(type(stores.redis), "execute_command", counting)
        facts = await stores.lookup(queries)
    finally:
        await stores.close()
    assert sent == ["EVALSHA"]
    assert [f.registers["us-dnc"].listed for f in facts[:5]] == [False, True, False, False, False]
    assert facts[2].registers["us-fl-dnc"].listed and facts[4].registers["us-dnc"].as_of is None
    assert facts[-1].registers == {}
