"""Security for real: SASL/SCRAM-SHA-512 over TLS on Apache Kafka, end to end.

One broker for the module with a SASL_SSL listener: a CA and a broker
certificate made for the test (``openssl``), a PKCS12 keystore, and a SCRAM
user created when the storage is formatted. Every Kafka client callguard
makes goes through that listener: the worker (intents, opt-outs, decisions,
audit), ``POST /v1/check``, the Python client, ``callguard lag``, ``audit
verify`` and ``audit sink``. A wrong password or an untrusted certificate
gives one line and a non-zero exit within seconds, and no secret is printed.
Tansu has no TLS or SCRAM: the module skips on it.
"""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import orjson
import pytest

from callguard.client import GuardClient, GuardDecision, GuardUnavailable
from callguard.config import kafka_security, load_settings
from callguard.dev.embedded import Certificates, KafkaSaslSsl, Server, make_test_certificates, start_kafka, start_redis
from tests.conftest import Worker, broker_kind, cli, env_for, today, write_csv

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(broker_kind() != "kafka", reason="needs Apache Kafka (Tansu has no TLS or SCRAM)"),
]

USER = "callguard-worker"
# numbers of this module (its own Redis): +39 354 000 00NN
CLEAR, OPPOSED, LATER = (f"+39354000{n:04d}" for n in range(3))


@dataclass
class Secured:
    broker: Server
    certs: Certificates
    password: str
    env: dict[str, str]  # every CALLGUARD_KAFKA_* setting for the SASL_SSL listener
    check_token: str  # a bearer token for POST /v1/check (operator sec-op, client acme)


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    workdir = tmp_path_factory.mktemp("sasl-ssl")
    certs = make_test_certificates(workdir / "tls")
    password = secrets.token_urlsafe(18)
    broker = start_kafka(workdir, sasl_ssl=KafkaSaslSsl(certs.keystore, certs.keystore_password, {USER: password}))
    redis_server = start_redis(workdir)
    env = env_for(
        broker.secure_url,
        f"redis://127.0.0.1:{redis_server.port}/0",
        CALLGUARD_APP_ID="callguard-sasl",
        CALLGUARD_KAFKA_SECURITY_PROTOCOL="SASL_SSL",
        CALLGUARD_KAFKA_SASL_MECHANISM="SCRAM-SHA-512",
        CALLGUARD_KAFKA_SASL_USERNAME=USER,
        CALLGUARD_KAFKA_SASL_PASSWORD=password,
        CALLGUARD_KAFKA_CA_FILE=str(certs.ca_file),
    )
    ops = write_csv(
        workdir / "ops.csv",
        "operator_id,status,valid_from,valid_until,caller_ids",
        ["sec-op,active,2024-01-01,2030-12-31,"],
    )
    reg = write_csv(workdir / "reg.csv", "number,status", [f"{CLEAR},clear", f"{OPPOSED},opposed", f"{LATER},clear"])
    for argv in (
        ("operators", "load", str(ops)),
        ("register", "load", str(reg), "--as-of", today(), "--client", "acme"),
    ):
        result = cli(env, *argv)
        assert result.returncode == 0, result.stderr
    issued = cli(env, "tokens", "issue", "--operator-id", "sec-op", "--client-id", "acme")
    assert issued.returncode == 0, issued.stderr
    try:
        yield Secured(broker, certs, password, env, issued.stdout.strip())
    finally:
        redis_server.stop()
        broker.stop()


