"""The regulator's report, rendered from real audit records (decided by the policy,
chained as the worker chains them): its text, its escaping, the empty answer,
``--since`` at the boundary of an Italian day, and the chain's verdict per record.
Pure: no server, no browser (tests/system/test_report_e2e.py renders it in Chromium)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from callguard.core.audit import GENESIS, ChainCheck, Stored, link
from callguard.core.facts import Consent, Facts, Mandate, Operator, OptOut, RegisterResult
from callguard.core.numbers import normalise_caller_id
from callguard.core.policy import RULES, US_RULES, decide
from callguard.core.policyfile import load_policy
from callguard.core.report import (
    REASON_TEXT,
    RULE_TEXT,
    US_RULE_TEXT,
    Chain,
    Entry,
    Sources,
    in_period,
    render,
    rule_text,
    since_start,
    timeline,
    totals,
)
from callguard.core.schema import Intent, Purpose, Reason
from callguard.core.sources import SOURCES
from callguard.dev.embedded import free_port
from tests.page_text import text_of

POLICY = load_policy("src/callguard/sample/demo-policy.toml")  # every rule on, hours open around the clock
CALLEE = "+393517009001"
OPERATOR = Operator("op-rep", "active", date(2024, 1, 1), date(2030, 12, 31), ("+390844000001",))
MANDATE = Mandate("acme", "op-rep", date(2024, 1, 1), date(2030, 12, 31))
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def record(
    intent_id: str,
    at: datetime,
    register: tuple[RegisterResult, ...] = (),
    consents: tuple[Consent, ...] = (),
    optouts: tuple[OptOut, ...] = (),
    client: str = "acme",
    campaign: str = "winter",
    operator: Operator | None = OPERATOR,
) -> dict[str, Any]:
    intent = Intent(intent_id, CALLEE, "op-rep", client, Purpose.MARKETING, "+39 0844 000001", campaign)
    facts = Facts(
        operator,
        register,
        consents,
        optouts,
        {"operators": "ops-7", "mandates": "m-7"},
        listed=True,
        directory_as_of=at.date() - timedelta(days=1),
        campaign_outcomes={"answered": 10},
        mandates=(MANDATE,),
    )
    caller = normalise_caller_id(intent.caller_id, "IT")
    decision = decide(intent, CALLEE, facts, at, POLICY, caller)
    return decision.to_audit(intent, {"topic": "callguard.intents", "partition": 1, "offset": 0})


def clear(day: date) -> tuple[RegisterResult, ...]:
    return (RegisterResult(False, day, None, "acme"),)


def opposed(day: date) -> tuple[RegisterResult, ...]:
    return (RegisterResult(True, day, date(2024, 2, 1), "*"),)


def scenario() -> list[dict[str, Any]]:
    """Four decisions about one number over a week: allowed, allowed on a
    consent, denied by the register (and stale), denied by an opt-out."""
    t = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)
    return [
        record("rep-clear", t, clear(date(2026, 11, 18))),
        record(
            "rep-consent",
            t + timedelta(days=1),
            opposed(date(2026, 11, 19)),
            consents=(Consent("acme", "consent", date(2025, 3, 1)),),
        ),
        record("rep-stale", t + timedelta(days=3), opposed(date(2026, 11, 1)), client="beta"),
        record(
            "rep-optout",
            t + timedelta(days=5),
            clear(date(2026, 11, 24)),
            optouts=(OptOut("*", datetime(2026, 11, 24, 10, tzinfo=UTC)),),
        ),
    ]


def chained(records: list[dict[str, Any]], partition: int = 3, start: int = 40) -> list[Stored]:
    """The records as the worker writes them: one partition's chain, from offset ``start``."""
    out, head = [], GENESIS
    # an unrelated record before them: the report reads from the record the first one links to
    value, head = link({"intent_id": "someone-else", "decision": "allow"}, head)
    out.append(Stored(partition, start - 1, value))
    for offset, rec in enumerate(records, start):
        value, head = link(dict(rec), head)
        out.append(Stored(partition, offset, value))
    return out


