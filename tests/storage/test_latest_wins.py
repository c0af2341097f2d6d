"""Opt-outs and disconnections keep the latest day per callee (and client), whatever
order they are loaded in: a consent counts only when given after the latest opt-out,
and only after the latest disconnection, so an older load replacing a newer one
would let through calls the newer one stops (``storage/lua/write_field.lua``).

The session's Redis; numbers of this module: +39 358 … and +1 212 555 098x.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

from callguard.core.facts import OptOut
from callguard.storage.stores import Query, Stores

OLDER, NEWER = date(2025, 1, 1), date(2025, 5, 5)


async def test_an_older_opt_out_never_replaces_a_newer_one(stores: Stores) -> None:
    for n, loads in enumerate([(OLDER, NEWER), (NEWER, OLDER)]):
        callee = f"+39358000{n:04d}"
        for day in loads:
            await stores.add_optouts([(callee, OptOut("acme", day))])
        (facts,) = await stores.lookup([Query(callee, "acme", "lw-op")])
        assert facts.optouts == (OptOut("acme", NEWER),)
    # an instant of the newer day is later than the day alone
    callee = "+393580000009"
    noon = datetime(2025, 5, 5, 12, tzinfo=UTC)
    await stores.add_optouts([(callee, OptOut("acme", noon))])
    await stores.add_optouts([(callee, OptOut("acme", OLDER))])
    (facts,) = await stores.lookup([Query(callee, "acme", "lw-op")])
    assert facts.optouts == (OptOut("acme", noon),)


async def test_an_older_disconnection_never_replaces_a_newer_one(stores: Stores) -> None:
    for n, loads in enumerate([(OLDER, NEWER), (NEWER, OLDER)]):
        callee = f"+121255509{80 + n}"
        for day in loads:
            await stores.add_disconnections([(callee, day)])
        (facts,) = await stores.lookup([Query(callee, "acme", "lw-op")])
        assert facts.disconnected_at == NEWER
