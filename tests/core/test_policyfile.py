"""Policy files: the shipped Italian policy, merging onto a base, and errors
that name their key (what ``callguard policy check`` prints)."""

from __future__ import annotations

from dataclasses import replace
from datetime import time, timedelta
from pathlib import Path

import pytest

from callguard.config import load_settings
from callguard.core.hours import LocalHoliday
from callguard.core.policy import RULES, CapLimit, PolicySettings, RuleScope
from callguard.core.policyfile import PolicyError, describe, load_policy, parse_policy, policy_for, shipped_policy
from callguard.core.schema import Purpose
from tests.paths import POLICIES, ROOT

SAMPLE = ROOT / "src" / "callguard" / "sample" / "demo-policy.toml"


def test_the_shipped_policy_is_the_documented_default() -> None:
    """The defaults in code (which the table tests use) and policies/it.toml say the same."""
    shipped = shipped_policy("it")
    defaults = PolicySettings()
    assert shipped.version.startswith("it/")
    assert shipped == replace(
        defaults,
        version=shipped.version,
        calling_hours=replace(defaults.calling_hours, local_holidays=shipped.calling_hours.local_holidays),
    )
    assert LocalHoliday("+3906", 6, 29, "Santi Pietro e Paolo (Roma)") in shipped.calling_hours.local_holidays


@pytest.mark.parametrize("path", [*sorted(POLICIES.glob("*.toml")), SAMPLE])
def test_every_policy_file_in_the_repository_is_valid(path: Path) -> None:
    assert load_policy(path).version


def test_a_file_changes_only_what_it_names_on_its_base() -> None:
    policy = parse_policy(
        """
        base = "it"
        version = "acme/1"
        [rules.frequency_cap]
        limits = [{ window = "90m", max = 1 }]
        [rules.calling_hours]
        saturday = "never"
        purposes = ["marketing", "survey", "statistical", "service"]
        [rules.opposition_register]
        max_age_days = 10
        [rules.internal_dnc]
        enabled = false
        """
    )
    shipped = shipped_policy("it")
    assert policy.version == "acme/1"
    assert policy.frequency_limits == (CapLimit(timedelta(minutes=90), 1),)
    assert policy.calling_hours.saturday is None
    assert policy.calling_hours.weekday == shipped.calling_hours.weekday
    assert policy.calling_hours.local_holidays == shipped.calling_hours.local_holidays
    assert policy.scopes["calling_hours"] == RuleScope(True, frozenset(Purpose))
    assert policy.scopes["internal_dnc"].enabled is False
    assert policy.register_max_age_days == 10 and policy.contract_grace_days == 30


def test_a_whole_day_window_and_describe_round_trip() -> None:
    policy = load_policy(POLICIES / "open-hours.toml")
    assert policy.calling_hours.sunday == (time(0, 0), time.max)
    shown = describe(policy)
    assert shown["rules"]["calling_hours"]["sunday"] == "00:00-24:00"
    assert list(shown["rules"]) == list(RULES)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("version = ", "not valid TOML"),
        ('base = "fr"', "base: unknown policy 'fr'"),
        ('base = "it"\n[rules.caller_id]\nrequire_prefix = true', "version: a policy that changes a base must name"),
        ('version = "x"\nfoo = 1', "foo: unknown key"),
        ('version = "x"\ntimezone = "Mars/Olympus"', "timezone: 'Mars/Olympus' is not an IANA time zone"),
        ('version = "x"\n[rules.callee_number]\nenabled = false', "rules.callee_number.enabled: this rule cannot be"),
        ('version = "x"\n[rules.calling_houres]', "rules.calling_houres: unknown rule"),
        (
            'version = "x"\n[rules.calling_hours]\nweekday = "9-20"',
            'rules.calling_hours.weekday: expected "HH:MM-HH:MM"',
        ),
        ('version = "x"\n[rules.calling_hours]\nweekday = "20:00-09:00"', "ends before it starts"),
        ('version = "x"\n[rules.calling_hours]\npurposes = ["sales"]', "unknown purpose 'sales'"),
        (
            'version = "x"\n[rules.calling_hours]\nenabled = "yes"',
            "rules.calling_hours.enabled: expected true or false",
        ),
        (
            'version = "x"\n[rules.calling_hours]\nlocal_holidays = [{prefix = "+3906", date = "02-30", name = "x"}]',
            'local_holidays[0].date: expected "MM-DD"',
        ),
        ('version = "x"\n[rules.frequency_cap]\nlimits = [{window = "2w", max = 3}]', "limits[0].window"),
        ('version = "x"\n[rules.frequency_cap]\nlimits = [{window = "24h", max = 0}]', "limits[0].max"),
        ('version = "x"\n[rules.frequency_cap]\nlimits = []', "rules.frequency_cap.limits: expected a list"),
        ('version = "x"\n[rules.silent_calls]\nabandoned_rate_limit = 3', "expected a fraction 0-1"),
        (
            'version = "x"\n[rules.opposition_register]\nmax_age_days = 400',
            "max_age_days: expected a whole number 1-366",
        ),
        ('version = "x"\n[rules.caller_id]\nprefixes = { marketing = "0844" }', "expected an E.164 prefix"),
    ],
)
def test_errors_name_the_key_and_what_is_wrong(text: str, error: str) -> None:
    with pytest.raises(PolicyError) as raised:
        parse_policy(text, "p.toml")
    assert any(error in message for message in raised.value.errors), raised.value.errors