def entries_and_chain(stored: list[Stored], shown: int | None = None) -> tuple[list[Entry], Chain]:
    about = [s for s in stored if orjson.loads(s.value)["intent_id"].startswith("rep-")][:shown]
    check = ChainCheck(watch={(s.partition, s.offset) for s in about})
    for s in stored:
        check.add(s)
    return [Entry(orjson.loads(s.value), s.partition, s.offset) for s in about], Chain(check.finish())


def page(records: list[dict[str, Any]] | None = None, **kwargs: Any) -> str:
    entries, chain = entries_and_chain(chained(scenario() if records is None else records))
    return render(CALLEE, entries, chain, NOW, version="0.1.0", **kwargs)


def test_the_report_shows_every_decision_with_its_reasons_and_the_data_it_relied_on() -> None:
    html = page(written="351 700 9001")
    text = text_of(html)
    assert "+393517009001" in text and "entered as 351 700 9001" in text
    # the summary counts, and every decision in Europe/Rome time, oldest first
    assert re.search(r"decisions 4 calls allowed 2 calls denied 2", text)
    times = ["2026-11-20 10:30:00.000 CET", "2026-11-21 10:30:00.000 CET", "2026-11-23 10:30:00.000 CET",
             "2026-11-25 10:30:00.000 CET"]  # fmt: skip
    positions = [text.index(f"#{n} {t}") for n, t in enumerate(times, 1)]
    assert positions == sorted(positions)
    assert text.count("ALLOWED") >= 2 and text.count("DENIED") >= 2
    # reasons, and the data behind them
    assert "#2 2026-11-21 10:30:00.000 CET ALLOWED consent" in text
    assert "#3 2026-11-23 10:30:00.000 CET DENIED register_stale opposition_register" in text
    assert "#4 2026-11-25 10:30:00.000 CET DENIED internal_dnc" in text
    assert "result used: opposed as of 2026-11-19 (every client's list (*), registered on 2024-02-01); " in text
    assert "2 day(s) old at the call (usable 15 days) → allowed by exception" in text
    assert "22 day(s) old at the call (usable 15 days) → denied" in text  # the stale one, by its age
    assert "consent given to acme on 2025-03-01 used" in text
    assert "for every client (*) on 2026-11-24 11:00 CET → denied" in text  # the opt-out, in Rome time
    assert "op-rep: certification active, valid 2024-01-01 to 2030-12-31, calls from IT → passed" in text
    assert "declared caller IDs: +390844000001" in text
    assert "mandate of acme: in force 2024-01-01 to 2030-12-31 → passed" in text
    assert "policy it/2026-11-30+demo-open-hours" in text and "certification list ops-7" in text
    assert "listed in the extract of 2026-11-19 → passed" in text
    # the rules with the law they cite, and the glossary of the reasons shown
    assert "opposition register denied register_stale opposition_register" in text
    assert "L. 5/2018, art. 1 c. 5" in text and "DPR 26/2022, art. 8 c. 2" in text
    assert "internal_dnc the person opted out" in text
    assert "outside_calling_hours" not in text  # only the reasons that occur are explained
    # the evidence: where each record is, its hash, the chain's verdict
    assert "callguard.audit partition 3, offset 41" in text
    assert "CHAIN INTACT the chain holds for all 4 record(s) shown" in text
    assert "intact: linked to the record before it; the next record (offset 42) carries its hash" in text
    assert "the newest record read in its partition" in text  # offset 43, the last one


def test_times_are_shown_in_europe_rome_summer_and_winter() -> None:
    html = page([record("rep-summer", datetime(2026, 7, 1, 8, 0, tzinfo=UTC), clear(date(2026, 6, 30)))])
    assert "#1 2026-07-01 10:00:00.000 CEST" in text_of(html)


