"""Who may do what on Kafka, enforced by the broker: ``deploy/kafka/acls.sh`` on Apache Kafka.

One broker for the module: SASL/SCRAM-SHA-512 over TLS, KRaft's
``StandardAuthorizer``, nothing allowed without an ACL, and a super user
``callguard-admin`` (the administrator). The administrator runs the real
``deploy/kafka/topics.sh`` and ``deploy/kafka/acls.sh`` with Kafka's own tools
(``kafka-topics.sh``, ``kafka-acls.sh`` from the same jars); then every
callguard process runs under its own principal: the worker as
``callguard-worker``, the Python client as ``callguard-dialer``, opt-outs and
consents as ``callguard-consents``, ``audit verify`` as ``callguard-auditor``.
What a principal is not granted is refused with a clear error within seconds.
Tansu has no SASL, TLS or ACLs: the module skips on it.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import TopicAuthorizationFailedError
from redis.asyncio import Redis

from callguard.client import GuardClient, GuardDecision, GuardUnavailable
from callguard.config import kafka_security, load_settings
from callguard.dev.embedded import (
    KafkaSaslSsl,
    Server,
    kafka_authorizer_settings,
    kafka_tool_script,
    make_test_certificates,
    start_kafka,
    start_redis,
)
from callguard.storage.keys import callee_key
from tests.conftest import CORE_POLICY, Worker, broker_kind, cli, env_for, today, write_csv
from tests.paths import ROOT

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(broker_kind() != "kafka", reason="needs Apache Kafka (Tansu has no SASL, TLS or ACLs)"),
]

DEPLOY = ROOT / "deploy" / "kafka"
ADMIN, DIALER, CONSENTS, WORKER, AUDITOR = (
    "callguard-admin",
    "callguard-dialer",
    "callguard-consents",
    "callguard-worker",
    "callguard-auditor",
)
# numbers of this module (its own Redis): +39 355 000 00NN
CLEAR, OPPOSED, OPTED_OUT, CONSENTED = (f"+39355000{n:04d}" for n in range(4))


@dataclass
class Guarded:
    broker: Server
    passwords: dict[str, str]
    base: dict[str, str]  # the SASL_SSL settings without a user
    acls: subprocess.CompletedProcess[str]  # acls.sh's run
    admin_config: Path  # the administrator's client properties
    script_env: dict[str, str]  # PATH with kafka-acls.sh and kafka-topics.sh

    def run_acls(self, *flags: str, app_id: str = "callguard") -> subprocess.CompletedProcess[str]:
        """acls.sh as the administrator runs it, for the workers' group ``app_id``."""
        return subprocess.run(
            [str(DEPLOY / "acls.sh"), "--bootstrap-server", self.hosts, "--command-config", str(self.admin_config),
             *flags],
            env={**self.script_env, "CALLGUARD_APP_ID": app_id},
            capture_output=True,
            text=True,
            timeout=180,
        )  # fmt: skip

    def env(self, user: str, **extra: str) -> dict[str, str]:
        return {
            **self.base,
            "CALLGUARD_KAFKA_SASL_USERNAME": user,
            "CALLGUARD_KAFKA_SASL_PASSWORD": self.passwords[user],
            **extra,
        }

    def security(self, user: str) -> dict[str, Any]:
        return kafka_security(load_settings(environ=self.env(user)))

    @property
    def hosts(self) -> str:
        return self.broker.secure_url.split("://", 1)[1]


