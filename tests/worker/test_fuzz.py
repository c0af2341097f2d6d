"""Hostile input at a running worker: 10 000 malformed messages, valid intents between them.

Every message must end up answered (a decision for its intent_id) or in the
dead-letter topic with its error; the valid intents interleaved with the junk
must still get the right decision, and the worker must stay healthy.
"""

from __future__ import annotations

import base64
import random

import orjson
import pytest

from callguard.core.schema import DEADLETTER_TOPIC, DECISIONS_TOPIC, INTENTS_TOPIC
from tests.conftest import Worker, cli, collect, operators_csv, produce, today, write_csv

pytestmark = pytest.mark.e2e

HOSTILE = 10_000
CLEAR_NUMBER = "+393497770001"

ODD_NUMBERS = [
    "", " ", "+", "++39347", "0039", "+39 347 555 5555 5555 5555", "３４７５５５５５５５", "347\x00555", "+39\u202e3475",
    "tel:+39-347-555-5555", "1e10", "-3475555555", "+393475555555;ext=1", "💩", "\t\n", "0" * 64, "+0", "+999 123",
]  # fmt: skip


def hostile(rng: random.Random, n: int) -> tuple[bytes, str | None]:
    """One hostile message and the intent_id it carries, if a readable one."""
    kind = n % 10
    intent_id = f"fz-{n}"
    base = {"intent_id": intent_id, "callee": CLEAR_NUMBER, "operator_id": "fz-op", "client_id": "acme"}
    if kind == 0:
        return bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 60))), None  # random bytes
    if kind == 1:
        return b'{"intent_id": "' + intent_id.encode() + b'", "callee": "\xff\xfe"}', None  # invalid UTF-8
    if kind == 2:
        size = rng.randrange(65, 70_000) if n % 50 == 2 else rng.randrange(65, 2_000)
        return orjson.dumps({**base, "callee": "9" * size}), intent_id  # huge strings
    if kind == 3:
        return ("[" * 5000 + "]" * 5000).encode(), None  # deep nesting
    if kind == 4:
        field = rng.choice(["callee", "operator_id", "client_id", "purpose", "requested_at", "caller_id"])
        return orjson.dumps({**base, field: rng.choice([1, 2.5, True, [], {}, "x" * 200])}), intent_id  # wrong types
    if kind == 5:
        return orjson.dumps({**base, "callee": rng.choice(ODD_NUMBERS)}), intent_id  # numbers in odd formats
    if kind == 6:
        return orjson.dumps(
            {**base, "client_id": "ac\x00me\x1b[31m", "operator_id": "\u0000"}
        ), intent_id  # control chars
    if kind == 7:
        return (b'{"intent_id": "' + intent_id.encode() + b'", "intent_id": 7, "callee": "1"}'), None  # duplicate keys
    if kind == 8:
        return orjson.dumps([base]), None  # not an object
    return orjson.dumps({**base, "intent_id": intent_id, "callee": None}), intent_id  # missing field


async def test_ten_thousand_hostile_messages(env: dict[str, str], worker: Worker, embedded, tmp_path) -> None:
    reg = write_csv(tmp_path / "reg.csv", "number,status", [f"{CLEAR_NUMBER},clear"])
    # the valid intents are acme's: a clear result loaded for every client ('*') is nobody's check
    assert cli(env, "register", "load", str(reg), "--as-of", today(), "--client", "acme").returncode == 0
    ops = operators_csv(tmp_path, ["fz-op,active,2024-01-01,2030-01-01,"])
    assert cli(env, "operators", "load", str(ops)).returncode == 0

    rng = random.Random(20261128)
    messages: list[bytes] = []
    answered_ids: set[str] = set()
    valid_ids: list[str] = []
    for n in range(HOSTILE):
        value, readable = hostile(rng, n)
        messages.append(value)
        if readable is not None:
            answered_ids.add(readable)
        if n % 100 == 0:
            valid_id = f"fz-valid-{n}"
            valid_ids.append(valid_id)
            messages.append(
                orjson.dumps(
                    {"intent_id": valid_id, "callee": CLEAR_NUMBER, "operator_id": "fz-op", "client_id": "acme"}
                )
            )
    await produce(embedded.broker_url, INTENTS_TOPIC, messages)

    want = answered_ids | set(valid_ids)
    decisions = await collect(embedded.broker_url, DECISIONS_TOPIC, want, timeout=120)
    assert want - set(decisions) == set(), f"{len(want - set(decisions))} intents without a decision"
    for valid_id in valid_ids:
        assert decisions[valid_id][0]["decision"] == "allow", decisions[valid_id]

    hostile_raw = {base64.b64encode(m).decode() for m in messages} - {
        base64.b64encode(
            orjson.dumps({"intent_id": v, "callee": CLEAR_NUMBER, "operator_id": "fz-op", "client_id": "acme"})
        ).decode()
        for v in valid_ids
    }
    # messages that parse as intents (odd numbers, control characters) are answered, not dead-lettered
    # every batch's dead letters were acknowledged with its decisions, all seen above
    dead = await collect(embedded.broker_url, DEADLETTER_TOPIC, hostile_raw, key="raw_base64", timeout=120, idle=3)
    unaccounted = [raw for raw in hostile_raw if raw not in dead and _intent_id(raw) not in decisions]
    print(
        f"\n{len(messages):,} messages: {len(dead):,} dead letters, {len(decisions):,} decisions, {len(unaccounted)} unaccounted"
    )
    assert unaccounted == []
    assert all(entry[0]["error"] for entry in dead.values())
    assert worker.health()[0] == 200


def _intent_id(raw_b64: str) -> str | None:
    try:
        value = orjson.loads(base64.b64decode(raw_b64))
    except orjson.JSONDecodeError:
        return None
    return value.get("intent_id") if isinstance(value, dict) else None