def test_every_value_from_a_record_is_escaped() -> None:
    hostile = record(
        'rep-<script>alert("x")</script>',
        datetime(2026, 11, 20, 9, 30, tzinfo=UTC),
        clear(date(2026, 11, 18)),
        campaign='"><img src=x onerror=alert(1)>',
        client="acme&<b>co</b>",
    )
    html = page([hostile])
    assert "<script" not in html.lower() and "<img" not in html.lower() and "<b>co" not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html
    text = text_of(html)
    assert 'rep-<script>alert("x")</script>' in text  # shown as text, as written
    assert '"><img src=x onerror=alert(1)>' in text and "acme&<b>co</b>" in text


def test_the_page_fetches_nothing() -> None:
    html = page()
    assert not re.search(r"https?://", html, re.IGNORECASE)
    assert not re.search(r"<(script|link|img|iframe|object|embed)\b", html, re.IGNORECASE)
    assert not re.search(r"\b(src|href)\s*=\s*(?![\"']?#)", html, re.IGNORECASE)  # only links within the page
    assert "url(" not in html and "@import" not in html
    assert "Content-Security-Policy\" content=\"default-src 'none'" in html
    assert "@media print" in html and "@page" in html


def test_an_empty_answer_says_so() -> None:
    html = render(CALLEE, [], Chain(None), NOW, since=date(2026, 11, 1))
    text = text_of(html)
    assert "No decision about this number was found from 2026-11-01 on" in text
    assert re.search(r"decisions 0 calls allowed 0 calls denied 0", text)
    assert "<svg" not in html and "CHAIN NOT CHECKED no records to check" in text
    assert totals([], Chain(None), None).decisions == 0


def test_since_keeps_a_decision_at_the_first_instant_of_the_italian_day_and_drops_one_just_before() -> None:
    day = date(2026, 11, 20)
    start = since_start(day)
    assert start == datetime(2026, 11, 19, 23, 0, tzinfo=UTC)  # midnight in Rome, not in UTC
    at_start = record("rep-at", start, clear(date(2026, 11, 18)))
    before = record("rep-before", start - timedelta(milliseconds=1), clear(date(2026, 11, 18)))
    assert at_start["decided_at"] == "2026-11-19T23:00:00.000Z"
    assert before["decided_at"] == "2026-11-19T22:59:59.999Z"
    entries, chain = entries_and_chain(chained([before, at_start]))
    assert [in_period(e, day) for e in entries] == [False, True]
    assert [in_period(e, day + timedelta(days=1)) for e in entries] == [False, False]
    assert [in_period(e, day - timedelta(days=1)) for e in entries] == [True, True]
    text = text_of(render(CALLEE, entries, chain, NOW, since=day))
    assert "rep-at" in text and "rep-before" not in text
    assert "decisions from 2026-11-20 (Italian day) on" in text
    assert re.search(r"decisions 1 calls allowed 1", text)
    assert totals(entries, chain, day).decisions == 1 and totals(entries, chain, None).decisions == 2


def test_since_in_summer_is_midnight_cest() -> None:
    assert since_start(date(2026, 7, 1)) == datetime(2026, 6, 30, 22, 0, tzinfo=UTC)


def test_an_edited_record_is_shown_as_breaking_the_chain() -> None:
    stored = chained(scenario())
    edited = orjson.loads(stored[2].value)  # rep-consent, offset 41
    edited["decision"] = "deny"
    stored[2] = Stored(3, 41, orjson.dumps(edited))
    entries, chain = entries_and_chain(stored)
    text = text_of(render(CALLEE, entries, chain, NOW))
    assert "CHAIN BROKEN 3 of 4 record(s) shown fail the check" in text
    assert "BROKEN: the next record (offset 42) does not carry this record's hash" in text  # the edited one
    assert "BROKEN: its link to the record before it does not hold" in text  # the one after it
    assert "partition 3 offset 42: broken_link: previous record edited, dropped or reordered" in text
    # the one before it: its chain to the newest record breaks further on; the one after the break holds
    assert "but the chain breaks later in partition 3" in text
    assert totals(entries, chain, None).chain == {"broken": 3, "intact": 1}


