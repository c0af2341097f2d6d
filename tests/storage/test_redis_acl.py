"""The Redis users shipped in deploy/redis/users.acl, on a real Redis loaded
with that file: the worker decides and applies what arrives on its topics
under its own user, the loaders load under theirs, ``status`` and
``explain`` read under a read-only one, and each is refused what it should
not do (NOPERM), with a clear error and never a silent success."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from callguard.core.schema import CONSENTS_TOPIC, DECISIONS_TOPIC, INTENTS_TOPIC, OPTOUTS_TOPIC
from callguard.dev.embedded import Server, start_redis
from tests.conftest import Worker, cli, collect, env_for, produce, start_test_broker, today, write_csv
from tests.paths import POLICIES, ROOT

pytestmark = pytest.mark.e2e

ACL_FILE = ROOT / "deploy" / "redis" / "users.acl"
PASSWORDS = {"callguard-worker": "w-secret-1", "callguard-loader": "l-secret-2", "callguard-reader": "r-secret-3"}
CLEAR, UNLISTED, OPTED = "+393337100001", "+393337100002", "+393337100003"
US_LISTED, US_CLEAR = "+16465557101", "+16465557102"


@pytest.fixture(scope="module")
def acl_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A Redis of this module's own, started with the shipped ACL file; the
    users get their passwords as the file's header says."""
    directory = tmp_path_factory.mktemp("acl-redis")
    server = start_redis(directory, password="admin-secret", options=["--aclfile", str(ACL_FILE)])
    admin = redis.Redis(port=server.port, password="admin-secret")
    for user, password in PASSWORDS.items():
        admin.execute_command("ACL", "SETUSER", user, "on", f">{password}")
    admin.close()
    yield server
    server.stop()


def url(server: Server, user: str) -> str:
    return f"redis://{user}:{PASSWORDS[user]}@127.0.0.1:{server.port}/0"


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = start_test_broker(tmp_path_factory.mktemp("acl-broker"))
    yield f"kafka://127.0.0.1:{server.port}"
    server.stop()


