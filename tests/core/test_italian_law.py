"""Table tests of the rules the primary texts added or corrected: the public
directories and consents, automated calls, the campaign silent-call rate,
requires_operator, statistical surveys; every boundary pinned on both sides."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from callguard.core.facts import Consent, Facts, Operator, PastCall, RegisterResult, intent_ref
from callguard.core.policy import PolicySettings, RuleScope, decide, silent_rate_days
from callguard.core.schema import Intent, Purpose, Reason
from callguard.core.sources import SOURCES

ROME = ZoneInfo("Europe/Rome")
NOW = datetime(2026, 11, 27, 15, 0, tzinfo=ROME).astimezone(UTC)  # a Friday
TODAY = date(2026, 11, 27)
CALLEE = "+393475555555"
CLIENT = "acme"
OPERATOR = Operator("op1", "active", date(2026, 1, 1), date(2027, 12, 31), ("+390212340000",))
THESE = ("callee_number", "operator_certified", "opposition_register", "directory", "automated_calls", "silent_calls")
SETTINGS = replace(
    PolicySettings(),
    scopes={n: s if n in THESE else RuleScope(enabled=False) for n, s in PolicySettings().scopes.items()},
)


def intent(purpose: Purpose = Purpose.MARKETING, automated: bool = False, intent_id: str = "i-1") -> Intent:
    return Intent(intent_id, CALLEE, "op1", CLIENT, purpose, "+390212340000", "camp", automated=automated)


def clear(as_of: date = TODAY) -> RegisterResult:
    return RegisterResult(False, as_of, None, CLIENT)


def opposed(as_of: date = TODAY, registered_at: date | None = date(2024, 1, 10)) -> RegisterResult:
    return RegisterResult(True, as_of, registered_at, CLIENT)


def facts(
    register: tuple[RegisterResult, ...] = (clear(),),
    consents: tuple[Consent, ...] = (),
    listed: bool = False,
    directory_as_of: date | None = TODAY,
    **more: object,
) -> Facts:
    return Facts(
        OPERATOR,
        register,
        consents,
        (),
        {},
        listed=listed,
        directory_as_of=directory_as_of,
        **more,  # type: ignore[arg-type]
    )


def run(f: Facts, i: Intent | None = None, now: datetime = NOW, settings: PolicySettings = SETTINGS):
    return decide(i or intent(), CALLEE, f, now, settings, "+390212340000")


def rule(decision, name: str):
    return next(r for r in decision.rules if r.rule == name)


# --- the public directories (Codice di condotta art. 10 c. 2) ------------------------


def test_a_listed_number_with_a_clear_result_is_callable_without_consent():
    d = run(facts(listed=True))
    assert d.allow and d.reasons == ()
    assert d.versions["directory"] == "2026-11-27"


@pytest.mark.parametrize("purpose", [Purpose.MARKETING, Purpose.SURVEY, Purpose.STATISTICAL])
def test_an_unlisted_number_with_a_clear_result_and_no_consent_needs_one(purpose):
    d = run(facts(listed=False), intent(purpose))
    assert not d.allow and d.reasons == (Reason.CONSENT_REQUIRED,)
    assert rule(d, "directory").detail["why"] == "not in the public directories"


def test_service_calls_are_outside_the_directory_rule():
    assert rule(run(facts(listed=False), intent(Purpose.SERVICE)), "directory").outcome == "skipped"


def test_no_extract_loaded_means_not_listed():
    d = run(facts(listed=True, directory_as_of=None))
    assert d.reasons == (Reason.CONSENT_REQUIRED,)
    assert d.versions["directory"] is None


@pytest.mark.parametrize(("age", "usable"), [(0, True), (14, True), (15, False), (16, False)])
def test_an_extract_of_day_d_is_used_through_d_plus_14(age, usable):
    d = run(facts(listed=True, directory_as_of=TODAY - timedelta(days=age)))
    assert d.allow == usable
    assert d.reasons == (() if usable else (Reason.CONSENT_REQUIRED,))


def test_the_extract_age_is_a_policy_parameter():
    settings = replace(SETTINGS, directory_max_age_days=3)
    assert run(facts(listed=True, directory_as_of=TODAY - timedelta(days=2)), settings=settings).allow
    assert not run(facts(listed=True, directory_as_of=TODAY - timedelta(days=3)), settings=settings).allow


def test_a_consent_of_this_client_lifts_it():
    consent = Consent(CLIENT, "consent", date(2025, 6, 1))
    d = run(facts(listed=False, consents=(consent,)))
    assert d.allow and d.reasons == (Reason.CONSENT,)
    assert rule(d, "directory").outcome == "allow_exception"


def test_a_consent_of_another_client_a_contract_or_an_ended_consent_does_not():
    other = Consent("beta", "consent", date(2025, 6, 1))
    contract = Consent(CLIENT, "contract", date(2025, 6, 1))
    ended = Consent(CLIENT, "consent", date(2025, 6, 1), TODAY - timedelta(days=1))
    not_yet = Consent(CLIENT, "consent", TODAY + timedelta(days=1))
    for consent in (other, contract, ended, not_yet):
        assert run(facts(listed=False, consents=(consent,))).reasons == (Reason.CONSENT_REQUIRED,), consent


@pytest.mark.parametrize(
    ("granted", "valid"),
    [(date(2024, 1, 9), False), (date(2024, 1, 10), False), (date(2024, 1, 11), True)],
)
def test_on_a_registered_number_only_a_consent_after_the_registration_is_valid(granted, valid):
    # registered 2024-01-10: a consent of that day does not provably follow it
    consent = Consent(CLIENT, "consent", granted)
    d = run(facts((opposed(),), consents=(consent,), listed=False))
    assert d.allow == valid
    if not valid:
        assert d.reasons == (Reason.OPPOSITION_REGISTER, Reason.CONSENT_REQUIRED)


def test_a_contract_lifts_the_register_but_not_the_directory_rule():
    contract = Consent(CLIENT, "contract", date(2020, 1, 1))
    assert run(facts((opposed(),), consents=(contract,), listed=True)).reasons == (Reason.CONTRACT,)
    assert run(facts((opposed(),), consents=(contract,), listed=False)).reasons == (Reason.CONSENT_REQUIRED,)


def test_the_directory_rule_can_be_switched_off():
    scopes = {**SETTINGS.scopes, "directory": RuleScope(enabled=False)}
    d = run(facts(listed=False), settings=replace(SETTINGS, scopes=scopes))
    assert d.allow and rule(d, "directory").detail == {"disabled": True}


# --- automated calls (Codice privacy art. 130 c. 1-2) -----------------------------------


def test_an_automated_call_needs_a_consent_whatever_the_register_and_directory_say():
    d = run(facts(listed=True), intent(automated=True))
    assert d.reasons == (Reason.CONSENT_REQUIRED,)
    assert rule(d, "automated_calls").detail == {"automated": True}
    consent = Consent(CLIENT, "consent", date(2025, 6, 1))
    assert run(facts(listed=True, consents=(consent,)), intent(automated=True)).reasons == (Reason.CONSENT,)
    contract = Consent(CLIENT, "contract", date(2025, 6, 1))
    assert run(facts(listed=True, consents=(contract,)), intent(automated=True)).reasons == (Reason.CONSENT_REQUIRED,)


def test_a_deny_lists_consent_required_once():
    d = run(facts(listed=False), intent(automated=True))
    assert d.reasons == (Reason.CONSENT_REQUIRED,)
    assert d.to_message()["reasons"] == ["consent_required"]


def test_automated_service_calls_are_outside_the_rule():
    assert run(facts(listed=False), intent(Purpose.SERVICE, automated=True)).allow


# --- after a silent call: the block and the operator ------------------------------------


SILENT = NOW - timedelta(days=8)


@pytest.mark.parametrize(
    ("ago", "blocked"),
    [
        (timedelta(days=7) - timedelta(milliseconds=1), True),
        (timedelta(days=7), False),
        (timedelta(days=7, milliseconds=1), False),
    ],
)
def test_the_seven_day_block_ends_at_the_instant(ago, blocked):
    d = run(facts(listed=True, silent_at=NOW - ago))
    assert (d.reasons == (Reason.RECENT_SILENT_CALL,)) == blocked
    assert d.requires_operator == (not blocked)
    assert ("requires_operator" in d.to_message()) == (not blocked)


def test_without_a_silent_call_no_operator_is_required():
    d = run(facts(listed=True))
    assert d.allow and not d.requires_operator and "requires_operator" not in d.to_message()


def test_the_first_call_allowed_after_the_block_was_the_next_call():
    until = SILENT + timedelta(days=7)
    before = PastCall(until - timedelta(milliseconds=1), "aaaaaaaaaa")
    at = PastCall(until, "bbbbbbbbbb")
    assert run(facts(listed=True, silent_at=SILENT, calls=(before,))).requires_operator
    assert not run(facts(listed=True, silent_at=SILENT, calls=(at,))).requires_operator


def test_a_redelivered_intent_keeps_its_requires_operator():
    own = PastCall(NOW, intent_ref("i-1"))
    assert run(facts(listed=True, silent_at=SILENT, calls=(own,))).requires_operator


def test_a_deny_never_carries_requires_operator():
    d = run(facts(listed=False, silent_at=SILENT))
    assert not d.allow and not d.requires_operator


# --- the campaign silent-call rate ---------------------------------------------------------

RATE = replace(SETTINGS, scopes={**SETTINGS.scopes, "campaign_silent_rate": RuleScope()})


@pytest.mark.parametrize(
    ("outcomes", "stopped"),
    [
        ({}, False),
        ({"answered": 100, "silent": 3}, False),  # exactly 3 per 100
        ({"answered": 100, "silent": 2, "abandoned": 1}, False),
        ({"answered": 100, "silent": 4}, True),
        ({"answered": 100, "silent": 3, "abandoned": 1}, True),
        ({"answered": 99, "silent": 3}, True),  # 3.03 %
        ({"answered": 134, "silent": 4}, False),  # 2.985 %: 400 <= 402
        ({"answered": 133, "silent": 4}, True),  # 3.008 %
        ({"answered": 0, "silent": 1}, True),
        ({"answered": 0}, False),
        ({"no_answer": 50, "busy": 50, "silent": 0}, False),
    ],
)
def test_campaign_silent_rate(outcomes, stopped):
    d = run(facts(listed=True, campaign_outcomes=outcomes), settings=RATE)
    assert d.reasons == ((Reason.CAMPAIGN_SILENT_RATE,) if stopped else ())
    assert rule(d, "campaign_silent_rate").outcome == ("deny" if stopped else "pass")


def test_the_campaign_rate_is_a_policy_switch():
    d = run(facts(listed=True, campaign_outcomes={"answered": 1, "silent": 1}), settings=SETTINGS)
    assert d.allow and rule(d, "campaign_silent_rate").outcome == "skipped"


@pytest.mark.parametrize(
    ("now", "first", "last"),
    [
        (NOW, date(2026, 10, 29), TODAY),
        # 23:30 UTC on 27 Nov is 28 Nov in Rome
        (datetime(2026, 11, 27, 23, 30, tzinfo=UTC), date(2026, 10, 30), date(2026, 11, 28)),
        (datetime(2026, 11, 27, 22, 59, 59, tzinfo=UTC), date(2026, 10, 29), TODAY),
    ],
)
def test_the_rate_window_is_the_last_window_days_italian_days(now, first, last):
    days = silent_rate_days(now, RATE)
    assert len(days) == 30 and days[0] == last and days[-1] == first
    assert silent_rate_days(now, SETTINGS) == ()  # switched off: nothing looked up


# --- sources ---------------------------------------------------------------------------------


def test_every_rule_cites_a_source_that_is_written_down():
    import re

    from callguard.core import policy

    key = re.compile(
        r"\b(?:CODICE_[A-Z0-9_]+|L5_2018[A-Z0-9_]*|DPR26_[A-Z0-9_]+|RPO_[A-Z_]+|GARANTE_[A-Z_]+|L151_2025)\b"
    )
    checks = [getattr(policy, name) for name in dir(policy) if name.startswith("check_")]
    assert len(checks) >= 10
    for check in checks:
        cited = key.findall(check.__doc__ or "")
        assert cited, f"{check.__name__} cites no source"
        assert set(cited) <= SOURCES.keys(), f"{check.__name__} cites {set(cited) - SOURCES.keys()}"
    from pathlib import Path

    import callguard

    root = Path(callguard.__file__).parent
    for path in [root / "core" / "policy.py", root / "core" / "hours.py", root / "policies" / "it.toml"]:
        assert set(key.findall(path.read_text())) <= SOURCES.keys(), path
