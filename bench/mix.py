"""The realistic data and intent mix shared by ``throughput`` and ``latency``.

- register: numbers ``+39 347 0000000…``, 20 % opposed, one in ten with a
  registration date, all consulted today by each client (``acme``, ``beta``:
  a result for every client only ever denies);
- a public-directory extract listing 60 % of the numbers;
- mandates: ``acme`` for every operator, ``beta`` for nine in ten;
- consents for 2 % of the numbers (client ``acme``), contracts for 1 %
  (client ``beta``), opt-outs for 1 % (every client);
- 50 operators, 45 active and 5 suspended, each with two declared caller IDs;
- intents: callees over the register plus 5 % never consulted, written in
  four common forms; 52 operator ids (2 unknown); clients ``acme`` and
  ``beta``; purposes 85 % marketing, 10 % survey, 5 % service; the operator's
  declared caller ID (95 %), an undeclared one (3 %) or none (2 %); 20
  campaigns. Keyed by the callee's E.164 form, as the client does.

The benchmarks run the worker with the demo policy (the Italian policy with
calling hours open around the clock), so every rule runs and the figures do
not depend on the hour.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import orjson

import callguard
from callguard.core.facts import Consent, Mandate, Operator, OptOut
from callguard.storage.factory import open_stores
from callguard.storage.register import RegisterRows
from callguard.storage.stores import Stores

OPERATORS = 50
POLICY = str(Path(callguard.__file__).parent / "sample" / "demo-policy.toml")


def number(i: int) -> str:
    return f"+39347{i:07d}"


def caller_ids(n: int) -> tuple[str, str]:
    return f"+390844{n:06d}", f"+39021234{n:04d}"


async def load_data(redis_url: str, register_size: int, today: date) -> None:
    stores = open_stores(redis_url, timeout=60)
    for client in ("acme", "beta"):
        rows = ((number(i), i % 5 == 0, date(2023, 5, 1) if i % 10 == 0 else None) for i in range(register_size))
        await stores.add_register_results(rows, today, client)
    await load_directory(stores, register_size, today)
    replace_mandates = getattr(stores, "replace_mandates", None)  # absent in an older callguard
    if replace_mandates is not None:
        await replace_mandates(
            [
                Mandate(client, f"op-{n}", date(2024, 1, 1), date(2030, 1, 1))
                for client in ("acme", "beta")
                for n in range(OPERATORS)
                if client == "acme" or n % 10  # beta has no mandate for one operator in ten
            ],
            "bench",
        )
    await stores.replace_operators(
        [
            Operator(f"op-{n}", "active" if n < 45 else "suspended", date(2024, 1, 1), date(2030, 1, 1), caller_ids(n))
            for n in range(OPERATORS)
        ],
        "bench",
    )
    await stores.upsert_consents(
        [(number(i), Consent("acme", "consent", date(2025, 1, 1))) for i in range(0, register_size, 50)]
    )
    await stores.upsert_consents(
        [(number(i), Consent("beta", "contract", date(2025, 1, 1))) for i in range(3, register_size, 100)]
    )
    await stores.add_optouts([(number(i), OptOut("*", date(2025, 1, 1))) for i in range(7, register_size, 100)])
    await stores.close()


async def load_directory(stores: Stores, register_size: int, today: date) -> None:
    """60 % of the numbers listed in the public directories (none with an
    older callguard that has no ``load_directory``)."""
    load = getattr(stores, "load_directory", None)
    if load is None:
        return
    spill = RegisterRows.from_rows((number(i), False, None) for i in range(register_size) if i % 5 < 3)
    try:
        await load(spill, today, entry={"rows": len(spill), "as_of": today.isoformat()})
    finally:
        spill.cleanup()


def written(e164: str, rng: random.Random) -> str:
    """One of the forms dialers write a number in."""
    national = e164[3:]
    form = rng.randrange(4)
    if form == 0:
        return e164
    if form == 1:
        return f"+39 {national[:3]} {national[3:]}"
    if form == 2:
        return f"0039{national}"
    return national


def intents(count: int, register_size: int, prefix: str = "b", seed: int = 1) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) of ``count`` intents of the mix."""
    rng = random.Random(seed)
    for n in range(count):
        e164 = number(rng.randrange(int(register_size * 1.05)))  # 5 % never consulted
        operator = rng.randrange(OPERATORS + 2)  # 2 unknown operators
        pick = rng.random()
        purpose = "marketing" if pick < 0.85 else "survey" if pick < 0.95 else "service"
        pick = rng.random()
        caller = caller_ids(operator)[n % 2] if pick < 0.95 else "+390844999999" if pick < 0.98 else None
        intent = {
            "intent_id": f"{prefix}-{n}",
            "callee": written(e164, rng),
            "operator_id": f"op-{operator}",
            "client_id": "acme" if rng.random() < 0.6 else "beta",
            "purpose": purpose,
            "campaign_id": f"camp-{rng.randrange(20)}",
        }
        if caller is not None:
            intent["caller_id"] = caller
        yield e164.encode(), orjson.dumps(intent)