@pytest.mark.parametrize(
    ("base", "rule", "key", "low", "high", "read"),
    [
        ("it", "opposition_register", "max_age_days", 1, 366, lambda s: s.register_max_age_days),
        ("it", "opposition_register", "contract_grace_days", 0, 366, lambda s: s.contract_grace_days),
        ("us", "campaign_silent_rate", "window_days", 1, 40, lambda s: s.silent_rate_window_days),
    ],
)
def test_a_whole_number_takes_both_ends_of_its_range_and_nothing_beyond(base, rule, key, low, high, read) -> None:
    def policy(value: int) -> str:
        return f'base = "{base}"\nversion = "x"\n[rules.{rule}]\n{key} = {value}'

    for value in (low, high):
        assert read(parse_policy(policy(value))) == value
    for value in (low - 1, high + 1):
        with pytest.raises(PolicyError) as raised:
            parse_policy(policy(value))
        assert raised.value.errors == [f"rules.{rule}.{key}: expected a whole number {low}-{high}, got {value}"]


@pytest.mark.parametrize(("base", "rule"), [("it", "silent_calls"), ("us", "campaign_silent_rate")])
def test_an_abandoned_rate_is_a_fraction_0_to_1_both_included(base, rule) -> None:
    def policy(value: float) -> str:
        return f'base = "{base}"\nversion = "x"\n[rules.{rule}]\nabandoned_rate_limit = {value}'

    for value in (0, 1):
        assert parse_policy(policy(value)).abandoned_rate_limit == value
    for value in (-0.001, 1.001):
        with pytest.raises(PolicyError, match="expected a fraction 0-1"):
            parse_policy(policy(value))


@pytest.mark.parametrize(
    ("window", "parsed"),
    [
        ("00:00-23:59", (time(0), time(23, 59))),
        ("23:59-24:00", (time(23, 59), time.max)),
        ("10:00-10:01", (time(10), time(10, 1))),
        ("10:00-10:00", "ends before it starts"),  # empty: "never" says that
        ("10:00-09:59", "ends before it starts"),
        ("24:00-24:00", "is not a time of day"),
        ("10:60-11:00", "is not a time of day"),
        ("10:00-24:01", "is not a time of day"),
        ("10:00-11:60", "is not a time of day"),
    ],
)
def test_a_window_is_two_times_of_day_the_second_later(window, parsed) -> None:
    policy = f'version = "x"\n[rules.calling_hours]\nweekday = "{window}"'
    if isinstance(parsed, tuple):
        assert parse_policy(policy).calling_hours.weekday == parsed
    else:
        with pytest.raises(PolicyError) as raised:
            parse_policy(policy)
        assert len(raised.value.errors) == 1 and parsed in raised.value.errors[0], raised.value.errors


@pytest.mark.parametrize(
    ("day", "ok"),
    [("01-01", True), ("12-31", True), ("02-29", True), ("00-10", False), ("13-01", False), ("01-00", False),
     ("01-32", False), ("04-31", False), ("02-30", False)],
)  # fmt: skip
def test_a_local_holiday_is_a_day_of_the_calendar(day, ok) -> None:
    policy = (
        f'version = "x"\n[rules.calling_hours]\nlocal_holidays = [{{prefix = "+3906", date = "{day}", name = "x"}}]'
    )
    if ok:
        (holiday,) = parse_policy(policy).calling_hours.local_holidays
        assert (holiday.month, holiday.day) == tuple(int(n) for n in day.split("-"))
    else:
        with pytest.raises(PolicyError, match='expected "MM-DD"'):
            parse_policy(policy)


@pytest.mark.parametrize(
    ("window", "maximum", "error"),
    [
        ("1m", 1, None),
        ("366d", 1000, None),
        ("0m", 1, "window: expected 1 minute to 366 days"),
        ("367d", 1, "window: expected 1 minute to 366 days"),
        ("24h", 0, "max: expected a whole number 1-1000"),
        ("24h", 1001, "max: expected a whole number 1-1000"),
    ],
)
def test_a_call_limit_counts_1_to_1000_calls_over_1_minute_to_366_days(window, maximum, error) -> None:
    policy = f'version = "x"\n[rules.frequency_cap]\nlimits = [{{window = "{window}", max = {maximum}}}]'
    if error is None:
        (limit,) = parse_policy(policy).frequency_limits
        assert limit.max_calls == maximum and limit.window in (timedelta(minutes=1), timedelta(days=366))
    else:
        with pytest.raises(PolicyError, match=error):
            parse_policy(policy)


def test_every_error_is_reported_at_once() -> None:
    with pytest.raises(PolicyError) as raised:
        parse_policy('[rules.calling_hours]\nweekday = "x"\nsaturday = "y"\n[rules.nope]', "p.toml")
    assert len(raised.value.errors) == 4  # version, weekday, saturday, unknown rule


def test_the_register_max_age_variable_still_overrides_the_policy(tmp_path: Path) -> None:
    assert policy_for(load_settings(environ={})).register_max_age_days == 15
    settings = load_settings(environ={"CALLGUARD_REGISTER_MAX_AGE_DAYS": "7", "CALLGUARD_POLICY": str(SAMPLE)})
    policy = policy_for(settings)
    assert policy.register_max_age_days == 7 and policy.version.endswith("demo-open-hours")


def test_a_missing_policy_file_is_a_configuration_error(tmp_path: Path) -> None:
    from callguard.config import ConfigError

    with pytest.raises(ConfigError, match="CALLGUARD_POLICY: no such file"):
        load_settings(environ={"CALLGUARD_POLICY": str(tmp_path / "none.toml")})
