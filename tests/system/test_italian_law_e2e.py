"""The corrected Italian rules end to end: a real worker on a broker of its
own, the session's Redis, data loaded through the CLI as a user would.

- the public directories: an unlisted number needs a consent
  (``consent_required``), a listed one does not; ``versions.directory``;
- a register result loaded for every client only denies;
- register age (day D through D+14) and the contract grace (30 days, not 31);
- ``statistical`` with 0843, ``survey`` with 0844; service calls need a caller ID;
- automated calls need a consent;
- silent calls: the campaign over 3 per 100 is stopped
  (``campaign_silent_rate``), and after the 7-day block the next allow
  carries ``requires_operator``.

Numbers: ``+39 333 8xx xxxx`` (this module's range). Every decision is
validated against the shipped JSON Schema.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson
import pytest
import redis

from callguard.client import GuardClient
from callguard.dev.embedded import Embedded
from tests.conftest import (
    Worker,
    assert_replays_exactly,
    cli,
    env_for,
    load_all,
    mandates_csv,
    operators_csv,
    start_test_broker,
    today,
    write_csv,
)
from tests.conftest import (
    decide_intents as decide,
)
from tests.contract.validation import validate

pytestmark = pytest.mark.e2e

ITALIAN_LAW_REASONS = {"consent_required", "campaign_silent_rate"}
CLIENT = "il-acme"
N = {
    name: f"+3933380000{index:02d}"
    for index, name in enumerate(
        [
            "listed",
            "unlisted",
            "consented",
            "star_clear",
            "contract_30",
            "contract_31",
            "fresh_14",
            "stale_15",
            "automated",
            "automated_consent",
            "silent",
            "star_opposed",
            "statistical",
        ]
    )
}
LISTED = ["listed", "star_clear", "contract_30", "contract_31", "fresh_14", "stale_15", "automated"]
LISTED += ["automated_consent", "silent", "star_opposed", "statistical"]

POLICY = """
base = "it"
version = "test-e2e-italian-law"

[rules.caller_id]
require_prefix = true

[rules.calling_hours]
weekday = "00:00-24:00"
saturday = "00:00-24:00"
pre_holiday = "00:00-24:00"
sunday = "00:00-24:00"
holiday = "00:00-24:00"
"""


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A broker of this module's own: its worker decides by its own policy."""
    server = start_test_broker(tmp_path_factory.mktemp("law-broker"))
    yield f"kafka://127.0.0.1:{server.port}"
    server.stop()


