"""The SIP edge: Kamailio with ``deploy/sip/kamailio.cfg``, as shipped,
in front of a callee endpoint, asking a real worker's ``POST /v1/check``.

The dialers and the callee are :class:`callguard.client.sip.UserAgent` s: raw SIP
over UDP, so every header of every answer and every INVITE that reached the
callee can be checked. Kamailio runs with its configuration's own defines
pointed at loopback ports (``embedded.start_kamailio``).

Numbers of this module: +39 346 0NN NNNN (even: opposed, odd: clear, for client
``sip-acme``); intent ids start with ``sip-``. The session's worker decides the
first tests; a stack of the module's own (broker, Redis, a worker with a
frequency cap of one call an hour) serves the deny that time lifts and the
failures, where servers are frozen and stopped.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import orjson
import pytest

from callguard.client.sip import CallResult, UserAgent
from callguard.core.schema import AUDIT_TOPIC, DECISIONS_TOPIC
from callguard.dev.embedded import Server, free_udp_port, kamailio_unavailable, start_kamailio, start_redis
from tests.conftest import Worker, cli, collect, env_for, load_all, operators_csv, start_test_broker, today, write_csv
from tests.contract.validation import validate
from tests.paths import POLICIES, ROOT

pytestmark = pytest.mark.e2e

OPERATOR, CLIENT = "sip-op", "sip-acme"
#: seconds the proxy waits for a check (CALLGUARD_TIMEOUT), above the workers' 2 s check timeout
PROXY_TIMEOUT = 3


def number(n: int) -> str:
    return f"+393460{n:06d}"


@pytest.fixture(scope="module", autouse=True)
def kamailio_here() -> None:
    reason = kamailio_unavailable()
    if reason:
        pytest.skip(reason)


def issue(env: dict[str, str], operator: str, *clients: str, name: str) -> str:
    argv = [
        "tokens",
        "issue",
        "--operator-id",
        operator,
        "--name",
        name,
        *(a for c in clients for a in ("--client-id", c)),
    ]
    result = cli(env, *argv)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def dialers_file(path: Path, lines: dict[int, str]) -> Path:
    """The proxy's dialers file: one source port of 127.0.0.1 per line."""
    path.write_text("# test dialers\n" + "".join(f"1 127.0.0.1 32 {port} {tag}\n" for port, tag in lines.items()))
    return path


