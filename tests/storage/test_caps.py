"""The frequency caps' atomic re-check in Redis (``storage/lua/allowed.lua``), which
stops two workers from both allowing the last call a cap leaves: it must count
the calls of the window exactly as the policy does (``policy.check_frequency_cap``:
a call exactly one window old no longer counts), on both sides of each edge.

The session's Redis; numbers of this module: +39 357 …
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from callguard.storage.stores import Allowed, Query, Stores

WINDOW = timedelta(hours=24)
#: one call a day, ten a month: the month keeps the day's calls stored, so the day's count decides
CAPS = [(WINDOW, 1), (timedelta(days=30), 10)]
START = datetime(2026, 11, 20, 10, tzinfo=UTC)


async def test_a_call_one_window_old_no_longer_counts_one_a_millisecond_younger_does(stores: Stores) -> None:
    for n, (age, recorded) in enumerate([(WINDOW - timedelta(milliseconds=1), False), (WINDOW, True)]):
        callee = f"+39357000{n:04d}"

        def allowed(intent_id: str, callee: str = callee) -> list[Allowed]:
            return [Allowed(callee, "acme", intent_id, None, True)]

        assert await stores.record_allowed(allowed(f"cap-{n}-first"), START, CAPS) == [None]
        (answer,) = await stores.record_allowed(allowed(f"cap-{n}-second"), START + age, CAPS)
        if recorded:
            assert answer is None
        else:  # the cap is full: the calls as stored come back to be decided again
            assert answer is not None and [call.at for call in answer] == [START]


async def test_calls_older_than_the_longest_cap_are_forgotten_younger_ones_kept(stores: Stores) -> None:
    for n, (age, kept) in enumerate([(WINDOW - timedelta(milliseconds=1), True), (WINDOW, False)]):
        callee = f"+39357001{n:04d}"
        first = [Allowed(callee, "acme", f"keep-{n}-first", None, True)]
        second = [Allowed(callee, "acme", f"keep-{n}-second", None, True)]
        assert await stores.record_allowed(first, START, [(WINDOW, 5)]) == [None]
        assert await stores.record_allowed(second, START + age, [(WINDOW, 5)]) == [None]
        (facts,) = await stores.lookup([Query(callee, "acme", "cap-op")])
        assert [call.at for call in facts.calls] == ([START, START + age] if kept else [START + age])