@pytest.fixture(scope="module")
def env(broker: str, embedded: Embedded, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("law")
    policy = d / "policy.toml"
    policy.write_text(POLICY)
    environment = env_for(broker, embedded.redis_url, CALLGUARD_POLICY=str(policy))
    t = date.fromisoformat(today())
    mine = ["listed", "unlisted", "consented", "contract_30", "contract_31", "automated", "automated_consent", "silent"]
    files = {
        "ops": operators_csv(d, ["il-op,active,2024-01-01,2030-12-31,+39 0844 000222;+39 0843 000222"]),
        "mine": write_csv(d / "mine.csv", "number,status,registered_at",
                          [f"{N[k]},{'opposed,2024-02-01' if k.startswith('contract') else 'clear,'}" for k in mine]
                          + [f"{N['statistical']},clear,"]),
        "fresh": write_csv(d / "fresh.csv", "number,status", [f"{N['fresh_14']},clear"]),
        "stale": write_csv(d / "stale.csv", "number,status", [f"{N['stale_15']},clear"]),
        "star": write_csv(d / "star.csv", "number,status", [f"{N['star_clear']},clear", f"{N['star_opposed']},opposed"]),
        "own_old": write_csv(d / "own_old.csv", "number,status", [f"{N['star_opposed']},clear"]),
        "directory": write_csv(d / "directory.csv", "number", [N[k] for k in LISTED]),
        "consents": write_csv(d / "consents.csv", "callee,client_id,basis,granted_at,ends_at",
                              [f"{N['consented']},{CLIENT},consent,2025-06-01,",
                               f"{N['automated_consent']},{CLIENT},consent,2025-06-01,",
                               f"{N['contract_30']},{CLIENT},contract,2020-01-01,{t - timedelta(days=30)}",
                               f"{N['contract_31']},{CLIENT},contract,2020-01-01,{t - timedelta(days=31)}"]),
    }  # fmt: skip
    load_all(
        environment,
        ("operators", "load", str(files["ops"])),
        ("mandates", "load", str(mandates_csv(d, [f"{CLIENT},il-op,2024-01-01,2030-12-31"]))),
        ("register", "load", str(files["mine"]), "--as-of", str(t), "--client", CLIENT),
        ("register", "load", str(files["fresh"]), "--as-of", str(t - timedelta(days=14)), "--client", CLIENT),
        ("register", "load", str(files["stale"]), "--as-of", str(t - timedelta(days=15)), "--client", CLIENT),
        ("register", "load", str(files["own_old"]), "--as-of", str(t - timedelta(days=1)), "--client", CLIENT),
        ("register", "load", str(files["star"]), "--as-of", str(t)),
        ("directory", "load", str(files["directory"]), "--as-of", str(t)),
        ("consents", "load", str(files["consents"])),
    )
    return environment


@pytest.fixture(scope="module")
def worker(env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    running = Worker(env, tmp_path_factory.mktemp("law-worker") / "worker.log").start()
    yield running
    running.stop()


def intent(intent_id: str, number: str, **extra: Any) -> dict[str, Any]:
    return {
        "intent_id": intent_id,
        "callee": N[number],
        "operator_id": "il-op",
        "client_id": CLIENT,
        "caller_id": "+39 0844 000222",
        "campaign_id": "il-camp",
        **extra,
    }


CASES: dict[str, tuple[dict[str, Any], str, list[str]]] = {
    "il-listed": (intent("il-listed", "listed"), "allow", []),
    "il-unlisted": (intent("il-unlisted", "unlisted"), "deny", ["consent_required"]),
    "il-consented": (intent("il-consented", "consented"), "allow", ["consent"]),
    "il-star-clear": (intent("il-star-clear", "star_clear"), "deny", ["not_checked"]),
    # the client's own clear result of yesterday loses to today's opposed result for every client
    "il-star-opposed": (intent("il-star-opposed", "star_opposed"), "deny", ["opposition_register"]),
    "il-contract-30": (intent("il-contract-30", "contract_30"), "allow", ["contract"]),
    "il-contract-31": (intent("il-contract-31", "contract_31"), "deny", ["opposition_register"]),
    "il-fresh-14": (intent("il-fresh-14", "fresh_14"), "allow", []),
    "il-stale-15": (intent("il-stale-15", "stale_15"), "deny", ["register_stale"]),
    "il-automated": (intent("il-automated", "automated", automated=True), "deny", ["consent_required"]),
    "il-automated-consent": (intent("il-automated-consent", "automated_consent", automated=True), "allow", ["consent"]),
    "il-statistical": (
        intent("il-statistical", "statistical", purpose="statistical", caller_id="+39 0843 000222"), "allow", []
    ),
    "il-statistical-0844": (intent("il-statistical-0844", "statistical", purpose="statistical"), "deny",
                            ["caller_id_wrong_prefix"]),
    "il-survey-0844": (intent("il-survey-0844", "listed", purpose="survey"), "allow", []),
    "il-survey-0843": (intent("il-survey-0843", "listed", purpose="survey", caller_id="+39 0843 000222"), "deny",
                       ["caller_id_wrong_prefix"]),
    "il-service-withheld": (intent("il-service-withheld", "unlisted", purpose="service", caller_id="private"), "deny",
                            ["caller_id_missing"]),
}  # fmt: skip


async def test_the_corrected_italian_rules_through_the_real_broker(broker: str, env: dict[str, str], worker: Worker):
    decisions = await decide(broker, [case for case, _, _ in CASES.values()])
    for intent_id, (_, verdict, reasons) in CASES.items():
        decision = decisions[intent_id]
        assert (decision["decision"], decision["reasons"]) == (verdict, reasons), intent_id
        assert decision["versions"]["directory"] == today()
        assert "requires_operator" not in decision


async def test_silent_calls_stop_the_campaign_and_the_next_call_needs_an_operator(
    broker: str, env: dict[str, str], worker: Worker
):
    first = await decide(broker, [intent("il-silent-1", "silent", campaign_id="il-loud")])
    assert first["il-silent-1"]["decision"] == "allow"
    async with GuardClient(broker, timeout=10) as guard:
        await guard.report_outcome("il-silent-1", "silent")
    wait_for(env, f"cg:callee:{N['silent']}", f"silent:{CLIENT}")
    after = await decide(
        broker,
        [
            intent("il-silent-next", "silent", campaign_id="il-quiet"),
            intent("il-loud-again", "listed", campaign_id="il-loud"),
        ],
    )
    assert after["il-silent-next"]["reasons"] == ["recent_silent_call"]
    assert "requires_operator" not in after["il-silent-next"]
    # 1 silent call and no answered one: the campaign is over 3 per 100 and stopped
    assert (after["il-loud-again"]["decision"], after["il-loud-again"]["reasons"]) == (
        "deny",
        ["campaign_silent_rate"],
    )
    status = cli(env, "status")
    assert status.returncode == 0, status.stderr
    line = next(line for line in status.stdout.splitlines() if line.startswith("campaign il-loud"))
    assert "silent 1" in line and "STOPPED" in line and "campaign_silent_rate" in line
    assert "directory: extract as of" in status.stdout

    # once the 7-day block is over the next call is allowed, with an operator ready
    later = (datetime.now(UTC) + timedelta(days=7, hours=1)).isoformat()
    probe = ["--callee", N["silent"], "--operator-id", "il-op", "--client-id", CLIENT, "--caller-id", "+390844000222"]
    explained = cli(env, "explain", *probe, "--campaign-id", "il-quiet", "--at", later, "--json")
    assert explained.returncode == 0, explained.stderr
    record = orjson.loads(explained.stdout)
    assert (record["decision"], record.get("requires_operator")) == ("allow", True)
    validate(record, "decision")
    before = (datetime.now(UTC) + timedelta(days=6, hours=23)).isoformat()
    explained = cli(env, "explain", *probe, "--campaign-id", "il-quiet", "--at", before, "--json")
    assert orjson.loads(explained.stdout)["reasons"] == ["recent_silent_call"]


def wait_for(env: dict[str, str], key: str, field: str, timeout: float = 30) -> None:
    """Until a worker applied the outcome (outcomes and intents are separate topics)."""
    client = redis.Redis.from_url(env["CALLGUARD_REDIS_URL"], decode_responses=True)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if client.hget(key, field):
                return
            time.sleep(0.2)
    finally:
        client.close()
    raise AssertionError(f"{field} of {key} never written")


def test_a_directory_file_with_a_bad_line_loads_nothing(env: dict[str, str], tmp_path) -> None:
    bad = write_csv(tmp_path / "bad.csv", "number", [N["unlisted"], "not a number"])
    result = cli(env, "directory", "load", str(bad), "--as-of", today())
    assert result.returncode == 1
    assert "bad.csv:3" in result.stderr and "nothing was loaded" in result.stderr
    future = cli(env, "directory", "load", str(bad), "--as-of", "2999-01-01")
    assert future.returncode != 0 and "in the future" in future.stderr
    refused = cli(env, "register", "load", str(bad), "--as-of", today(), "--client", "#directory")
    assert refused.returncode != 0


def test_replay_reproduces_every_decision_of_this_module(env: dict[str, str], worker: Worker) -> None:
    """Determinism: the decisions above (directory, register ages, contracts,
    automated calls, caller-ID prefixes, silent calls and campaign rates),
    decided again from their audit records under the same policy file."""
    assert_replays_exactly(env, "test-e2e-italian-law", len(CASES) + 3)