@pytest.fixture(scope="module")
def loaded(acl_redis: Server, broker: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("acl-data")
    loader = env_for(broker, url(acl_redis, "callguard-loader"))
    t = date.fromisoformat(today())
    files = {
        "operators": write_csv(d / "ops.csv", "operator_id,status,valid_from,valid_until,caller_ids",
                               ["acl-op,active,2024-01-01,2030-12-31,+39 0844 000444"]),
        "mandates": write_csv(d / "m.csv", "client_id,operator_id,valid_from,valid_until",
                              ["acme,acl-op,2024-01-01,2030-12-31"]),
        "register": write_csv(d / "r.csv", "number,status", [f"{n},clear" for n in (CLEAR, UNLISTED, OPTED)]),
        "directory": write_csv(d / "d.csv", "number", [CLEAR, OPTED]),
        "consents": write_csv(d / "c.csv", "callee,client_id,basis,granted_at", [f"{UNLISTED},acme,contract,2025-01-01"]),
        "optouts": write_csv(d / "o.csv", "callee,client_id,at", [f"{OPTED},beta,2025-01-01"]),
        "us-dnc": write_csv(d / "dnc.csv", "number", [US_LISTED]),
        "reassigned": write_csv(d / "rnd.csv", "number,disconnected_at", [f"{US_LISTED},2025-01-01"]),
    }  # fmt: skip
    for argv in (
        ("operators", "load", str(files["operators"])),
        ("mandates", "load", str(files["mandates"])),
        ("register", "load", str(files["register"]), "--as-of", str(t - timedelta(days=1)), "--client", "acme"),
        ("directory", "load", str(files["directory"]), "--as-of", str(t)),
        ("consents", "load", str(files["consents"])),
        ("optouts", "load", str(files["optouts"])),
        # the US pack's named registers: a list for some area codes, then one for every number
        ("register", "load", str(files["us-dnc"]), "--register", "us-dnc", "--as-of", str(t)),
        ("register", "load", str(files["us-dnc"]), "--register", "us-dnc", "--cover", "all", "--as-of", str(t)),
        ("reassigned", "load", str(files["reassigned"])),
        ("tokens", "issue", "--operator-id", "acl-op", "--name", "acl-token"),
    ):
        result = cli(loader, *argv)
        assert result.returncode == 0, (argv, result.stderr)
    return loader


@pytest.fixture(scope="module")
def worker(acl_redis: Server, broker: str, loaded: dict[str, str], tmp_path_factory: pytest.TempPathFactory):
    d = tmp_path_factory.mktemp("acl-policy")
    (d / "us.toml").write_text(
        'base = "us"\nversion = "acl-us"\n[rules.calling_hours]\nwindow = "00:00-24:00"\nstate_windows = []\n'
    )
    (d / "set.toml").write_text(
        f'version = "acl-set"\n[countries]\nIT = "{OPEN_HOURS}"\nUS = "us.toml"\n'
        f'[other_countries]\ndeny = ["marketing"]\npack = "{OPEN_HOURS}"\n'
    )
    env = env_for(broker, url(acl_redis, "callguard-worker"), CALLGUARD_POLICY=str(d / "set.toml"))
    running = Worker(env, tmp_path_factory.mktemp("acl-worker") / "worker.log").start()
    yield running
    running.stop()


OPEN_HOURS = POLICIES / "open-hours.toml"


def intent(intent_id: str, callee: str, **extra: Any) -> bytes:
    body = {"intent_id": intent_id, "callee": callee, "operator_id": "acl-op", "client_id": "acme"}
    return orjson.dumps({**body, "caller_id": "+39 0844 000444", **extra})


async def test_the_worker_decides_and_applies_the_topics_under_its_own_user(
    broker: str, worker: Worker, acl_redis: Server
) -> None:
    us = {"operator_id": "acl-op", "client_id": "acme", "caller_id": "+39 0844 000444"}
    us_intents = [orjson.dumps({"intent_id": f"acl-us-{n}", "callee": number, **us}) for n, number in
                  enumerate((US_LISTED, US_CLEAR))]  # fmt: skip
    await produce(broker, INTENTS_TOPIC, [intent("acl-1", CLEAR), intent("acl-2", UNLISTED), *us_intents])
    found = await collect(broker, DECISIONS_TOPIC, {"acl-1", "acl-2", "acl-us-0", "acl-us-1"}, timeout=60)
    assert (found["acl-1"][-1]["decision"], found["acl-1"][-1]["reasons"]) == ("allow", [])
    assert found["acl-2"][-1]["reasons"] == ["consent_required"]
    # the US pack's lookups (the register's coverage) under the worker's user
    assert found["acl-us-0"][-1]["reasons"] == ["national_dnc"]
    assert (found["acl-us-1"][-1]["decision"], found["acl-us-1"][-1]["reasons"]) == ("allow", [])
    # what arrives on the topics is written under the worker's user too
    await produce(broker, OPTOUTS_TOPIC, [orjson.dumps({"callee": OPTED, "client_id": "acme"})])
    await produce(broker, CONSENTS_TOPIC, [orjson.dumps({"callee": UNLISTED, "client_id": "acme",
                                                         "basis": "consent", "granted_at": "2025-06-01"})])  # fmt: skip
    reader = redis.Redis.from_url(url(acl_redis, "callguard-reader"), decode_responses=True)
    try:
        for _ in range(100):
            stored = (
                reader.hmget(f"cg:callee:{OPTED}", "optout:acme"),
                reader.hget(f"cg:callee:{UNLISTED}", "consent:acme"),
            )
            if all(stored[0]) and stored[1]:
                break
            await asyncio.sleep(0.2)
        assert all(stored[0]) and stored[1], stored
    finally:
        reader.close()
    assert "NOPERM" not in worker.log_path.read_text()


def test_the_reader_reads_and_cannot_write(
    acl_redis: Server, broker: str, loaded: dict[str, str], tmp_path: Path
) -> None:
    reader = env_for(broker, url(acl_redis, "callguard-reader"), CALLGUARD_POLICY=str(OPEN_HOURS))
    status = cli(reader, "status")
    assert status.returncode == 0, status.stderr
    assert "mandates: 1 for 1 clients" in status.stdout
    # the shipped set's named registers, read by name (the reader may not SCAN)
    shipped = {k: v for k, v in reader.items() if k != "CALLGUARD_POLICY"}
    named = cli(shipped, "status")
    assert named.returncode == 0, named.stderr
    assert "register us-dnc: lists of every number" in named.stdout
    assert "register us-fl-dnc: nothing loaded" in named.stdout
    explained = cli(reader, "explain", "--callee", CLEAR, "--operator-id", "acl-op", "--client-id", "acme",
                    "--caller-id", "+39 0844 000444")  # fmt: skip
    assert explained.returncode == 0, explained.stderr
    assert "decision: ALLOW" in explained.stdout
    # a loader run as the reader is refused, with one clear line, and nothing is written
    optouts = write_csv(tmp_path / "acl-o.csv", "callee,client_id,at", [f"{CLEAR},*,2025-01-01"])
    refused = cli(reader, "optouts", "load", str(optouts))
    assert refused.returncode == 1
    assert refused.stderr.startswith("callguard: cannot write to Redis at redis://callguard-reader:***@")
    assert "can't run this command" in refused.stderr and PASSWORDS["callguard-reader"] not in refused.stderr
    client = redis.Redis.from_url(url(acl_redis, "callguard-reader"))
    try:
        # a script runs under its caller's rights: a write inside one is refused
        with pytest.raises(redis.exceptions.ResponseError, match="can't run this command"):
            client.eval("return redis.call('HSET', KEYS[1], 'x', '1')", 1, f"cg:callee:{CLEAR}")
        assert client.hget(f"cg:callee:{CLEAR}", "optout:*") is None
    finally:
        client.close()


@pytest.mark.parametrize(
    ("user", "command"),
    [
        ("callguard-worker", ("FLUSHALL",)),
        ("callguard-worker", ("SET", "other:key", "1")),
        ("callguard-worker", ("CONFIG", "GET", "*")),
        ("callguard-worker", ("DEL", "cg:operators")),
        ("callguard-worker", ("SET", "cg:register:lock", "stolen")),
        ("callguard-loader", ("FLUSHALL",)),
        ("callguard-loader", ("SET", "other:key", "1")),
        ("callguard-loader", ("ACL", "LIST")),
        ("callguard-reader", ("HSET", "cg:meta", "x", "1")),
        ("callguard-reader", ("DEL", "cg:operators")),
        ("callguard-reader", ("KEYS", "*")),
    ],
)
def test_each_user_is_refused_what_it_does_not_need(acl_redis: Server, user: str, command: tuple[str, ...]) -> None:
    client = redis.Redis.from_url(url(acl_redis, user))
    try:
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.execute_command(*command)
    finally:
        client.close()
