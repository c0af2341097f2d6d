"""Decisions share no mutable state: what the policy caches and hands to many
decisions (calling-hours verdicts, the frequency caps' empty counts, the US
pack's zone verdicts, a policy's lookback) is read-only at every depth, yet
compares and serialises as plain dicts and lists; the settings carry only
what was worked out when they were built."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import time
from types import MappingProxyType
from typing import Any

import orjson
import pytest

from callguard.core.frozen import FrozenDict, FrozenList, frozen
from callguard.core.hours import CallingHours
from callguard.core.policy import PolicySettings, lookback
from callguard.core.schema import Purpose
from tests.core import test_calling_rules as it
from tests.core import test_us_law as us


def changes(value: Any) -> list[Any]:
    """Every way to change ``value`` in place, at any depth."""
    found: list[Any] = []
    if isinstance(value, dict):
        found += [
            lambda: value.__setitem__("x", 1),
            lambda: value.update(x=1),
            lambda: value.pop(next(iter(value))),
            lambda: value.setdefault("x", 1),
            lambda: value.clear(),
        ]
        for item in value.values():
            found += changes(item)
    elif isinstance(value, list):
        found += [lambda: value.append(1), lambda: value.extend([1]), lambda: value.clear()]
        if value:
            found.append(lambda: value.__setitem__(0, 1))
        for item in value:
            found += changes(item)
    return found


def assert_read_only(value: Any) -> None:
    before = orjson.dumps(value)
    ways = changes(value)
    assert ways
    for change in ways:
        with pytest.raises(TypeError):
            change()
    assert orjson.dumps(value) == before


@pytest.mark.parametrize("name", ["calling_hours", "frequency_cap", "automated_calls"])
def test_a_cached_italian_rules_detail_is_read_only(name: str) -> None:
    first, second = it.run(it.intent(intent_id="i-1")), it.run(it.intent(intent_id="i-2"))
    assert it.rule(first, name).detail is it.rule(second, name).detail  # shared, not copied
    assert_read_only(it.rule(first, name).detail)


def test_a_cached_us_calling_hours_detail_is_read_only() -> None:
    assert_read_only(us.rule(us.run(), "calling_hours").detail)
    assert_read_only(us.rule(us.run(callee=us.PANHANDLE), "calling_hours").detail)  # two zones


def test_the_lookback_in_every_decisions_facts_is_read_only() -> None:
    assert it.run().facts["lookback"] is lookback(it.POLICY)
    assert_read_only(lookback(it.POLICY))


def test_read_only_values_compare_and_serialise_as_plain_ones() -> None:
    plain = {"limits": [{"window_hours": 24.0, "max": 3, "calls": 0}], "zone": "Europe/Rome", "none": None}
    shared = frozen(plain)
    assert type(shared) is FrozenDict and type(shared["limits"]) is FrozenList
    assert shared == plain and plain == shared
    assert orjson.dumps(shared) == orjson.dumps(plain) and json.dumps(shared) == json.dumps(plain)
    assert orjson.loads(orjson.dumps({"detail": shared})) == {"detail": plain}


def test_two_policies_with_other_hours_get_their_own_verdicts_at_the_same_instant() -> None:
    late = it.rome(2026, 11, 27, 20, 30)  # a Friday after the default window closed
    longer = replace(it.POLICY, calling_hours=CallingHours(weekday=(time(9, 0), time(21, 0))))
    for _ in range(2):  # each verdict cached, then read back
        assert not it.run(now=late).allow
        assert it.run(now=late, policy=longer).allow
        assert not it.run(now=late, policy=replace(it.POLICY)).allow  # equal hours, another object


def test_the_settings_hold_only_read_only_derived_values() -> None:
    settings = PolicySettings()
    assert isinstance(settings._active, MappingProxyType)
    with pytest.raises(TypeError):
        settings._active[Purpose.MARKETING] = frozenset()  # type: ignore[index]
    assert isinstance(settings._lookback, FrozenDict)
    sets = us.SET.jurisdictions
    assert sets is not None and isinstance(sets._by_code, MappingProxyType)