@pytest.fixture(scope="module")
def secure_worker(secured: Secured, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    running = Worker(secured.env, tmp_path_factory.mktemp("sasl-worker") / "worker.log").start()
    yield running
    running.stop()


def post_check(port: int, body: dict[str, str], token: str) -> dict[str, object]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/check",
        data=orjson.dumps(body),
        headers={"Authorization": f"Bearer {token}"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        answer: dict[str, object] = orjson.loads(response.read())
        return answer


async def test_every_kafka_client_works_over_sasl_ssl(
    secured: Secured, secure_worker: Worker, postgres: Server, tmp_path: Path
) -> None:
    security = kafka_security(load_settings(environ=secured.env))
    assert security["security_protocol"] == "SASL_SSL" and security["sasl_mechanism"] == "SCRAM-SHA-512"
    # the Python client: checks, and an opt-out through its topic that the worker's agent applies
    async with GuardClient(secured.broker.secure_url, timeout=20, security=security) as client:
        clear, opposed = await asyncio.gather(
            client.check(CLEAR, "sec-op", "acme"), client.check(OPPOSED, "sec-op", "acme")
        )
        assert isinstance(clear, GuardDecision) and clear.allowed, clear
        assert isinstance(opposed, GuardDecision) and "opposition_register" in opposed.reasons, opposed
        await client.opt_out(LATER, "acme")
        deadline = time.monotonic() + 30
        while True:
            later = await client.check(LATER, "sec-op", "acme")
            assert isinstance(later, GuardDecision)
            if "internal_dnc" in later.reasons:
                break
            assert time.monotonic() < deadline, f"the opt-out never took effect: {later}"
            await asyncio.sleep(0.5)

    # POST /v1/check: the worker's own client, through the same listener
    answer = await asyncio.to_thread(
        post_check,
        secure_worker.web_port,
        {"callee": CLEAR, "operator_id": "sec-op", "client_id": "acme"},
        secured.check_token,
    )
    assert answer["decision"] == "allow", answer

    # the operator's commands
    lag = cli(secured.env, "lag", "--json", "--samples", "1")
    assert lag.returncode == 0, lag.stderr
    sample = orjson.loads(lag.stdout.splitlines()[-1])
    assert len(sample["partitions"]) == 6
    verified = cli(secured.env, "audit", "verify")
    assert verified.returncode == 0 and "intact" in verified.stdout, verified.stdout + verified.stderr

    store_env = {**secured.env, "CALLGUARD_AUDIT_DSN": postgres.url}
    with (tmp_path / "sink.log").open("wb") as log:
        sink = subprocess.Popen(
            [sys.executable, "-m", "callguard", "audit", "sink"], env=store_env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 60
        while (stored := await stored_intents(postgres.url, answer["intent_id"])) == 0:
            assert sink.poll() is None, (tmp_path / "sink.log").read_text()
            assert time.monotonic() < deadline, "the sink stored nothing within 60 s"
            await asyncio.sleep(0.3)
    finally:
        sink.terminate()
        sink.wait(20)
    assert stored == 1
    for output in (lag.stdout + lag.stderr, verified.stdout + verified.stderr, (tmp_path / "sink.log").read_text()):
        assert secured.password not in output
    assert secured.password not in secure_worker.log_path.read_text()


async def stored_intents(dsn: str, intent_id: object) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM callguard_audit WHERE intent_id = $1", intent_id))
    except asyncpg.UndefinedTableError:
        return 0
    finally:
        await conn.close()


# --- refused: one line, a non-zero exit within seconds, no secret -----------------

COMMANDS = [("worker",), ("lag",), ("audit", "verify"), ("audit", "sink")]


def refused(env: dict[str, str], argv: tuple[str, ...]) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "callguard", *argv], env=env, capture_output=True, text=True, timeout=60
    )
    return result, time.monotonic() - started


def assert_one_line(result: subprocess.CompletedProcess[str], took: float, expected: str, secrets_: list[str]) -> None:
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert result.returncode != 0, lines
    assert took < 20, f"{took:.1f} s"
    assert len(lines) == 1 and expected in lines[0], lines
    for secret in secrets_:
        assert secret not in result.stdout + result.stderr


@pytest.mark.parametrize("argv", COMMANDS, ids=" ".join)
def test_a_wrong_password_is_one_line_and_a_quick_exit(secured: Secured, argv: tuple[str, ...]) -> None:
    wrong = "not-" + secured.password
    env = {
        **secured.env,
        "CALLGUARD_KAFKA_SASL_PASSWORD": wrong,
        "CALLGUARD_AUDIT_DSN": "postgresql://nobody@127.0.0.1:9/x",
    }
    result, took = refused(env, argv)
    print(
        f"\n{' '.join(argv)} with a wrong password: exit {result.returncode} after {took:.1f} s: {result.stderr.strip()}"
    )
    assert_one_line(result, took, f"refused the SASL SCRAM-SHA-512 login of user '{USER}'", [wrong, secured.password])


@pytest.mark.parametrize("argv", COMMANDS, ids=" ".join)
def test_an_untrusted_certificate_is_one_line_and_a_quick_exit(
    secured: Secured, argv: tuple[str, ...], tmp_path: Path
) -> None:
    other = make_test_certificates(tmp_path / "other", name="another CA")  # trusts a CA that did not sign the broker's
    env = {
        **secured.env,
        "CALLGUARD_KAFKA_CA_FILE": str(other.ca_file),
        "CALLGUARD_AUDIT_DSN": "postgresql://nobody@127.0.0.1:9/x",
    }
    result, took = refused(env, argv)
    print(
        f"\n{' '.join(argv)} with an untrusted certificate: exit {result.returncode} after {took:.1f} s: {result.stderr.strip()}"
    )
    assert_one_line(result, took, "presented a TLS certificate that is not trusted", [secured.password])


async def test_the_client_says_why_the_broker_refused_it(secured: Secured, tmp_path: Path) -> None:
    settings = load_settings(environ={**secured.env, "CALLGUARD_KAFKA_SASL_PASSWORD": "wrong-password"})
    started = time.monotonic()
    with pytest.raises(GuardUnavailable) as wrong:
        await GuardClient(secured.broker.secure_url, security=kafka_security(settings)).start()
    assert "refused the SASL SCRAM-SHA-512 login" in str(wrong.value) and "wrong-password" not in str(wrong.value)
    untrusted = load_settings(environ={k: v for k, v in secured.env.items() if k != "CALLGUARD_KAFKA_CA_FILE"})
    with pytest.raises(GuardUnavailable) as system_cas:  # the system's CAs do not know the test CA
        await GuardClient(secured.broker.secure_url, security=kafka_security(untrusted)).start()
    assert "not trusted" in str(system_cas.value)
    assert time.monotonic() - started < 20