def warm_up(web_port: int, token: str, callee: str) -> None:
    """One HTTP check, so the endpoint's Kafka client has started (it starts at the
    first check, which can take longer than the proxy waits)."""
    body = orjson.dumps({"callee": callee, "operator_id": OPERATOR, "client_id": CLIENT})
    request = urllib.request.Request(
        f"http://127.0.0.1:{web_port}/v1/check", data=body, headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        assert response.status == 200


@dataclass
class Edge:
    """A Kamailio with the shipped configuration, its callee, and dialers by name."""

    kamailio: Server
    callee: UserAgent
    dialers: dict[str, UserAgent]

    @property
    def proxy(self) -> tuple[str, int]:
        return ("127.0.0.1", self.kamailio.port)

    async def call(self, dialer: str, callee: str, *headers: tuple[str, str], **options: bool) -> CallResult:
        return await self.dialers[dialer].call(self.proxy, callee, headers=headers, timeout=15, **options)

    async def reached(self, callee: str, settle: float = 1.0) -> list[str]:
        """The intent ids of the INVITEs for ``callee`` that reached the callee
        endpoint, after ``settle`` seconds for any late one."""
        await asyncio.sleep(settle)
        return [i.header("X-Callguard-Intent") or "" for i in self.callee.invites if f"sip:{callee}@" in i.uri]


async def start_edge(workdir: Path, web_port: int, lines: dict[str, str]) -> Edge:
    """Dialers on the ports of their lines, the callee, and Kamailio (last: it reads the dialers file at start)."""
    ports = {name: free_udp_port() for name in lines}
    dialers = dialers_file(workdir / "dialers.list", {ports[name]: tag for name, tag in lines.items() if tag})
    callee = await UserAgent.listen(answer=200)
    agents = {name: await UserAgent.listen("127.0.0.1", port) for name, port in ports.items()}
    check_url = f"http://127.0.0.1:{web_port}/v1/check"
    kamailio = await asyncio.to_thread(
        start_kamailio, workdir, callee.address, check_url, dialers, timeout=PROXY_TIMEOUT
    )
    return Edge(kamailio, callee, agents)


def stop_edge(edge: Edge) -> None:
    edge.kamailio.stop()
    for agent in (edge.callee, *edge.dialers.values()):
        agent.close()
    # nothing this module's dialers sent was logged with a number in clear
    assert "+39346" not in edge.kamailio.log_path.read_text(errors="replace"), edge.kamailio.log_tail()


# --- on the session's worker ------------------------------------------------------------------


@pytest.fixture(scope="module")
async def edge(env: dict[str, str], worker: Worker, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Edge]:
    d = tmp_path_factory.mktemp("sip")
    rows = [f"{number(n)},{'opposed' if n % 2 == 0 else 'clear'},2024-02-01" for n in range(40)]
    optouts = write_csv(d / "optouts.csv", "callee,client_id,at", [f"{number(4)},{CLIENT},2025-09-15"])
    load_all(
        env,
        ("operators", "load", str(operators_csv(d, [f"{OPERATOR},active,2024-01-01,2030-12-31,"]))),
        ("register", "load", str(write_csv(d / "register.csv", "number,status,registered_at", rows)),
         "--as-of", today(), "--client", CLIENT),
        ("optouts", "load", str(optouts)),
    )  # fmt: skip
    token = issue(env, OPERATOR, CLIENT, name="sip-dialer")
    revoked = issue(env, OPERATOR, CLIENT, name="sip-revoked")
    assert cli(env, "tokens", "revoke", "sip-revoked").returncode == 0
    elsewhere = issue(env, "sip-other-op", name="sip-other")
    await asyncio.to_thread(warm_up, worker.web_port, token, number(39))
    lines = {
        "ok": f"operator={OPERATOR};token={token};client={CLIENT}",
        "revoked": f"operator={OPERATOR};token={revoked};client={CLIENT}",
        "other-operator": f"operator={OPERATOR};token={elsewhere};client={CLIENT}",
        "no-token": f"operator={OPERATOR};client={CLIENT}",
        "unknown": "",  # sends from a port the dialers file does not name
    }
    running = await start_edge(d, worker.web_port, lines)
    yield running
    stop_edge(running)


async def test_an_allowed_call_reaches_the_callee_with_its_intent_id(edge: Edge, embedded) -> None:
    result = await edge.call("ok", number(1), ("X-Callguard-Campaign", "sip-autumn"))
    assert (result.status, result.reason) == (200, "OK"), result
    intent_id = result.header("X-Callguard-Intent")
    assert intent_id is not None and intent_id.startswith("http-")
    assert await edge.reached(number(1), settle=0.2) == [intent_id]
    invite = next(i for i in edge.callee.invites if i.header("X-Callguard-Intent") == intent_id)
    # the dialer's own callguard headers stay at the proxy; the dialog went through it
    assert [h for h, _ in invite.headers if h.lower().startswith("x-callguard-")] == ["X-Callguard-Intent"]
    assert invite.header("Record-Route") is not None
    methods = [r.method for r in edge.callee.requests if r.header("Call-ID") == invite.header("Call-ID")]
    assert sorted(methods) == ["ACK", "BYE", "INVITE"]  # ACK and BYE may cross in the proxy
    # the same decision is on the topic, and the intent the proxy built is in the evidence
    decision = (await collect(embedded.broker_url, DECISIONS_TOPIC, {intent_id}))[intent_id][0]
    assert (decision["decision"], decision["reasons"], decision["callee"]) == ("allow", [], number(1))
    validate(decision, "decision")
    audit = (await collect(embedded.broker_url, AUDIT_TOPIC, {intent_id}))[intent_id][0]
    assert {k: audit["intent"].get(k) for k in ("callee", "operator_id", "client_id", "campaign_id", "caller_id")} == {
        "callee": number(1), "operator_id": OPERATOR, "client_id": CLIENT, "campaign_id": "sip-autumn",
        "caller_id": "+390844000001",
    }  # fmt: skip


async def test_a_dialer_may_name_the_intent_and_the_client(edge: Edge, embedded) -> None:
    result = await edge.call("ok", number(3), ("X-Callguard-Intent", "sip-own-3"), ("X-Callguard-Client", CLIENT),
                             ("X-Callguard-Purpose", "survey"))  # fmt: skip
    assert result.status == 200 and result.header("X-Callguard-Intent") == "sip-own-3"
    assert await edge.reached(number(3), settle=0.2) == ["sip-own-3"]
    audit = (await collect(embedded.broker_url, AUDIT_TOPIC, {"sip-own-3"}))["sip-own-3"][0]
    assert (audit["intent"]["client_id"], audit["intent"]["purpose"]) == (CLIENT, "survey")


@pytest.mark.parametrize(
    ("n", "reasons"),
    [(2, "opposition_register"), (4, "opposition_register,internal_dnc"), (41, "not_checked")],
)
async def test_a_denied_call_is_refused_with_its_reasons_and_never_reaches_the_callee(
    edge: Edge, embedded, n: int, reasons: str
) -> None:
    result = await edge.call("ok", number(n))
    assert (result.status, result.reason) == (603, "Decline"), result
    assert result.header("X-Callguard-Decision") == "deny"
    intent_id = result.header("X-Callguard-Intent")
    assert intent_id is not None
    decision = (await collect(embedded.broker_url, DECISIONS_TOPIC, {intent_id}))[intent_id][0]
    assert decision["decision"] == "deny" and ",".join(decision["reasons"]) == result.header("X-Callguard-Reasons")
    assert sorted(reasons.split(",")) == sorted(decision["reasons"])
    assert result.header("Retry-After") is None and "not_before" not in decision  # time alone lifts none of these
    assert result.provisional == [100]
    assert await edge.reached(number(n)) == []


@pytest.mark.parametrize(
    ("dialer", "headers", "error"),
    [
        ("unknown", (), "this proxy does not know the dialer at 127.0.0.1:"),
        ("no-token", (), "the dialers file gives this dialer no operator or no token"),
        ("revoked", (), "callguard answered 401: "),
        ("other-operator", (), "callguard answered 403: "),
        ("ok", (("X-Callguard-Client", "sip-beta"),), "callguard answered 403: "),
    ],
)
async def test_without_a_valid_token_nothing_is_relayed(
    edge: Edge, embedded, dialer: str, headers: tuple[tuple[str, str], ...], error: str
) -> None:
    intent_id = f"sip-token-{dialer}-{len(headers)}"
    result = await edge.call(dialer, number(5), ("X-Callguard-Intent", intent_id), *headers)
    assert (result.status, result.reason) == (403, "Forbidden"), result
    assert (result.header("X-Callguard-Error") or "").startswith(error), result.header("X-Callguard-Error")
    assert result.header("X-Callguard-Decision") is None
    assert await edge.reached(number(5)) == []
    # nothing was published: no decision, no audit record, no count against the callee
    assert await collect(embedded.broker_url, DECISIONS_TOPIC, {intent_id}, timeout=4, idle=3) == {}


@pytest.mark.parametrize(
    ("callee", "headers", "error"),
    [
        ("anonymous", (), "the Request-URI's user part is not a phone number"),
        (number(7), (("X-Callguard-Client", 'sip"acme'),), "X-Callguard-Client is not a plain id"),
        (number(7), (("X-Callguard-Campaign", "a b"),), "X-Callguard-Campaign is not a plain id"),
        (number(7), (("X-Callguard-Intent", "x" * 129),), "X-Callguard-Intent is not a plain id"),
        (number(7), (("X-Callguard-Purpose", "sales"),), "X-Callguard-Purpose must be marketing, survey"),
        (number(7), (("X-Callguard-Automated", "yes"),), "X-Callguard-Automated must be true or false"),
    ],
)
async def test_what_the_check_cannot_take_is_refused_before_asking(
    edge: Edge, callee: str, headers: tuple[tuple[str, str], ...], error: str
) -> None:
    result = await edge.call("ok", callee, *headers)
    assert (result.status, result.reason) == (403, "Forbidden"), result
    assert (result.header("X-Callguard-Error") or "").startswith(error), result.header("X-Callguard-Error")
    assert await edge.reached(callee) == []


async def test_an_id_of_128_characters_is_taken(edge: Edge) -> None:
    intent_id = "sip-" + "x" * 124
    result = await edge.call("ok", number(9), ("X-Callguard-Intent", intent_id))
    assert result.status == 200 and result.header("X-Callguard-Intent") == intent_id


async def test_a_request_that_only_looks_like_part_of_a_call_places_no_call(edge: Edge) -> None:
    result = await edge.call("ok", number(11), in_dialog=True)
    assert result.status == 403 and result.header("X-Callguard-Error") == "not within a call this proxy allowed"
    assert await edge.reached(number(11)) == []


# --- on a stack of the module's own: a frequency cap, frozen and stopped servers --------------


@dataclass
class Lone:
    edge: Edge
    worker: Worker
    redis: Server
    broker_url: str


@pytest.fixture(scope="module")
async def lone(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Lone]:
    d = tmp_path_factory.mktemp("sip-lone")
    (d / "broker").mkdir()
    (d / "redis").mkdir()
    broker = start_test_broker(d / "broker")
    redis_server = start_redis(d / "redis")
    env = env_for(
        f"kafka://127.0.0.1:{broker.port}", f"redis://127.0.0.1:{redis_server.port}/0",
        CALLGUARD_POLICY=str(POLICIES / "sip-cap.toml"), CALLGUARD_APP_ID="callguard-sip", CALLGUARD_REDIS_TIMEOUT="1",
    )  # fmt: skip
    rows = [f"{number(n)},clear,2024-02-01" for n in range(100, 120)]
    load_all(
        env,
        ("operators", "load", str(write_csv(d / "operators.csv", "operator_id,status,valid_from,valid_until,caller_ids,country",
                                            [f"{OPERATOR},active,2024-01-01,2030-12-31,"]))),
        ("register", "load", str(write_csv(d / "register.csv", "number,status,registered_at", rows)),
         "--as-of", today(), "--client", CLIENT),
    )  # fmt: skip
    token = issue(env, OPERATOR, CLIENT, name="sip-lone")
    worker = Worker(env, d / "worker.log").start()
    running: Edge | None = None
    try:
        await asyncio.to_thread(warm_up, worker.web_port, token, number(119))
        running = await start_edge(d, worker.web_port, {"ok": f"operator={OPERATOR};token={token};client={CLIENT}"})
        yield Lone(running, worker, redis_server, env["CALLGUARD_BROKER"])
    finally:
        for process in (worker.process, redis_server.process):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGCONT)
        if running is not None:
            stop_edge(running)
        worker.stop()
        redis_server.stop()
        broker.stop()