def run_scripts(workdir: Path, hosts: str, admin_config: Path, env: dict[str, str]) -> list[subprocess.Popen[str]]:
    """topics.sh and acls.sh as an administrator runs them (at once: ACLs may name topics not created yet)."""
    return [
        subprocess.Popen(
            [str(DEPLOY / script), "--bootstrap-server", hosts, "--command-config", str(admin_config)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for script in ("topics.sh", "acls.sh")
    ]


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guarded]:
    workdir = tmp_path_factory.mktemp("kafka-acls")
    certs = make_test_certificates(workdir / "tls")
    passwords = {user: secrets.token_urlsafe(18) for user in (ADMIN, DIALER, CONSENTS, WORKER, AUDITOR)}
    broker = start_kafka(
        workdir,
        sasl_ssl=KafkaSaslSsl(certs.keystore, certs.keystore_password, passwords),
        settings=kafka_authorizer_settings(f"User:{ADMIN}"),
    )
    redis_server = start_redis(workdir)
    try:
        # the administrator's client properties, as kafka-acls.sh and kafka-topics.sh take them
        admin_config = workdir / "admin.properties"
        admin_config.touch(mode=0o600)
        admin_config.write_text(
            "security.protocol=SASL_SSL\nsasl.mechanism=SCRAM-SHA-512\n"
            "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{ADMIN}" password="{passwords[ADMIN]}";\n'
            f"ssl.truststore.type=PEM\nssl.truststore.location={certs.ca_file}\n"
        )
        tools = workdir / "bin"
        kafka_tool_script(tools / "kafka-acls.sh", "org.apache.kafka.tools.AclCommand")
        kafka_tool_script(tools / "kafka-topics.sh", "org.apache.kafka.tools.TopicCommand")
        hosts = broker.secure_url.split("://", 1)[1]
        script_env = {**os.environ, "PATH": f"{tools}:{os.environ['PATH']}"}
        started = time.monotonic()
        topics, acls = run_scripts(workdir, hosts, admin_config, script_env)
        topics_out, _ = topics.communicate(timeout=180)
        acls_out, _ = acls.communicate(timeout=180)
        print(f"\ntopics.sh and acls.sh: {time.monotonic() - started:.1f} s")
        assert topics.returncode == 0, topics_out
        assert acls.returncode == 0, acls_out
        base = env_for(
            broker.secure_url,
            f"redis://127.0.0.1:{redis_server.port}/0",
            CALLGUARD_KAFKA_SECURITY_PROTOCOL="SASL_SSL",
            CALLGUARD_KAFKA_SASL_MECHANISM="SCRAM-SHA-512",
            CALLGUARD_KAFKA_CA_FILE=str(certs.ca_file),
        )
        ops = write_csv(
            workdir / "ops.csv",
            "operator_id,status,valid_from,valid_until,caller_ids",
            ["acl-op,active,2024-01-01,2030-12-31,"],
        )
        rows = [f"{CLEAR},clear", f"{OPPOSED},opposed", f"{OPTED_OUT},clear"]
        register = write_csv(workdir / "reg.csv", "number,status", rows)
        for argv in (
            ("operators", "load", str(ops)),
            ("register", "load", str(register), "--as-of", today(), "--client", "acme"),
        ):
            loaded = cli({**base, "CALLGUARD_KAFKA_SECURITY_PROTOCOL": "PLAINTEXT"}, *argv)  # Redis only
            assert loaded.returncode == 0, loaded.stderr
        yield Guarded(broker, passwords, base, subprocess.CompletedProcess([], 0, acls_out), admin_config, script_env)
    finally:
        redis_server.stop()
        broker.stop()


@pytest.fixture(scope="module")
def acl_worker(guarded: Guarded, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    """``callguard worker`` under the worker's principal, the app id acls.sh was given (the default)."""
    running = Worker(guarded.env(WORKER), tmp_path_factory.mktemp("acl-worker") / "worker.log").start()
    yield running
    running.stop()


def post_check(port: int, token: str, body: dict[str, str]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/check",
        data=orjson.dumps(body),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, orjson.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read())


async def publish_as(guarded: Guarded, user: str, topic: str, message: dict[str, Any], key: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=guarded.hosts, acks="all", **guarded.security(user))
    await producer.start()
    try:
        await asyncio.wait_for(producer.send_and_wait(topic, orjson.dumps(message), key=key.encode()), 20)
    finally:
        await producer.stop()


# --- what each principal may do ---------------------------------------------------------


async def test_the_worker_runs_under_its_own_narrower_credentials(guarded: Guarded, acl_worker: Worker) -> None:
    """Intents in (from the dialer), decisions and audit out, opt-outs and
    consents (from the consent source) applied, POST /v1/check through the
    worker's own client, the audit trail read by the auditor: every one of
    them under its own principal, on topics the administrator created."""
    assert "created topics" not in acl_worker.log_path.read_text()  # the administrator did

    async def check(client: GuardClient, callee: str) -> GuardDecision:
        decision = await client.check(callee, "acl-op", "acme")
        assert isinstance(decision, GuardDecision), decision
        return decision

    redis = Redis.from_url(guarded.base["CALLGUARD_REDIS_URL"])
    async with GuardClient(guarded.broker.secure_url, timeout=20, security=guarded.security(DIALER)) as dialer:
        clear, opposed, consented = await asyncio.gather(
            check(dialer, CLEAR), check(dialer, OPPOSED), check(dialer, CONSENTED)
        )
        assert clear.allowed, clear
        assert not opposed.allowed and "opposition_register" in opposed.reasons, opposed
        assert not consented.allowed and "not_checked" in consented.reasons, consented
        await dialer.report_outcome(clear.intent_id, "answered")  # the dialer may report outcomes

        # the consent source: an opt-out and a consent, each applied by the worker (the
        # opt-out denies; the consent is stored for the callee, which core.toml does not ask for)
        at = "2026-01-01T00:00:00Z"
        await publish_as(
            guarded, CONSENTS, "callguard.optouts", {"callee": OPTED_OUT, "client_id": "*", "at": at}, OPTED_OUT
        )
        consent = {"callee": CONSENTED, "client_id": "acme", "basis": "consent", "granted_at": at}
        await publish_as(guarded, CONSENTS, "callguard.consents", consent, CONSENTED)
        deadline = time.monotonic() + 30
        while True:
            opted_out = await check(dialer, OPTED_OUT)
            stored = await redis.hexists(callee_key(CONSENTED), "consent:acme")
            if "internal_dnc" in opted_out.reasons and stored:
                break
            assert time.monotonic() < deadline, f"not applied within 30 s: {opted_out}, consent stored: {stored}"
            await asyncio.sleep(0.5)
    await redis.aclose()

    # POST /v1/check: the worker's own client reads decisions and writes intents as the worker
    issued = cli(guarded.env(WORKER), "tokens", "issue", "--operator-id", "acl-op", "--name", "acl-dialer")
    assert issued.returncode == 0, issued.stderr
    deadline = time.monotonic() + 30
    while (answer := await asyncio.to_thread(
        post_check, acl_worker.web_port, issued.stdout.strip(),
        {"callee": CLEAR, "operator_id": "acl-op", "client_id": "acme"},
    ))[0] == 503:  # fmt: skip
        assert time.monotonic() < deadline, answer
        await asyncio.sleep(0.3)
    assert answer[0] == 200 and answer[1]["decision"] == "allow", answer

    # the auditor reads the audit trail: every chain intact
    verified = cli(guarded.env(AUDITOR), "audit", "verify")
    assert verified.returncode == 0 and "intact" in verified.stdout, verified.stdout + verified.stderr
    assert "uthoriz" not in acl_worker.log_path.read_text()  # the worker was refused nothing


# --- what each principal is refused: a clear error within seconds ----------------------


async def test_a_dialer_cannot_write_consents_or_optouts(guarded: Guarded, acl_worker: Worker) -> None:
    started = time.monotonic()
    async with GuardClient(guarded.broker.secure_url, timeout=20, security=guarded.security(DIALER)) as dialer:
        with pytest.raises(TopicAuthorizationFailedError, match=r"callguard\.consents"):
            await asyncio.wait_for(dialer.record_consent(CLEAR, "acme"), 20)
        with pytest.raises(TopicAuthorizationFailedError, match=r"callguard\.optouts"):
            await asyncio.wait_for(dialer.opt_out(CLEAR, "acme"), 20)
    for topic in ("callguard.consents", "callguard.decisions", "callguard.audit"):
        with pytest.raises(TopicAuthorizationFailedError, match=re.escape(topic)):
            await publish_as(guarded, DIALER, topic, {"callee": CLEAR, "client_id": "acme"}, CLEAR)
    assert time.monotonic() - started < 20


async def test_the_consent_source_uses_the_client_to_publish_but_cannot_check(
    guarded: Guarded, acl_worker: Worker
) -> None:
    """The consent source may not read ``callguard.decisions``: the Python
    client starts without a reader, publishes consents and opt-outs, and a
    check says why it cannot be made, at once (not a missing topic after the
    start timeout)."""
    started = time.monotonic()
    async with GuardClient(
        guarded.broker.secure_url, timeout=20, start_timeout=20, security=guarded.security(CONSENTS)
    ) as source:
        await source.record_consent(CONSENTED, "acme")
        await source.opt_out(OPTED_OUT, "acme")
        with pytest.raises(GuardUnavailable, match=r"do not let user 'callguard-consents' read callguard\.decisions"):
            await source.check(CLEAR, "acl-op", "acme")
    assert time.monotonic() - started < 15


async def test_the_consent_source_cannot_publish_intents(guarded: Guarded) -> None:
    started = time.monotonic()
    with pytest.raises(TopicAuthorizationFailedError, match=r"callguard\.intents"):
        await publish_as(guarded, CONSENTS, "callguard.intents", {"callee": CLEAR}, CLEAR)
    assert time.monotonic() - started < 20


@pytest.mark.parametrize("user", [DIALER, CONSENTS])
def test_only_the_auditor_reads_the_audit_trail_with_audit_commands(
    guarded: Guarded, user: str, acl_worker: Worker, tmp_path: Path
) -> None:
    """``audit verify``, ``audit export`` and ``replay --from topic`` under
    another principal say the broker refused it, instead of finding an empty trail."""
    for argv in (
        ("audit", "verify", "--no-checkpoints"),
        ("audit", "export", str(tmp_path / "out.jsonl")),
        ("replay", "--from", "topic", "--policy", CORE_POLICY),
    ):
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "callguard", *argv],
            env=guarded.env(user),
            capture_output=True,
            text=True,
            timeout=60,
        )
        took = time.monotonic() - started
        lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
        print(f"\n{' '.join(argv[:2])} as {user}: exit {result.returncode} after {took:.1f} s: {lines}")
        assert result.returncode != 0, lines
        assert took < 20, f"{took:.1f} s"
        assert len(lines) == 1 and f"do not let user '{user}' read callguard.audit" in lines[0], lines
        assert guarded.passwords[user] not in result.stdout + result.stderr


