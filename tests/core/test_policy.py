"""Table tests of the pure policy: every reason, every exception, every boundary."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from callguard.core.facts import Consent, Facts, Operator, OptOut, RegisterResult, proven_after
from callguard.core.policy import RULES, PolicySettings, RuleScope, decide, malformed, most_recent_result
from callguard.core.schema import Intent, Purpose, Reason

ROME = ZoneInfo("Europe/Rome")
CORE_RULES = ("callee_number", "operator_certified", "opposition_register", "internal_dnc")
# The register, operator and do-not-call rules alone: the Italian calling rules
# (caller ID, hours, caps, silent calls) have their own tables in test_calling_rules.py.
SETTINGS = replace(
    PolicySettings(),
    scopes={name: s if name in CORE_RULES else RuleScope(enabled=False) for name, s in PolicySettings().scopes.items()},
)
# Friday 2026-11-27 15:00 in Rome
NOW = datetime(2026, 11, 27, 15, 0, tzinfo=ROME).astimezone(UTC)
TODAY = date(2026, 11, 27)
CALLEE = "+393475555555"
CLIENT = "acme"
OPERATOR = Operator("op1", "active", date(2026, 1, 1), date(2027, 12, 31))


def intent(purpose: Purpose = Purpose.MARKETING, client: str = CLIENT) -> Intent:
    return Intent("i-1", "+39 347 555 5555", "op1", client, purpose)


def clear(as_of: date = TODAY, client: str = CLIENT) -> RegisterResult:
    return RegisterResult(False, as_of, None, client)


def opposed(as_of: date = TODAY, registered_at: date | None = date(2024, 1, 10), client: str = "*") -> RegisterResult:
    return RegisterResult(True, as_of, registered_at, client)


def facts(
    register: tuple[RegisterResult, ...] = (),
    consents: tuple[Consent, ...] = (),
    optouts: tuple[OptOut, ...] = (),
    operator: Operator | None = OPERATOR,
) -> Facts:
    return Facts(operator, register, consents, optouts, {"operators": "v1"})


def run(f: Facts | None, i: Intent | None = None, callee: str | None = CALLEE, now: datetime = NOW):
    return decide(i or intent(), callee, f, now, SETTINGS)


# --- allow paths ----------------------------------------------------------------


def test_fresh_clear_result_allows_with_no_reasons():
    d = run(facts((clear(),)))
    assert d.allow and d.reasons == () and not d.retryable
    assert d.to_message()["decision"] == "allow"
    assert d.versions == {"policy": SETTINGS.version, "operators": "v1", "register": "2026-11-27", "directory": None}


def test_service_calls_skip_the_register_but_not_the_operator_or_optouts():
    assert run(facts(()), intent(Purpose.SERVICE)).allow
    d = run(facts((), operator=None), intent(Purpose.SERVICE))
    assert d.reasons == (Reason.OPERATOR_UNKNOWN,)
    d = run(facts((), optouts=(OptOut(CLIENT, date(2026, 1, 1)),)), intent(Purpose.SERVICE))
    assert d.reasons == (Reason.INTERNAL_DNC,)


@pytest.mark.parametrize("purpose", [Purpose.MARKETING, Purpose.SURVEY])
def test_register_purposes_need_a_result(purpose):
    d = run(facts(()), intent(purpose))
    assert not d.allow and d.reasons == (Reason.NOT_CHECKED,)


# --- the number ---------------------------------------------------------------------


def test_invalid_number_denies_and_still_checks_the_operator():
    d = run(facts(operator=None), callee=None)
    assert d.reasons == (Reason.INVALID_NUMBER, Reason.OPERATOR_UNKNOWN)
    assert d.callee is None and not d.retryable


# --- operators ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("operator", "expected"),
    [
        (None, (Reason.OPERATOR_UNKNOWN,)),
        (Operator("op1", "suspended", date(2026, 1, 1), date(2027, 1, 1)), (Reason.OPERATOR_INACTIVE,)),
        (Operator("op1", "revoked", date(2026, 1, 1), date(2027, 1, 1)), (Reason.OPERATOR_INACTIVE,)),
        (Operator("op1", "active", date(2026, 1, 1), TODAY - timedelta(days=1)), (Reason.OPERATOR_EXPIRED,)),
        (Operator("op1", "active", TODAY + timedelta(days=1), date(2027, 1, 1)), (Reason.OPERATOR_EXPIRED,)),
        (
            Operator("op1", "revoked", date(2020, 1, 1), date(2021, 1, 1)),
            (Reason.OPERATOR_INACTIVE, Reason.OPERATOR_EXPIRED),
        ),
        (Operator("op1", "active", TODAY, TODAY), ()),  # both ends inclusive
    ],
)
def test_operator_certification(operator, expected):
    d = run(facts((clear(),), operator=operator))
    assert d.reasons == expected
    assert d.allow == (expected == ())


def test_operator_validity_uses_the_italian_day():
    # 23:30 UTC on 27 Nov is already 28 Nov in Rome: an operator valid until the 27th has expired
    late = datetime(2026, 11, 27, 23, 30, tzinfo=UTC)
    op = Operator("op1", "active", date(2026, 1, 1), TODAY)
    assert run(facts((clear(TODAY),), operator=op), now=late).reasons == (Reason.OPERATOR_EXPIRED,)


# --- register age -------------------------------------------------------------------


@pytest.mark.parametrize(("age", "stale"), [(0, False), (1, False), (14, False), (15, True), (16, True), (400, True)])
def test_register_result_of_day_d_is_usable_through_d_plus_14(age, stale):
    # the RPO: a consultation is valid 15 days; day D counts as the first of them
    d = run(facts((clear(TODAY - timedelta(days=age)),)))
    assert d.reasons == ((Reason.REGISTER_STALE,) if stale else ())


def test_register_age_counts_italian_days():
    # 23:30 UTC on 27 Nov is already 28 Nov in Rome: a result of 13 Nov is then 15 days old
    late = datetime(2026, 11, 27, 23, 30, tzinfo=UTC)
    result = clear(date(2026, 11, 13), client=CLIENT)
    assert run(facts((result,)), now=late - timedelta(hours=1)).allow  # 22:30 UTC: still the 27th in Rome
    assert run(facts((result,)), now=late).reasons == (Reason.REGISTER_STALE,)


def test_max_age_is_configurable():
    settings = replace(SETTINGS, register_max_age_days=2)
    assert decide(intent(), CALLEE, facts((clear(TODAY - timedelta(days=1), client=CLIENT),)), NOW, settings).allow
    d = decide(intent(), CALLEE, facts((clear(TODAY - timedelta(days=2), client=CLIENT),)), NOW, settings)
    assert d.reasons == (Reason.REGISTER_STALE,)


def test_stale_opposed_result_lists_both_reasons_and_no_exception_revives_it():
    contract = Consent(CLIENT, "contract", date(2025, 1, 1))
    d = run(facts((opposed(TODAY - timedelta(days=20)),), consents=(contract,)))
    assert d.reasons == (Reason.REGISTER_STALE, Reason.OPPOSITION_REGISTER)


# --- whose result counts -------------------------------------------------------------


def test_a_clear_result_for_every_client_is_nobodys_check():
    # the RPO: each controller consults for itself; a '*' clear result never makes a number callable
    d = run(facts((clear(TODAY, client="*"),)))
    assert d.reasons == (Reason.NOT_CHECKED,)
    assert next(r for r in d.rules if r.rule == "opposition_register").detail == {"result": None}


def test_an_opposed_result_for_every_client_counts_for_every_client():
    assert run(facts((opposed(TODAY),))).reasons == (Reason.OPPOSITION_REGISTER,)
    assert run(facts((opposed(TODAY), clear(TODAY - timedelta(days=1), client=CLIENT)))).reasons == (
        Reason.OPPOSITION_REGISTER,
    )


def test_a_newer_all_clients_clear_never_beats_the_clients_own_opposed_result():
    own = opposed(TODAY - timedelta(days=3), client=CLIENT)
    assert run(facts((own, clear(TODAY, client="*")))).reasons == (Reason.OPPOSITION_REGISTER,)


def test_the_clients_own_newer_clear_result_beats_an_older_all_clients_opposed_one():
    # the person withdrew the opposition for this client only
    d = run(facts((opposed(TODAY - timedelta(days=1)), clear(TODAY, client=CLIENT))))
    assert d.allow
    assert most_recent_result((opposed(TODAY - timedelta(days=1)), clear(TODAY, client=CLIENT))).client_id == CLIENT


def test_an_older_clients_own_clear_result_loses_to_a_newer_all_clients_opposed_one():
    assert run(facts((clear(TODAY - timedelta(days=1), client=CLIENT), opposed(TODAY)))).reasons == (
        Reason.OPPOSITION_REGISTER,
    )


def test_on_the_same_day_an_opposed_result_wins():
    results = (opposed(TODAY), clear(TODAY, client=CLIENT))
    assert most_recent_result(results) == results[0]
    assert run(facts(results)).reasons == (Reason.OPPOSITION_REGISTER,)
    results = (clear(TODAY, client=CLIENT), opposed(TODAY, client=CLIENT))
    assert most_recent_result(results) == results[1]


@pytest.mark.parametrize("order", [1, -1])
def test_of_two_opposed_results_of_one_day_the_later_registration_decides(order):
    # the client's own consultation saw a registration of 2024, the one for every client a renewal
    # of 2025 (a renewal revokes the consents given before it): a consent between the two must not
    # lift the register, whichever result the store lists first
    own = opposed(TODAY, registered_at=date(2024, 1, 10), client=CLIENT)
    renewed = opposed(TODAY, registered_at=date(2025, 6, 1))
    between = Consent(CLIENT, "consent", date(2025, 1, 1))
    results = (own, renewed)[::order]
    assert most_recent_result(results) == renewed
    assert run(facts(results, consents=(between,))).reasons == (Reason.OPPOSITION_REGISTER,)
    # the other way round, as the store lists them ('*' first): the client's own result saw the renewal
    older_for_all = opposed(TODAY, registered_at=date(2024, 1, 10))
    own_renewed = opposed(TODAY, registered_at=date(2025, 6, 1), client=CLIENT)
    results = (older_for_all, own_renewed)[::order]
    assert most_recent_result(results) == own_renewed
    assert run(facts(results, consents=(between,))).reasons == (Reason.OPPOSITION_REGISTER,)
    # a result without its registration day is proven by its own day, the latest it can be
    unknown = opposed(TODAY, registered_at=None, client=CLIENT)
    assert most_recent_result((renewed, unknown)[::order]) == unknown
    # the same day and registration: the client's own consultation is the one shown, and a
    # registration day stated over one inferred from the result's day
    assert most_recent_result((own, replace(own, client_id="*"))[::order]) == own
    stated = opposed(TODAY, registered_at=TODAY, client=CLIENT)
    assert most_recent_result((stated, unknown)[::order]) == stated


# --- opposition and its exceptions ------------------------------------------------------


def test_opposed_without_exception_denies():
    d = run(facts((opposed(),)))
    assert d.reasons == (Reason.OPPOSITION_REGISTER,) and not d.retryable


@pytest.mark.parametrize(
    ("granted", "counts"),
    [
        (date(2024, 1, 9), False),  # before registration
        (date(2024, 1, 10), False),  # same day: not provably after
        (date(2024, 1, 11), True),
        (datetime(2024, 1, 10, 23, 30, tzinfo=ROME), False),  # same Italian day
        (datetime(2024, 1, 10, 23, 30, tzinfo=UTC), True),  # 00:30 on the 11th in Rome
    ],
)
def test_consent_must_come_after_registration(granted, counts):
    d = run(facts((opposed(registered_at=date(2024, 1, 10)),), consents=(Consent(CLIENT, "consent", granted),)))
    assert d.allow == counts
    assert d.reasons == ((Reason.CONSENT,) if counts else (Reason.OPPOSITION_REGISTER,))


def test_without_registration_day_consent_must_follow_the_result_day():
    as_of = TODAY - timedelta(days=3)
    before = Consent(CLIENT, "consent", as_of)
    after = Consent(CLIENT, "consent", as_of + timedelta(days=1))
    assert not run(facts((opposed(as_of, registered_at=None),), consents=(before,))).allow
    assert run(facts((opposed(as_of, registered_at=None),), consents=(after,))).reasons == (Reason.CONSENT,)


def test_consent_for_another_client_does_not_count():
    other = Consent("other", "consent", date(2025, 6, 1))
    assert run(facts((opposed(),), consents=(other,))).reasons == (Reason.OPPOSITION_REGISTER,)


@pytest.mark.parametrize(
    ("ends_at", "counts"),
    [
        (None, True),
        (TODAY, True),  # ends today: still in force today
        (TODAY - timedelta(days=1), False),
        (NOW + timedelta(minutes=1), True),
        (NOW - timedelta(minutes=1), False),
    ],
)
def test_withdrawn_or_expired_consent_does_not_count(ends_at, counts):
    consent = Consent(CLIENT, "consent", date(2025, 6, 1), ends_at)
    assert run(facts((opposed(),), consents=(consent,))).allow == counts


def test_consent_granted_in_the_future_does_not_count():
    consent = Consent(CLIENT, "consent", TODAY + timedelta(days=1))
    assert not run(facts((opposed(),), consents=(consent,))).allow


@pytest.mark.parametrize(
    ("ends_at", "counts"),
    [
        (None, True),
        (TODAY + timedelta(days=1), True),  # still in force
        (TODAY, True),
        (TODAY - timedelta(days=29), True),
        (TODAY - timedelta(days=30), True),  # "cessati da non più di trenta giorni": day 30 still counts
        (TODAY - timedelta(days=31), False),
        (NOW - timedelta(days=30) + timedelta(seconds=1), True),
        (NOW - timedelta(days=30), True),  # exactly 30 days ago
        (NOW - timedelta(days=30) - timedelta(milliseconds=1), False),
    ],
)
def test_contract_in_force_or_ended_not_more_than_30_days_ago(ends_at, counts):
    contract = Consent(CLIENT, "contract", date(2020, 1, 1), ends_at)
    d = run(facts((opposed(),), consents=(contract,)))
    assert d.allow == counts
    assert d.reasons == ((Reason.CONTRACT,) if counts else (Reason.OPPOSITION_REGISTER,))


def test_contract_end_day_counts_in_italian_days():
    # 23:30 UTC on 27 Nov is 28 Nov in Rome: a contract that ended on 28 Oct is then 31 days over
    late = datetime(2026, 11, 27, 23, 30, tzinfo=UTC)
    contract = Consent(CLIENT, "contract", date(2020, 1, 1), date(2026, 10, 28))
    assert run(facts((opposed(),), consents=(contract,)), now=late - timedelta(hours=1)).allow
    assert not run(facts((opposed(),), consents=(contract,)), now=late).allow


def test_contract_not_yet_started_does_not_count():
    contract = Consent(CLIENT, "contract", TODAY + timedelta(days=2))
    assert not run(facts((opposed(),), consents=(contract,))).allow


def test_contract_counts_even_if_signed_before_registration():
    contract = Consent(CLIENT, "contract", date(2020, 1, 1))
    assert run(facts((opposed(registered_at=date(2024, 1, 10)),), consents=(contract,))).reasons == (Reason.CONTRACT,)


def test_both_exceptions_are_listed():
    both = (Consent(CLIENT, "consent", date(2025, 1, 1)), Consent(CLIENT, "contract", date(2020, 1, 1)))
    assert run(facts((opposed(),), consents=both)).reasons == (Reason.CONTRACT, Reason.CONSENT)


# --- internal do-not-call ----------------------------------------------------------------


@pytest.mark.parametrize("scope", [CLIENT, "*"])
def test_optout_denies(scope):
    d = run(facts((clear(),), optouts=(OptOut(scope, date(2026, 1, 1)),)))
    assert d.reasons == (Reason.INTERNAL_DNC,)


def test_optout_for_another_client_does_not_apply():
    assert run(facts((clear(),), optouts=(OptOut("other", date(2026, 1, 1)),))).allow


def test_later_consent_overrides_optout_but_a_contract_does_not():
    out = OptOut(CLIENT, datetime(2026, 3, 1, 10, 0, tzinfo=UTC))
    later = Consent(CLIENT, "consent", datetime(2026, 3, 1, 10, 5, tzinfo=UTC))
    earlier = Consent(CLIENT, "consent", datetime(2026, 3, 1, 9, 55, tzinfo=UTC))
    contract = Consent(CLIENT, "contract", date(2026, 6, 1))
    assert run(facts((clear(),), (later,), (out,))).reasons == (Reason.CONSENT,)
    assert run(facts((clear(),), (earlier,), (out,))).reasons == (Reason.INTERNAL_DNC,)
    assert run(facts((clear(),), (contract,), (out,))).reasons == (Reason.INTERNAL_DNC,)


def test_consent_must_follow_every_applicable_optout():
    optouts = (OptOut(CLIENT, date(2026, 2, 1)), OptOut("*", date(2026, 5, 1)))
    between = Consent(CLIENT, "consent", date(2026, 3, 1))
    after = Consent(CLIENT, "consent", date(2026, 5, 2))
    assert run(facts((clear(),), (between,), optouts)).reasons == (Reason.INTERNAL_DNC,)
    assert run(facts((clear(),), (after,), optouts)).allow


# --- every reason together, lookups, malformed ----------------------------------------


def test_a_deny_lists_every_reason_that_applies():
    op = Operator("op1", "suspended", date(2020, 1, 1), date(2021, 1, 1))
    d = run(facts((opposed(TODAY - timedelta(days=40)),), optouts=(OptOut("*", date(2025, 1, 1)),), operator=op))
    assert d.reasons == (
        Reason.OPERATOR_INACTIVE,
        Reason.OPERATOR_EXPIRED,
        Reason.REGISTER_STALE,
        Reason.OPPOSITION_REGISTER,
        Reason.INTERNAL_DNC,
    )


def test_a_deny_does_not_mix_in_exception_codes():
    d = run(facts((opposed(),), consents=(Consent(CLIENT, "contract", date(2020, 1, 1)),), operator=None))
    assert d.reasons == (Reason.OPERATOR_UNKNOWN,)
    register_rule = next(r for r in d.rules if r.rule == "opposition_register")
    assert register_rule.outcome == "allow_exception"  # the audit still shows it


def test_lookup_unavailable_is_a_retryable_deny():
    d = run(None)
    assert not d.allow and d.reasons == (Reason.LOOKUP_UNAVAILABLE,) and d.retryable
    assert run(None, callee=None).reasons == (Reason.INVALID_NUMBER, Reason.LOOKUP_UNAVAILABLE)


def test_malformed_intent_decision():
    d = malformed("i-9", "missing field 'callee'", NOW, SETTINGS)
    assert d.to_message()["reasons"] == ["malformed_intent"] and d.to_message()["decision"] == "deny"


def test_same_inputs_same_decision():
    f = facts((opposed(),), consents=(Consent(CLIENT, "consent", date(2025, 1, 1)),))
    assert run(f).to_message() == run(f).to_message()


# --- the audit record ---------------------------------------------------------------------


def test_audit_record_has_inputs_rules_and_the_facts_used():
    consent = Consent(CLIENT, "consent", date(2025, 1, 1))
    d = run(facts((opposed(),), consents=(consent,)))
    audit = d.to_audit(intent(), {"topic": "callguard.intents", "partition": 0, "offset": 7})
    assert audit["decision"] == "allow" and audit["reasons"] == ["consent"]
    assert audit["intent"]["callee"] == CALLEE and audit["intent"]["callee_input"] is None
    rules = {r["rule"]: r for r in audit["rules"]}
    # every rule is listed, a switched-off one as skipped: the audit shows what was not checked
    assert list(rules) == list(RULES)
    assert {name for name, r in rules.items() if r["outcome"] == "skipped"} == set(RULES) - set(CORE_RULES)
    assert rules["caller_id"]["detail"] == {"disabled": True}
    assert rules["opposition_register"]["detail"]["result"]["status"] == "opposed"
    assert rules["opposition_register"]["detail"]["exceptions"] == [consent.to_json()]
    assert audit["facts"]["register"][0]["as_of"] == TODAY.isoformat()
    assert audit["source"]["offset"] == 7


def test_audit_keeps_the_raw_callee_only_when_it_was_invalid():
    d = run(facts(), callee=None)
    assert d.to_audit(intent(), {})["intent"]["callee_input"] == "+39 347 555 5555"


def test_proven_after_mixes_days_and_instants_conservatively():
    day = date(2026, 3, 1)
    assert not proven_after(datetime(2026, 3, 1, 12, tzinfo=ROME), day, ROME)
    assert proven_after(datetime(2026, 3, 2, 0, 1, tzinfo=ROME), day, ROME)
    assert not proven_after(day, datetime(2026, 2, 28, 23, 59, tzinfo=ROME) + timedelta(minutes=2), ROME)