async def test_a_deny_that_time_lifts_says_when_in_retry_after(lone: Lone) -> None:
    first = await lone.edge.call("ok", number(101))
    assert first.status == 200
    second = await lone.edge.call("ok", number(101))
    answered_at = time.time()
    assert (second.status, second.header("X-Callguard-Reasons")) == (603, "frequency_cap"), second
    intent_id = second.header("X-Callguard-Intent") or ""
    decision = (await collect(lone.broker_url, DECISIONS_TOPIC, {intent_id}))[intent_id][0]
    not_before = decision["not_before"]
    assert second.header("X-Callguard-Not-Before") == not_before
    # the first call's slot frees an hour after it was allowed: Retry-After is the
    # seconds from the answer to not_before, rounded up
    expected = math.ceil(datetime.fromisoformat(not_before).timestamp() - answered_at)
    assert 3590 < expected <= 3600
    assert expected - 1 <= int(second.header("Retry-After") or "-1") <= expected + 1
    assert await lone.edge.reached(number(101)) == [first.header("X-Callguard-Intent")]


async def test_a_call_the_dialer_cancels_while_it_is_checked_is_not_relayed(lone: Lone) -> None:
    worker = lone.worker
    assert worker.process is not None
    worker.process.send_signal(signal.SIGSTOP)  # the check waits ...
    try:
        call = asyncio.create_task(
            lone.edge.call("ok", number(109), ("X-Callguard-Intent", "sip-cancel-1"), cancel_after=0.5)
        )
        await asyncio.sleep(1.0)
    finally:
        worker.process.send_signal(signal.SIGCONT)  # ... and is answered, an allow, after the CANCEL
    result = await call
    # the proxy's transaction answers the CANCEL at once: 487 for the INVITE
    assert result.status == 487 and result.setup_seconds < 1.0, result
    decision = (await collect(lone.broker_url, DECISIONS_TOPIC, {"sip-cancel-1"}))["sip-cancel-1"][0]
    assert decision["decision"] == "allow"
    logged = "allow intent=sip-cancel-1, but the INVITE was cancelled: not relayed"
    for _ in range(50):
        if logged in lone.edge.kamailio.log_path.read_text():
            break
        await asyncio.sleep(0.1)
    assert logged in lone.edge.kamailio.log_path.read_text(), lone.edge.kamailio.log_tail()
    assert await lone.edge.reached(number(109)) == []