async def test_a_dialer_reading_the_audit_topic_directly_gets_nothing(guarded: Guarded, acl_worker: Worker) -> None:
    """A consumer of the dialer's that names the topic is told it is not
    authorized at once; a group of its own is refused too."""
    consumer = AIOKafkaConsumer(
        "callguard.audit", bootstrap_servers=guarded.hosts, group_id="dialer-peeks", **guarded.security(DIALER)
    )
    started = time.monotonic()
    with pytest.raises((TopicAuthorizationFailedError, Exception)) as refused:
        await asyncio.wait_for(consumer.start(), 20)
        await asyncio.wait_for(consumer.getmany(timeout_ms=5000), 20)
    await consumer.stop()
    print(f"\nthe dialer's consumer of callguard.audit: {type(refused.value).__name__}: {refused.value}")
    assert "uthoriz" in f"{type(refused.value).__name__} {refused.value}", refused.value
    assert time.monotonic() - started < 20


def test_acls_sh_grants_no_wildcard_and_no_cluster_operation(guarded: Guarded) -> None:
    printed = subprocess.run(
        [str(DEPLOY / "acls.sh"), "--print", "--exactly-once", "--worker-creates-topics"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    assert "*" not in printed and "--cluster" not in printed and "--resource-pattern-type prefixed" in printed
    assert "Adding ACLs" in guarded.acls.stdout


# --- the durable audit store under the auditor's principal -----------------------------


@pytest.fixture
def acl_store(postgres: Server) -> Iterator[str]:
    """A database of this module's own on the session's PostgreSQL."""
    import asyncpg

    async def run(sql: str) -> None:
        conn = await asyncpg.connect(postgres.url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run("DROP DATABASE IF EXISTS acl_audit"))
    asyncio.run(run("CREATE DATABASE acl_audit"))
    yield postgres.url.rsplit("/", 1)[0] + "/acl_audit"
    asyncio.run(run("DROP DATABASE IF EXISTS acl_audit WITH (FORCE)"))


def test_the_auditor_sinks_and_searches_the_trail_and_a_dialer_cannot(
    guarded: Guarded, acl_worker: Worker, acl_store: str, tmp_path: Path
) -> None:
    """``audit sink`` under the auditor's principal (its own group, the audit
    topic only: it creates no topic) stores the decisions and ``audit search``
    finds them; under the dialer's, each says the broker refused it in one line."""
    asyncio.run(decide_one(guarded, CLEAR))
    auditor = guarded.env(AUDITOR, CALLGUARD_AUDIT_DSN=acl_store)
    with (tmp_path / "sink.log").open("wb") as log:
        sink = subprocess.Popen(
            [sys.executable, "-m", "callguard", "audit", "sink"], env=auditor, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            found = cli(auditor, "audit", "search", "--callee", CLEAR, "--json")
            assert found.returncode == 0, found.stderr
            answer = orjson.loads(found.stdout)
            if answer["decisions"] and answer["lag_error"] is None and all(d["in_store"] for d in answer["decisions"]):
                break
            assert sink.poll() is None, (tmp_path / "sink.log").read_text()
            assert time.monotonic() < deadline, found.stdout
            time.sleep(0.5)
    finally:
        sink.terminate()
        sink.wait(30)
    log_text = (tmp_path / "sink.log").read_text()
    assert "uthoriz" not in log_text and "created topics" not in log_text, log_text

    dialer = guarded.env(DIALER, CALLGUARD_AUDIT_DSN=acl_store)
    started = time.monotonic()
    refused = subprocess.run(
        [sys.executable, "-m", "callguard", "audit", "sink"], env=dialer, capture_output=True, text=True, timeout=60
    )
    lines = [line for line in (refused.stdout + refused.stderr).splitlines() if line.strip()]
    assert refused.returncode == 2 and time.monotonic() - started < 20, lines
    assert len(lines) == 1 and "do not let user 'callguard-dialer' read callguard.audit" in lines[0], lines
    searched = cli(dialer, "audit", "search", "--callee", CLEAR, "--json")
    assert searched.returncode == 0, searched.stderr  # the store answers; the topic's part is refused, and said so
    assert "do not let user 'callguard-dialer' read callguard.audit" in orjson.loads(searched.stdout)["lag_error"]


async def decide_one(guarded: Guarded, callee: str) -> None:
    async with GuardClient(guarded.broker.secure_url, timeout=20, security=guarded.security(DIALER)) as dialer:
        decision = await dialer.check(callee, "acl-op", "acme")
        assert isinstance(decision, GuardDecision), decision


# --- the worker's options under the ACLs ------------------------------------------------


def metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


def test_an_exactly_once_worker_runs_under_the_acls_exactly_once_grants(
    guarded: Guarded, acl_worker: Worker, tmp_path: Path
) -> None:
    """``acls.sh --exactly-once`` for a group of its own: the worker's
    transactional producers are granted, it decides (every intent of the topic,
    from the start: a new group) with nothing refused. Its idempotent and
    transactional producers need no cluster-wide ACL (Kafka 4: Write on the
    topics and the transactional ids)."""
    granted = guarded.run_acls("--exactly-once", app_id="callguard-eos")
    assert granted.returncode == 0, granted.stdout + granted.stderr
    env = guarded.env(WORKER, CALLGUARD_APP_ID="callguard-eos", CALLGUARD_PROCESSING_GUARANTEE="exactly_once")
    asyncio.run(decide_one(guarded, OPPOSED))  # at least one intent in the topic for it
    worker = Worker(env, tmp_path / "eos.log").start()
    try:
        deadline = time.monotonic() + 60
        while metric(worker.web_port, "callguard_decisions_total") < 1:
            assert time.monotonic() < deadline, worker.log_tail()
            time.sleep(0.5)
    finally:
        worker.stop()
    log = worker.log_path.read_text()
    assert "uthoriz" not in log and "refuses an idempotent producer" not in log, log
    assert "refuses an idempotent producer" not in acl_worker.log_path.read_text()


def test_lag_under_the_workers_principal_and_refused_to_the_dialer(guarded: Guarded, acl_worker: Worker) -> None:
    """An SRE runs ``callguard lag`` with the worker's credentials (its group and
    topics); the dialer's are refused in one line, at once."""
    lag = cli(guarded.env(WORKER), "lag", "--json", "--samples", "1")
    assert lag.returncode == 0, lag.stderr
    sample = orjson.loads(lag.stdout.splitlines()[-1])
    assert sample["partitions"], sample
    started = time.monotonic()
    refused = cli(guarded.env(DIALER), "lag", "--samples", "1")
    lines = [line for line in (refused.stdout + refused.stderr).splitlines() if line.strip()]
    print(f"\nlag as {DIALER}: exit {refused.returncode} after {time.monotonic() - started:.1f} s: {lines}")
    assert refused.returncode != 0 and time.monotonic() - started < 20, lines
    assert len(lines) == 1 and "ACLs do not let user 'callguard-dialer' describe it" in lines[0], lines
    assert guarded.passwords[DIALER] not in refused.stdout + refused.stderr