def test_records_not_read_back_are_not_checked_and_say_why() -> None:
    entries, _ = entries_and_chain(chained(scenario()))
    text = text_of(render(CALLEE, entries, Chain(None, "the audit store could not be read back"), NOW))
    assert "CHAIN NOT CHECKED 4 of 4 record(s) shown not checked" in text
    assert "not checked: the audit store could not be read back" in text
    missing = Chain(ChainCheck().finish(), None, (3,))
    assert "it is past the audit store and the topic could not be read" in text_of(
        render(CALLEE, entries, missing, NOW)
    )


def test_the_sources_and_completeness_are_stated() -> None:
    behind = page(sources=Sources("the audit store (PostgreSQL) and callguard.audit past it", store_behind=3))
    assert "The audit store was 3 record(s) behind callguard.audit" in text_of(behind)
    unread = page(sources=Sources("the audit store (PostgreSQL) only", None, "no broker"))
    assert "callguard.audit could not be read" in text_of(unread) and "(no broker)" in text_of(unread)
    pending = render(CALLEE, [Entry(scenario()[0], 0, 7, pending=True)], Chain(None), NOW)
    assert "(read from the topic: not yet in the audit store)" in text_of(pending)


def test_the_timeline_marks_each_decision_in_its_lane() -> None:
    entries, _ = entries_and_chain(chained(scenario()))
    svg = timeline(sorted(entries, key=lambda e: e.decided_at))
    assert svg.count('<g class="mark allow">') == 2 and svg.count('<g class="mark deny">') == 2
    assert "Allowed (2)" in svg and "Denied (2)" in svg
    xs = [float(x) for x in re.findall(r'<circle cx="([0-9.]+)"', svg)]
    assert xs == sorted(xs) and xs[0] < xs[-1]  # time runs left to right
    assert "21 Nov 2026" in svg  # daily ticks over a week
    one = timeline(entries[:1])  # a single decision still gets an axis
    assert one.count("<g class=") == 1 and "<text" in one and 'class="count"' not in one


def test_decisions_at_the_same_moment_share_one_mark_with_their_count() -> None:
    at = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)
    batch = [record(f"rep-{n}", at, opposed(date(2026, 11, 19)), client="beta") for n in range(3)]
    batch.append(record("rep-ok", at, clear(date(2026, 11, 19))))
    entries, _ = entries_and_chain(chained(batch))
    svg = timeline(entries)
    assert svg.count('<g class="mark deny">') == 1 and svg.count('<g class="mark allow">') == 1
    assert '<text x="' in svg and 'class="count">3</text>' in svg
    assert "Denied (3)" in svg and "Allowed (1)" in svg
    assert "20 Nov 10:15" in svg or "20 Nov 10:30" in svg  # minutes on a short span


@pytest.mark.parametrize("reason", list(Reason))
def test_every_reason_code_is_explained(reason: Reason) -> None:
    assert REASON_TEXT[reason]


def test_every_rule_is_named_and_cites_known_sources() -> None:
    assert set(RULES) <= set(RULE_TEXT)
    assert set(US_RULES) <= set(RULE_TEXT) | set(US_RULE_TEXT)
    for _, keys in [*RULE_TEXT.values(), *US_RULE_TEXT.values()]:
        for key in keys:
            assert key in SOURCES and SOURCES[key].short
    assert len({source.short for source in SOURCES.values()}) == len(SOURCES)  # each short name says which source


# --- the command's bad input: one line, exit 2, no file (no server needed) ---------------