async def test_without_a_decision_no_call_is_relayed(lone: Lone) -> None:
    edge, worker = lone.edge, lone.worker
    assert worker.process is not None

    # Redis frozen: the worker cannot look anything up and decides lookup_unavailable
    lone.redis.process.send_signal(signal.SIGSTOP)
    try:
        result = await edge.call("ok", number(103))
    finally:
        lone.redis.process.send_signal(signal.SIGCONT)
    assert (result.status, result.reason) == (503, "Service Unavailable"), result
    assert result.header("X-Callguard-Reasons") == "lookup_unavailable"
    assert result.setup_seconds < PROXY_TIMEOUT + 1

    # the worker frozen: the proxy gives up after its timeout
    worker.process.send_signal(signal.SIGSTOP)
    try:
        result = await edge.call("ok", number(105))
    finally:
        worker.process.send_signal(signal.SIGCONT)
    assert (result.status, result.header("X-Callguard-Error")) == (
        503, f"no answer from callguard within {PROXY_TIMEOUT} s: not called"
    ), result  # fmt: skip
    assert PROXY_TIMEOUT <= result.setup_seconds < PROXY_TIMEOUT + 1.5

    # the worker stopped: nothing listens
    worker.stop()
    result = await edge.call("ok", number(107))
    assert (result.status, result.header("X-Callguard-Error")) == (503, "cannot connect to callguard: not called")
    assert result.setup_seconds < 1

    for n in (103, 105, 107):
        assert await edge.reached(number(n), settle=0.5) == []


# --- the README's walkthrough, as a new user runs it ------------------------------------------


def test_the_walkthrough_shows_an_allowed_call_relayed_and_a_denied_one_refused_at_the_proxy() -> None:
    example = ROOT / "examples" / "sip_edge.py"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLGUARD_")}
    done = subprocess.run([sys.executable, str(example)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert re.search(r"^INVITE \+39347\*{5}01 via 127\.0\.0\.1:\d+: 200 OK \(\d+ ms\)$", out, re.MULTILINE), out
    assert re.search(r"^INVITE \+39347\*{5}50 via 127\.0\.0\.1:\d+: 603 Decline \(\d+ ms\)$", out, re.MULTILINE), out
    assert "  X-Callguard-Reasons: opposition_register,consent_required" in out
    # the stand-in carrier saw the allowed call only
    assert out.count("-> 200") == 1 and "INVITE +39347*****01 X-Callguard-Intent: http-" in out
    assert out.rstrip().endswith("stopped the proxy, the callee, the worker, the broker and Redis.")
