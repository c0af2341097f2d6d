"""Decisions share no mutable state: the policy's caches (calling-hours verdicts,
the frequency caps' empty counts, the US pack's zone verdicts) hand each
decision its own copy, and the settings carry only what was worked out when
they were built, read-only."""

from __future__ import annotations

from dataclasses import replace
from datetime import time
from types import MappingProxyType

import pytest

from callguard.core.hours import CallingHours
from callguard.core.policy import PolicySettings, lookback
from callguard.core.schema import Purpose
from tests import test_calling_rules as it
from tests import test_us_law as us


def tamper(detail: dict) -> None:
    for key, value in list(detail.items()):
        if isinstance(value, dict):
            tamper(value)
        elif isinstance(value, list):
            value.append("tampered")
        else:
            detail[key] = "tampered"


@pytest.mark.parametrize("name", ["calling_hours", "frequency_cap", "automated_calls"])
def test_an_italian_rules_detail_is_the_decisions_own(name: str) -> None:
    first, second = it.run(it.intent(intent_id="i-1")), it.run(it.intent(intent_id="i-2"))
    assert it.rule(first, name).detail == it.rule(second, name).detail
    tamper(it.rule(first, name).detail)
    third = it.run(it.intent(intent_id="i-3"))
    assert it.rule(third, name).detail == it.rule(second, name).detail
    assert "tampered" not in str(it.rule(third, name).detail)


def test_a_us_calling_hours_detail_is_the_decisions_own() -> None:
    first, second = us.run(), us.run()
    tamper(us.rule(first, "calling_hours").detail)
    assert us.rule(us.run(), "calling_hours").detail == us.rule(second, "calling_hours").detail
    assert "tampered" not in str(us.rule(us.run(), "calling_hours").detail)


def test_two_policies_with_other_hours_get_their_own_verdicts_at_the_same_instant() -> None:
    late = it.rome(2026, 11, 27, 20, 30)  # a Friday after the default window closed
    longer = replace(it.POLICY, calling_hours=CallingHours(weekday=(time(9, 0), time(21, 0))))
    for _ in range(2):  # each verdict cached, then read back
        assert not it.run(now=late).allow
        assert it.run(now=late, policy=longer).allow
        assert not it.run(now=late, policy=replace(it.POLICY)).allow  # equal hours, another object


def test_the_lookback_in_a_decisions_facts_is_its_own() -> None:
    first = it.run()
    first.facts["lookback"]["calls_purposes"].append("tampered")
    first.facts["lookback"]["calls_hours"] = 0
    assert it.run().facts["lookback"] == lookback(it.POLICY) != first.facts["lookback"]
    assert "tampered" not in lookback(it.POLICY)["calls_purposes"]


def test_the_settings_hold_only_read_only_derived_values() -> None:
    settings = PolicySettings()
    assert isinstance(settings._active, MappingProxyType)
    with pytest.raises(TypeError):
        settings._active[Purpose.MARKETING] = frozenset()  # type: ignore[index]
    assert isinstance(settings._lookback, tuple)
    sets = us.SET.jurisdictions
    assert sets is not None and isinstance(sets._by_code, MappingProxyType)