def report_cli(tmp_path: Path, *argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("CALLGUARD_")}
    base.update({"CALLGUARD_BROKER": f"kafka://127.0.0.1:{free_port()}", **env})
    return subprocess.run(
        [sys.executable, "-m", "callguard", "audit", "report", *argv],
        env=base,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("argv", "env", "says"),
    [
        (("--callee", "12"), {}, "--callee '12' is not a valid phone number"),
        (("--callee", "+39 351 702 0001", "--since", "30/11/2026"), {}, "--since: expected YYYY-MM-DD"),
        (("--callee", "+39 351 702 0001"), {"CALLGUARD_AUDIT_DSN": ""}, "CALLGUARD_AUDIT_DSN (or --audit-dsn)"),
        (("--callee", "+39 351 702 0001", "--out", "/nonexistent-dir/r.html"), {}, "no directory /nonexistent-dir"),
        (("--callee", "+39 351 702 0001", "--out", "/tmp"), {}, "--out /tmp: is a directory"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, argv: tuple[str, ...], env: dict[str, str], says: str
) -> None:
    out = tmp_path / "r.html"
    if "--out" not in argv:
        argv = (*argv, "--out", str(out))
    result = report_cli(tmp_path, *argv, **{"CALLGUARD_AUDIT_DSN": "postgresql://u@127.0.0.1:1/x", **env})
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("callguard: ") and says in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and result.stdout == ""
    assert not out.exists()


def test_an_unreachable_store_is_one_line_and_exit_2(tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    dsn = f"postgresql://u:secret@127.0.0.1:{free_port()}/x"
    result = report_cli(tmp_path, "--callee", "+39 351 702 0001", "--out", str(out), CALLGUARD_AUDIT_DSN=dsn)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("callguard: cannot read the audit store at postgresql://u:***@127.0.0.1:")
    assert len(result.stderr.strip().splitlines()) == 1 and "secret" not in result.stderr
    assert not out.exists()


@pytest.mark.parametrize(
    "odd",
    [
        {},
        {"intent_id": "rep-odd", "decision": "deny", "decided_at": "not a time"},
        {"intent_id": "rep-odd", "decision": "allow", "decided_at": "2026-11-20T09:30:00"},  # no offset
        {"decided_at": "2026-11-20T09:30:00Z", "intent": "x", "rules": "x", "facts": [], "versions": "v", "reasons": 3},
        {"decided_at": "2026-11-20T09:30:00Z", "rules": [{"rule": "opposition_register", "detail": "x"}, 7]},
    ],
)
def test_a_record_of_any_shape_renders_without_a_traceback(odd: dict[str, Any]) -> None:
    """Records come from a store someone may have edited: whatever they hold is shown as far as it goes."""
    good = scenario()[0]
    html = render(CALLEE, [Entry(odd, 0, 1), Entry(good, 0, 2)], Chain(None, "not read"), NOW)
    assert "#2" in text_of(html) and "rep-clear" in text_of(html)


def test_an_older_record_without_facts_says_what_it_does_not_hold() -> None:
    older = {k: v for k, v in scenario()[3].items() if k != "facts"}  # written before audit records held facts
    text = text_of(render(CALLEE, [Entry(older, 0, 1)], Chain(None), NOW))
    assert "not recorded (written before audit records carried every fact)" in text
    assert "for every client (*) on 2026-11-24 11:00 CET → denied" in text  # the rule's own detail still says it


def test_a_us_decisions_shared_rules_cite_the_us_texts() -> None:
    """A US pack's record (its do-not-call rule is always listed) cites the CFR
    for the rules both packs share; an Italian record keeps the Italian texts."""
    us: dict[str, dict[str, Any]] = {"jurisdiction": {}, "do_not_call_registers": {}, "calling_hours": {}}
    italian: dict[str, dict[str, Any]] = {"opposition_register": {}, "calling_hours": {}}
    assert rule_text("calling_hours", us)[1][:2] == ("TSR_CALLING_HOURS", "TCPA_CALLING_HOURS")
    assert rule_text("calling_hours", italian)[1] == ("CODICE_CONDOTTA", "L151_2025")
    assert rule_text("do_not_call_registers", us)[1][0] == "TSR_DNC_REGISTRY"
