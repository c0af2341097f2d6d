"""The regulator's report: every decision about one number, as one self-contained HTML file.

A complaint to the Garante (its online form) names a phone number and asks
what was done with it and why. ``callguard audit report`` answers with one
file a compliance officer can send or print to PDF: each decision about the
number (time in Europe/Rome, decision, reasons), the data it relied on
(register result and its age, consents, contracts, opt-outs, the operator
and its certification, the policy version), a timeline of the calls allowed
and denied, and whether the hash chain holds for the records shown.

This module is pure: audit records, the chain's verdict (:class:`ChainCheck`'s
report) and the clock in, a string out. It reads nothing, writes nothing and
imports no client; the command (:mod:`callguard.cli.report`) is the shell.
The page loads nothing from the network: inline CSS, an inline SVG chart, no
script, and a Content-Security-Policy that forbids every fetch.

Every value from a record is escaped (:func:`html.escape`): a record is data
written by dialers (ids, campaign names), never markup.
"""

from __future__ import annotations

import html
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock
from typing import Any
from zoneinfo import ZoneInfo

from callguard.core.audit import Report
from callguard.core.schema import Reason
from callguard.core.sources import SOURCES

ROME = ZoneInfo("Europe/Rome")

#: What each reason code means, in a sentence a reader of the report needs.
REASON_TEXT: dict[str, str] = {
    Reason.INVALID_NUMBER: "the callee is not a valid phone number",
    Reason.NOT_CHECKED: "no opposition-register result for this number decided for this client",
    Reason.REGISTER_STALE: "the register result was too old to be used (Italy: 15 days, day D to D+14; US: 31 days)",
    Reason.OPPOSITION_REGISTER: "the number is registered in the Registro pubblico delle opposizioni",
    Reason.INTERNAL_DNC: "the person opted out (internal do-not-call list) for this client or for every client",
    Reason.OPERATOR_UNKNOWN: "the call centre is not on the certification list",
    Reason.OPERATOR_INACTIVE: "the call centre's certification is suspended or revoked",
    Reason.OPERATOR_EXPIRED: "the call centre's certification was not in force that day",
    Reason.LOOKUP_UNAVAILABLE: "the data could not be read in time: nothing could be checked, so the call was denied",
    Reason.MALFORMED_INTENT: "the dialer's request broke the interface contract",
    Reason.CALLER_ID_MISSING: "no callable caller ID would have been shown",
    Reason.CALLER_ID_NOT_DECLARED: "the caller ID is not one the call centre declared",
    Reason.CALLER_ID_WRONG_PREFIX: "the caller ID does not have the prefix required for the call's purpose",
    Reason.OUTSIDE_CALLING_HOURS: "outside the calling hours of the callee's local time",
    Reason.TIMEZONE_UNKNOWN: "the callee's local time could not be determined",
    Reason.FREQUENCY_CAP: "the callee had already received the maximum number of calls for this client",
    Reason.RECENT_SILENT_CALL: "a silent or abandoned call to this callee for this client less than 7 days before",
    Reason.CONSENT_REQUIRED: "the call needed a consent of this client (unlisted number or automated call)",
    Reason.CAMPAIGN_SILENT_RATE: "the campaign's silent or abandoned calls were over the limit (3 per 100)",
    Reason.OPERATOR_NOT_MANDATED: "the call centre held no mandate of this client that day",
    Reason.CALLER_ID_FOREIGN_ORIGIN: "a call centre abroad would have shown an Italian number",
    Reason.CONSENT: "allowed on a consent given to this client",
    Reason.CONTRACT: "allowed on a contract with this client (in force, or ended not more than 30 days before)",
    Reason.REQUEST: "allowed because the person asked this client for the call",
    Reason.NO_POLICY_FOR_COUNTRY: "no policy pack covers the callee's country, so a marketing or survey call is denied",
    Reason.NATIONAL_DNC: "the number is on the US National Do Not Call Registry",
    Reason.STATE_DNC: "the number is on a US state's do-not-call list",
    Reason.NUMBER_REASSIGNED: "the number was disconnected and reassigned after the consent was given",
    Reason.EBR_TRANSACTION: "allowed on an established business relationship (a purchase or transaction within 18 months)",
    Reason.EBR_INQUIRY: "allowed on an established business relationship (an inquiry within 3 months)",
}

#: Each rule in words, and the keys of the legal sources it cites (:mod:`callguard.core.sources`).
RULE_TEXT: dict[str, tuple[str, tuple[str, ...]]] = {
    "callee_number": ("valid callee number", ("DPR26_2022_ART8_C2",)),
    "lookup": ("data lookup", ()),
    "well_formed": ("well-formed request", ()),
    "operator_certified": ("call centre certified", ("CODICE_CONDOTTA",)),
    "operator_mandated": ("call centre mandated by the client", ("CODICE_CONDOTTA_FILIERA",)),
    "opposition_register": (
        "opposition register",
        ("L5_2018_ART1", "L5_2018_ART1_C5", "DPR26_2022_ART8_C2", "RPO_FAQ_CONTROLLERS", "RPO_FAQ_REQUEST"),
    ),
    "directory": ("public directories", ("CODICE_CONDOTTA_ART10_C2",)),
    "automated_calls": ("automated calls", ("CODICE_PRIVACY_ART130_C1_C2",)),
    "internal_dnc": ("opt-outs (do-not-call)", ("CODICE_CONDOTTA",)),
    "caller_id": ("caller ID", ("L5_2018_ART2_C1", "CODICE_CONDOTTA", "AGCOM_CLI_SPOOFING")),
    "calling_hours": ("calling hours", ("CODICE_CONDOTTA", "L151_2025")),
    "frequency_cap": ("contact frequency (a policy limit)", ()),
    "silent_calls": ("silent calls", ("GARANTE_SILENT_CALLS_BLOCK",)),
    "campaign_silent_rate": ("campaign silent-call rate", ("GARANTE_SILENT_CALLS_RATE",)),
}

#: The rules of a United States pack where they differ from :data:`RULE_TEXT`
#: (shared rules cite the US texts for a US decision).
US_RULE_TEXT: dict[str, tuple[str, tuple[str, ...]]] = {
    "operator_certified": ("call centre certified (a policy requirement)", ()),
    "operator_mandated": ("call centre mandated by the client (a policy requirement)", ()),
    "reassigned_numbers": ("reassigned numbers", ("TCPA_REASSIGNED",)),
    "do_not_call_registers": (
        "do-not-call registries",
        ("TSR_DNC_REGISTRY", "TSR_SAFE_HARBOR", "TCPA_DNC", "TSR_EBR", "FL_DNC"),
    ),
    "wireless_automated": ("autodialed or prerecorded calls to wireless numbers", ("TCPA_WIRELESS_AUTODIALED",)),
    "internal_dnc": ("opt-outs (entity-specific do-not-call)", ("TSR_ENTITY_DNC", "TCPA_ENTITY_DNC")),
    "caller_id": ("caller ID transmitted", ("TSR_CALLER_ID",)),
    "calling_hours": (
        "calling hours at the callee's location",
        ("TSR_CALLING_HOURS", "TCPA_CALLING_HOURS", "US_TIME_ZONES", "FL_TSA", "OK_TSA", "MD_SSCA"),
    ),
    "frequency_cap": ("contact frequency (state caps)", ("FL_TSA", "OK_TSA", "MD_SSCA")),
    "campaign_silent_rate": ("campaign abandonment rate", ("TSR_ABANDONMENT",)),
}
#: The rule a policy set adds first: which pack decided.
RULE_TEXT["jurisdiction"] = ("policy pack for the callee's country", ())


def rule_text(name: str, rules: dict[str, dict[str, Any]]) -> tuple[str, tuple[str, ...]]:
    """A rule's words and cited sources, for the pack that decided (a US pack's
    record lists its own rules, ``do_not_call_registers`` always among them)."""
    if "do_not_call_registers" in rules and name in US_RULE_TEXT:
        return US_RULE_TEXT[name]
    return RULE_TEXT.get(name, (name, ()))


OUTCOME_TEXT = {
    "pass": "passed",
    "deny": "denied",
    "allow_exception": "allowed by exception",
    "skipped": "not applied",
}

CHAIN_MEANING = (
    "Every audit record carries the SHA-256 hash of the exact bytes of the record before it in the same "
    "partition of the callguard.audit topic. A record edited after it was written no longer has the hash the "
    "next record carries, so the chain breaks there: a break at offset o means the record before o was edited, "
    "dropped, or the two were reordered. Here each partition holding a record shown was read back from the "
    "record before the first one shown to the newest one, and every link was checked. The newest record of a "
    "partition is not linked by a later one yet: the workers keep a checkpoint of it, which "
    "callguard audit verify checks."
)


# --- input ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Entry:
    """One audit record to show: the record (parsed from its exact bytes where
    they were read), where it is in ``callguard.audit``, and whether it was
    read from the topic because the audit store does not hold it yet."""

    record: dict[str, Any]
    partition: int
    offset: int
    pending: bool = False

    def __post_init__(self) -> None:
        # a store can be edited: whatever shape a record has, it is shown as far as it goes
        object.__setattr__(self, "record", tidy(self.record))

    @property
    def decided_at(self) -> datetime:
        """When the decision was made; :data:`UNKNOWN_TIME` when the record does not say."""
        try:
            moment = datetime.fromisoformat(self.record["decided_at"])
        except (KeyError, TypeError, ValueError):
            return UNKNOWN_TIME
        return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)

    @property
    def when(self) -> str:
        if self.decided_at == UNKNOWN_TIME:
            return f"time not readable ({self.record.get('decided_at')!r})"
        return rome(self.decided_at)

    @property
    def short_when(self) -> str:
        return "time not readable" if self.decided_at == UNKNOWN_TIME else rome(self.decided_at, millis=False)


#: The time of a record whose ``decided_at`` cannot be read (it sorts first).
UNKNOWN_TIME = datetime(1970, 1, 1, tzinfo=UTC)


def _d(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _strs(value: Any) -> list[str]:
    return [str(item) for item in value] if isinstance(value, list) else []


def tidy(record: Any) -> dict[str, Any]:
    """A record with the shapes the page reads (objects, lists), whatever it held:
    a field of the wrong type is shown as absent, never a traceback."""
    out = dict(record) if isinstance(record, dict) else {}
    out["intent"] = _d(out.get("intent"))
    out["versions"] = _d(out.get("versions"))
    out["reasons"] = _strs(out.get("reasons"))
    rules = []
    for rule in _dicts(out.get("rules")):
        detail = dict(_d(rule.get("detail")))
        for key in ("exceptions", "optouts", "limits", "mandates"):
            if key in detail:
                detail[key] = _dicts(detail[key])
        for key in ("result", "mandate"):
            if key in detail and not isinstance(detail[key], dict):
                detail[key] = None
        rules.append({**rule, "detail": detail, "reasons": _strs(rule.get("reasons"))})
    out["rules"] = rules
    if "facts" in out:
        facts = dict(_d(out["facts"]))
        for key in ("register", "consents", "optouts", "mandates", "calls"):
            if key in facts:
                facts[key] = _dicts(facts[key])
        for key in ("operator", "directory"):
            if key in facts and facts[key] is not None and not isinstance(facts[key], dict):
                facts[key] = None
        if isinstance(facts.get("operator"), dict):
            facts["operator"] = {**facts["operator"], "caller_ids": _strs(facts["operator"].get("caller_ids"))}
        out["facts"] = facts
    return out


@dataclass(frozen=True, slots=True)
class Sources:
    """Where the records came from and how complete the answer is."""

    #: e.g. "audit store (PostgreSQL) and callguard.audit past it"
    description: str
    #: records the audit store is behind the topic (None: the topic could not be read)
    store_behind: int | None = 0
    #: why the topic could not be read, when it could not
    topic_error: str | None = None
    #: False when the records past the store were too many to read them all
    scan_complete: bool = True


@dataclass(frozen=True, slots=True)
class Chain:
    """The chain's verdict on the records shown: :class:`callguard.core.audit.Report`
    of the segments read (None when none could be read, ``note`` says why)."""

    report: Report | None
    note: str | None = None
    #: partitions whose records past the audit store could not be read from the topic
    unread_tail: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the chain says about one record: ``state`` is ``intact``,
    ``broken`` or ``unchecked``; ``text`` says it in words."""

    state: str
    text: str
    sha256: str | None = None


def since_start(day: date) -> datetime:
    """The first instant of an Italian day: ``--since D`` keeps decisions from it on."""
    return datetime.combine(day, clock(), ROME)


def in_period(entry: Entry, since: date | None) -> bool:
    """True when the decision was made on or after the start of Italian day ``since``
    (or its record does not say when: never hidden)."""
    return since is None or entry.decided_at == UNKNOWN_TIME or entry.decided_at >= since_start(since)


def select(entries: Iterable[Entry], since: date | None) -> list[Entry]:
    """The entries to show, oldest first (ties by intent id, for a stable order)."""
    chosen = [e for e in entries if in_period(e, since)]
    chosen.sort(key=lambda e: (e.decided_at, str(e.record.get("intent_id"))))
    return chosen


# --- the chain's verdict, per record and per partition ----------------------------------


def verdict(entry: Entry, chain: Chain) -> Verdict:
    """Whether the chain holds for one record, in words."""
    report = chain.report
    key = (entry.partition, entry.offset)
    if report is None:
        return Verdict("unchecked", f"not checked: {chain.note or 'the records could not be read back'}")
    watched = report.watched.get(key)
    if watched is None:
        if entry.partition in chain.unread_tail:
            why = "it is past the audit store and the topic could not be read"
        else:
            why = "its bytes were not found among the records read back"
        return Verdict("unchecked", f"not checked: {why}")
    kinds = {p.kind for p in report.problems if (p.partition, p.offset) == key}
    if "unchained" in kinds:
        return Verdict("broken", "BROKEN: the record carries no chain link (chain.prev)", watched.sha256)
    if watched.linked_to_previous is False:
        return Verdict(
            "broken",
            "BROKEN: its link to the record before it does not hold: that record was edited, dropped or reordered",
            watched.sha256,
        )
    if watched.next_links_here is False:
        return Verdict(
            "broken",
            f"BROKEN: the next record (offset {watched.next_offset}) does not carry this record's hash: this record, "
            "or the one after it, was altered after it was written",
            watched.sha256,
        )
    later = [p for p in report.problems if p.partition == entry.partition and p.offset > entry.offset]
    parts = []
    if watched.linked_to_previous is None:
        parts.append(
            "the first record read in its partition (older records are no longer held): its own link was not compared"
        )
    else:
        parts.append("linked to the record before it")
    if watched.next_offset is None:
        parts.append(
            "the newest record read in its partition: no later record links to it yet (the workers' "
            "checkpoint, checked by callguard audit verify, covers it)"
        )
        state = "intact"
    else:
        parts.append(f"the next record (offset {watched.next_offset}) carries its hash")
        last = report.last_offset.get(entry.partition)
        if later:
            parts.append(f"but the chain breaks later in partition {entry.partition} ({len(later)} problem(s) below)")
            state = "broken"
        else:
            parts.append(f"the chain holds from here to offset {last}")
            state = "intact"
    text = ("intact: " if state == "intact" else "") + "; ".join(parts)
    return Verdict(state, text, watched.sha256)


@dataclass(frozen=True, slots=True)
class PartitionVerdict:
    partition: int
    records: int
    first: int | None
    last: int | None
    problems: tuple[str, ...]
    shown: int
    unread_tail: bool = False

    @property
    def ok(self) -> bool:
        return not self.problems and self.records > 0 and not self.unread_tail


def partition_verdicts(entries: Sequence[Entry], chain: Chain) -> list[PartitionVerdict]:
    shown = Counter(e.partition for e in entries)
    out = []
    for partition in sorted(shown):
        report = chain.report
        if report is None:
            out.append(PartitionVerdict(partition, 0, None, None, (), shown[partition]))
            continue
        problems = tuple(str(p) for p in report.problems if p.partition == partition)
        out.append(
            PartitionVerdict(
                partition,
                report.records.get(partition, 0),
                report.first_offset.get(partition),
                report.last_offset.get(partition),
                problems,
                shown[partition],
                partition in chain.unread_tail,
            )
        )
    return out


# --- formatting helpers -------------------------------------------------------------------


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def rome(moment: datetime, seconds: bool = True, millis: bool = True) -> str:
    local = moment.astimezone(ROME)
    text = local.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")
    if seconds and millis:
        text += f".{local.microsecond // 1000:03d}"
    return f"{text} {local.tzname()}"


def when(value: Any) -> str:
    """A day as written, an instant in Europe/Rome; anything else as written."""
    if not isinstance(value, str) or not value:
        return "-"
    if "T" not in value:
        return value
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return value
    if moment.tzinfo is None:
        return value
    return rome(moment, seconds=False)


def _code(value: Any) -> str:
    return f"<code>{esc(value)}</code>"


def _reason_chips(reasons: Sequence[Any]) -> str:
    if not reasons:
        return '<span class="muted">none</span>'
    return " ".join(f'<span class="chip" title="{esc(REASON_TEXT.get(str(r), ""))}">{esc(r)}</span>' for r in reasons)


def _badge(decision: Any) -> str:
    allow = decision == "allow"
    return f'<span class="badge {"allow" if allow else "deny"}">{"ALLOWED" if allow else "DENIED"}</span>'


def _chain_badge(state: str, short: bool = False) -> str:
    label = {"intact": "INTACT", "broken": "BROKEN", "unchecked": "NOT CHECKED"}[state]
    return f'<span class="badge chain-{state}">{"" if short else "CHAIN "}{label}</span>'


def _sources(keys: Sequence[str]) -> str:
    if not keys:
        return '<span class="muted">policy limit</span>'
    return "; ".join(f'<span title="{esc(SOURCES[k].citation())}">{esc(SOURCES[k].short)}</span>' for k in keys)


def cited(entries: Sequence[Entry]) -> list[str]:
    """The source keys the rules of ``entries`` cite, in the order of :data:`SOURCES`."""
    keys = {k for e in entries for rules in (_rules(e.record),) for name in rules for k in rule_text(name, rules)[1]}
    return [k for k in SOURCES if k in keys]


# --- the timeline ----------------------------------------------------------------------------


def _ticks(lo: datetime, hi: datetime) -> list[tuple[datetime, str]]:
    """Axis ticks at round Italian times between ``lo`` and ``hi``, at most about 10."""
    span = hi - lo
    start = lo.astimezone(ROME)
    ticks: list[tuple[datetime, str]] = []
    if span <= timedelta(hours=4):
        minutes = next(m for m in (5, 10, 15, 30, 60) if span / timedelta(minutes=m) <= 10)
        moment = start.replace(minute=0, second=0, microsecond=0)
        while moment <= hi:
            if moment >= lo and moment.minute % minutes == 0:
                ticks.append((moment, moment.strftime("%d %b %H:%M")))
            moment = (moment.astimezone(UTC) + timedelta(minutes=5)).astimezone(ROME)
        return ticks
    if span <= timedelta(hours=36):
        for step in (1, 2, 3, 6, 12):
            if span / timedelta(hours=step) <= 10:
                break
        first = start.replace(minute=0, second=0, microsecond=0)
        moment = first
        while moment <= hi:
            if moment >= lo and moment.hour % step == 0:
                ticks.append((moment, moment.strftime("%d %b %H:%M")))
            moment = (moment.astimezone(UTC) + timedelta(hours=1)).astimezone(ROME)
        return ticks
    days = span / timedelta(days=1)
    if days <= 120:
        step = next(s for s in (1, 2, 7, 14, 30) if days / s <= 10)
        day = start.date()
        index = 0
        while True:
            moment = datetime.combine(day, clock(), ROME)
            if moment > hi:
                break
            if moment >= lo and index % step == 0:
                ticks.append((moment, day.strftime("%d %b %Y")))
            if moment >= lo:
                index += 1
            day += timedelta(days=1)
        return ticks
    months = days / 30.4
    step = next(s for s in (1, 2, 3, 6, 12, 24, 60) if months / s <= 10)
    year, month = start.year, start.month
    index = 0
    while True:
        moment = datetime(year, month, 1, tzinfo=ROME)
        if moment > hi:
            break
        if moment >= lo:
            if index % step == 0:
                ticks.append((moment, moment.strftime("%b %Y")))
            index += 1
        month += 1
        if month == 13:
            year, month = year + 1, 1
    return ticks


def timeline(entries: Sequence[Entry]) -> str:
    """An inline SVG: one mark per decision on a time axis, allowed above, denied below."""
    width, left, right = 960, 120, 24
    lanes = {"allow": 44, "deny": 100}
    axis = 136
    if not entries:
        return ""
    numbered = sorted(
        ((n, e) for n, e in enumerate(entries, 1) if e.decided_at != UNKNOWN_TIME), key=lambda ne: ne[1].decided_at
    )
    if not numbered:
        return ""
    times = [e.decided_at for _, e in numbered]
    lo, hi = min(times), max(times)
    pad = max((hi - lo) * 0.04, timedelta(minutes=30))
    lo, hi = lo - pad, hi + pad
    span = (hi - lo).total_seconds()

    def x(moment: datetime) -> float:
        return left + (width - left - right) * (moment - lo).total_seconds() / span

    counts = Counter(e.record.get("decision") for _, e in numbered)
    parts = [
        f'<svg class="timeline" viewBox="0 0 {width} 170" role="img" '
        f'aria-label="Timeline of {len(numbered)} decisions: {counts["allow"]} allowed, '
        f'{len(numbered) - counts["allow"]} denied">',
        f'<rect x="{left}" y="20" width="{width - left - right}" height="{axis - 20}" class="plot"/>',
    ]
    for moment, label in _ticks(lo, hi):
        px = x(moment)
        parts.append(f'<line x1="{px:.1f}" y1="20" x2="{px:.1f}" y2="{axis}" class="grid"/>')
        parts.append(f'<text x="{px:.1f}" y="{axis + 18}" class="tick">{esc(label)}</text>')
    for kind, y in lanes.items():
        label = "Allowed" if kind == "allow" else "Denied"
        n = counts["allow"] if kind == "allow" else len(numbered) - counts["allow"]
        parts.append(f'<text x="{left - 12}" y="{y + 5}" class="lane {kind}">{label} ({n})</text>')
        parts.append(f'<line x1="{left}" y1="{y}" x2="{width - right}" y2="{y}" class="lane-line"/>')
    # decisions closer than a mark's width share one mark, with their count above it
    clusters: dict[str, list[tuple[float, list[str]]]] = {"allow": [], "deny": []}
    for number, entry in numbered:
        kind = "allow" if entry.record.get("decision") == "allow" else "deny"
        reasons = ", ".join(str(r) for r in entry.record.get("reasons") or ()) or "no exception needed"
        title = f"#{number} {entry.when}: {'allowed' if kind == 'allow' else 'denied'} ({reasons})"
        px = x(entry.decided_at)
        lane = clusters[kind]
        if lane and px - lane[-1][0] < 8:
            lane[-1][1].append(title)
        else:
            lane.append((px, [title]))
    for kind, lane in clusters.items():
        y = lanes[kind]
        for px, titles in lane:
            count = f'<text x="{px:.1f}" y="{y - 18}" class="count">{len(titles)}</text>' if len(titles) > 1 else ""
            parts.append(
                f'<g class="mark {kind}"><title>{esc(chr(10).join(titles))}</title>'
                f'<line x1="{px:.1f}" y1="{y - 14}" x2="{px:.1f}" y2="{y + 14}"/>'
                f'<circle cx="{px:.1f}" cy="{y}" r="5"/>{count}</g>'
            )
    parts.append(f'<line x1="{left}" y1="{axis}" x2="{width - right}" y2="{axis}" class="axis"/>')
    parts.append(f'<text x="{width - right}" y="14" class="tz">times in Europe/Rome</text>')
    parts.append("</svg>")
    return "".join(parts)


# --- one decision ----------------------------------------------------------------------------


def _rules(record: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {str(rule.get("rule")): rule for rule in record.get("rules") or () if isinstance(rule, dict)}


def _used_exceptions(rules: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    used = []
    for rule in rules.values():
        for consent in (rule.get("detail") or {}).get("exceptions") or ():
            if consent not in used:
                used.append(consent)
    return used


def _facts(record: dict[str, Any]) -> dict[str, Any]:
    facts = record.get("facts")
    return facts if isinstance(facts, dict) else {}


NOT_RECORDED = '<span class="muted">not recorded (written before audit records carried every fact)</span>'


def _skipped(rule: dict[str, Any]) -> str:
    detail = rule.get("detail") or {}
    if detail.get("disabled"):
        return "not applied: the rule is switched off in this policy"
    return f"not applied: the rule does not cover {esc(detail.get('purpose', 'this'))} calls"


def _register(record: dict[str, Any], rules: dict[str, dict[str, Any]]) -> str:
    rule = rules.get("opposition_register")
    facts = _facts(record)
    looked_up = facts.get("register")
    rows = []
    if rule is None:
        rows.append("not evaluated")
    elif rule.get("outcome") == "skipped":
        rows.append(_skipped(rule))
    else:
        detail = rule.get("detail") or {}
        result = detail.get("result")
        outcome = OUTCOME_TEXT.get(str(rule.get("outcome")), str(rule.get("outcome")))
        if not result:
            rows.append(f"no consultation result decided for this client &rarr; <b>{esc(outcome)}</b>")
        else:
            scope = result.get("client_id")
            whose = "every client's list (*)" if scope == "*" else f"client {esc(scope)}'s consultation"
            registered = (
                f", registered on {esc(when(result.get('registered_at')))}" if result.get("registered_at") else ""
            )
            age = ""
            if detail.get("age_days") is not None:
                age = (
                    f"; <b>{esc(detail['age_days'])} day(s) old</b> at the call "
                    f"(usable {esc(detail.get('max_age_days'))} days)"
                )
            rows.append(
                f"result used: <b>{esc(result.get('status'))}</b> as of {esc(result.get('as_of'))} "
                f"({whose}{registered}){age} &rarr; <b>{esc(outcome)}</b>"
            )
    if isinstance(looked_up, list) and len(looked_up) > 1:
        others = "; ".join(
            f"{esc(r.get('status'))} as of {esc(r.get('as_of'))} (list {esc(r.get('client_id'))})" for r in looked_up
        )
        rows.append(f"results held for this number and client: {others}")
    return "<br>".join(rows)


def _directory(record: dict[str, Any], rules: dict[str, dict[str, Any]]) -> str:
    rule = rules.get("directory")
    directory = _facts(record).get("directory")
    if rule is not None and rule.get("outcome") == "skipped":
        return _skipped(rule)
    if not isinstance(directory, dict):
        return NOT_RECORDED if rule is None else esc(OUTCOME_TEXT.get(str(rule.get("outcome")), ""))
    if directory.get("extract") is None:
        text = "no public-directory extract loaded"
    else:
        listed = "listed" if directory.get("listed") else "<b>not listed</b>"
        text = f"{listed} in the extract of {esc(directory.get('extract'))}"
    if rule is not None:
        text += f" &rarr; <b>{esc(OUTCOME_TEXT.get(str(rule.get('outcome')), rule.get('outcome')))}</b>"
    return text


def _consents(record: dict[str, Any], rules: dict[str, dict[str, Any]]) -> str:
    facts = _facts(record)
    held = facts.get("consents")
    used = _used_exceptions(rules)
    if not isinstance(held, list):
        if not used:
            return NOT_RECORDED
        held = used
    if not held:
        return '<span class="muted">none held for this number and client</span>'
    items = []
    for consent in held:
        mark = ' <span class="used">used</span>' if consent in used else ""
        ends = f", ends {esc(when(consent.get('ends_at')))}" if consent.get("ends_at") else ""
        items.append(
            f"<li>{esc(consent.get('basis'))} given to {esc(consent.get('client_id'))} on "
            f"{esc(when(consent.get('granted_at')))}{ends}{mark}</li>"
        )
    return f"<ul>{''.join(items)}</ul>"


def _optouts(record: dict[str, Any], rules: dict[str, dict[str, Any]]) -> str:
    facts = _facts(record)
    held = facts.get("optouts")
    rule = rules.get("internal_dnc")
    if not isinstance(held, list):
        held = ((rule or {}).get("detail") or {}).get("optouts")
        if held is None:
            return NOT_RECORDED
    text = (
        "; ".join(
            f"for {'every client (*)' if o.get('client_id') == '*' else esc(o.get('client_id'))} "
            f"on {esc(when(o.get('at')))}"
            for o in held
        )
        if held
        else '<span class="muted">none</span>'
    )
    if rule is not None:
        outcome = "not applied" if rule.get("outcome") == "skipped" else OUTCOME_TEXT.get(str(rule.get("outcome")))
        text += f" &rarr; <b>{esc(outcome)}</b>"
    return text


def _operator(record: dict[str, Any], rules: dict[str, dict[str, Any]]) -> str:
    intent = record.get("intent") or {}
    facts = _facts(record)
    rule = rules.get("operator_certified")
    operator = facts.get("operator") if "operator" in facts else (rule or {}).get("detail")
    rows = []
    if operator is None and (rule is not None or "operator" in facts):
        rows.append(f"{esc(intent.get('operator_id'))}: <b>not on the certification list</b>")
    elif isinstance(operator, dict) and operator.get("status"):
        country = operator.get("country") or "IT"
        rows.append(
            f"{esc(operator.get('operator_id'))}: certification <b>{esc(operator.get('status'))}</b>, "
            f"valid {esc(operator.get('valid_from'))} to {esc(operator.get('valid_until'))}, "
            f"calls from {esc(country)}"
        )
        caller_ids = operator.get("caller_ids")
        if caller_ids:
            rows.append("declared caller IDs: " + ", ".join(_code(c) for c in caller_ids))
    else:
        rows.append(NOT_RECORDED)
    if rule is not None:
        rows[0] += f" &rarr; <b>{esc(OUTCOME_TEXT.get(str(rule.get('outcome')), rule.get('outcome')))}</b>"
    mandate_rule = rules.get("operator_mandated")
    if mandate_rule is not None:
        detail = mandate_rule.get("detail") or {}
        if mandate_rule.get("outcome") == "skipped":
            rows.append("mandate: " + _skipped(mandate_rule))
        elif detail.get("mandate"):
            m = detail["mandate"]
            rows.append(
                f"mandate of {esc(m.get('client_id'))}: in force {esc(m.get('valid_from'))} to "
                f"{esc(m.get('valid_until'))} &rarr; <b>passed</b>"
            )
        else:
            rows.append(
                f"mandate of {esc(detail.get('client_id'))}: <b>none in force that day</b> &rarr; <b>denied</b>"
            )
    return "<br>".join(rows)


def _history(record: dict[str, Any], rules: dict[str, dict[str, Any]]) -> str:
    facts = _facts(record)
    rows = []
    calls = facts.get("calls")
    cap = rules.get("frequency_cap")
    if isinstance(calls, list):
        rows.append(f"{len(calls)} earlier call(s) allowed for this client in the window counted")
    if cap is not None and cap.get("outcome") != "skipped":
        limits = (cap.get("detail") or {}).get("limits") or ()
        shown = ", ".join(
            f"{esc(limit.get('calls'))} of {esc(limit.get('max'))} in {esc(_hours(limit.get('window_hours')))}"
            for limit in limits
        )
        if shown:
            rows.append(f"caps: {shown}")
    silent = facts.get("silent_at")
    if "silent_at" in facts:
        rows.append(f"last silent or abandoned call: {esc(when(silent)) if silent else 'none'}")
    hours = rules.get("calling_hours")
    if hours is not None and hours.get("outcome") != "skipped":
        detail = hours.get("detail") or {}
        if detail.get("local_time"):
            rows.append(
                f"callee's local time {esc(when(detail.get('local_time')))} ({esc(detail.get('zone'))}), "
                f"window that day {esc(detail.get('window') or 'none')}"
            )
    return "<br>".join(rows) if rows else '<span class="muted">not recorded</span>'


def _hours(value: Any) -> str:
    try:
        hours = float(value)
    except (TypeError, ValueError):
        return str(value)
    return f"{hours / 24:g} day(s)" if hours >= 48 and hours % 24 == 0 else f"{hours:g} h"


def _call(record: dict[str, Any]) -> str:
    intent = record.get("intent") or {}
    cells = [
        ("intent", _code(record.get("intent_id"))),
        ("client", esc(intent.get("client_id"))),
        ("call centre", esc(intent.get("operator_id"))),
        ("purpose", esc(intent.get("purpose"))),
        ("campaign", esc(intent.get("campaign_id") or "-")),
        ("caller ID shown", _code(intent.get("caller_id")) if intent.get("caller_id") else "none"),
        ("automated", "yes" if intent.get("automated") else "no"),
    ]
    if intent.get("script_id"):
        cells.append(("script", esc(intent["script_id"])))
    if intent.get("list_source"):
        cells.append(("number from", esc(intent["list_source"])))
    if intent.get("requested_at"):
        cells.append(("requested", esc(when(intent["requested_at"]))))
    return "".join(f"<span><i>{name}</i> {value}</span>" for name, value in cells)


def _rules_table(rules: dict[str, dict[str, Any]]) -> str:
    rows = []
    for name, rule in rules.items():
        label, keys = rule_text(name, rules)
        outcome = str(rule.get("outcome"))
        rows.append(
            f'<tr class="o-{esc(outcome)}"><td title="{esc(name)}">{esc(label)}</td>'
            f"<td>{esc(OUTCOME_TEXT.get(outcome, outcome))}</td>"
            f"<td>{_reason_chips(rule.get('reasons') or ()) if rule.get('reasons') else ''}</td>"
            f"<td class='law'>{_sources(keys) if keys or name == 'frequency_cap' else ''}</td></tr>"
        )
    return (
        '<table class="rules"><thead><tr><th>rule</th><th>outcome</th><th>reasons</th><th>legal basis</th></tr>'
        f"</thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _versions(record: dict[str, Any]) -> str:
    versions = record.get("versions") or {}
    names = {
        "policy": "policy",
        "operators": "certification list",
        "mandates": "mandates",
        "register": "register result",
        "directory": "directory extract",
    }
    shown = [f"<i>{label}</i> {_code(versions[key])}" for key, label in names.items() if versions.get(key)]
    shown += [f"<i>{esc(k)}</i> {_code(v)}" for k, v in versions.items() if k not in names and v]
    return " &middot; ".join(shown) or '<span class="muted">not recorded</span>'


def decision_section(number: int, entry: Entry, status: Verdict) -> str:
    record = entry.record
    rules = _rules(record)
    reasons = record.get("reasons") or ()
    extra = []
    if record.get("not_before"):
        extra.append(f"not before {esc(when(record['not_before']))}")
    if record.get("requires_operator"):
        extra.append("to be placed with an operator ready (after a silent call)")
    if record.get("retryable"):
        extra.append("retryable")
    where = f"callguard.audit partition {entry.partition}, offset {entry.offset}"
    if entry.pending:
        where += " (read from the topic: not yet in the audit store)"
    sha = f"<br><i>SHA-256</i> {_code(status.sha256)}" if status.sha256 else ""
    rows = [
        ("Call", f'<div class="call">{_call(record)}</div>'),
        ("Opposition register", _register(record, rules)),
        ("Public directories", _directory(record, rules)),
        ("Consents and contracts", _consents(record, rules)),
        ("Opt-outs", _optouts(record, rules)),
        ("Call centre", _operator(record, rules)),
        ("Contact history", _history(record, rules)),
        ("Rules applied", _rules_table(rules)),
        ("Versions of the data", _versions(record)),
        ("Evidence", f"{esc(where)}{sha}<br>{_chain_badge(status.state)} {esc(status.text)}"),
    ]
    body = "".join(f"<tr><th>{esc(name)}</th><td>{value}</td></tr>" for name, value in rows)
    decision = record.get("decision")
    return (
        f'<section class="decision {"allow" if decision == "allow" else "deny"}" id="d{number}">'
        f'<h3><span class="num">#{number}</span> {esc(entry.when)} {_badge(decision)} '
        f'<span class="reasons">{_reason_chips(reasons)}</span>'
        f"{'<span class=extra>' + esc('; '.join(extra)) + '</span>' if extra else ''}</h3>"
        f'<table class="facts">{body}</table></section>'
    )


# --- the page ----------------------------------------------------------------------------------


STYLE = """
:root { --ink:#1d2433; --muted:#667085; --line:#d0d5dd; --soft:#f5f7fa; --navy:#13294b;
        --allow:#1a7f37; --allow-bg:#e6f4ea; --deny:#b42318; --deny-bg:#fdecea; --warn:#b54708; --warn-bg:#fef4e6; }
* { box-sizing: border-box; }
html { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
body { margin: 0; color: var(--ink); background: #eef1f5;
       font: 13px/1.45 "Helvetica Neue", Helvetica, Arial, "Liberation Sans", "DejaVu Sans", sans-serif; }
main { max-width: 1040px; margin: 24px auto; background: #fff; padding: 0 0 24px;
       box-shadow: 0 1px 3px rgba(16,24,40,.12); }
header.top { background: var(--navy); color: #fff; padding: 22px 36px 18px; }
header.top .kicker { text-transform: uppercase; letter-spacing: .12em; font-size: 11px; opacity: .8; }
header.top h1 { margin: 4px 0 2px; font-size: 24px; font-weight: 600; }
header.top .number { font-family: "DejaVu Sans Mono", "Liberation Mono", Menlo, monospace; font-size: 20px; }
.content { padding: 0 36px; }
h2 { font-size: 15px; text-transform: uppercase; letter-spacing: .06em; color: var(--navy);
     border-bottom: 2px solid var(--navy); padding-bottom: 4px; margin: 28px 0 12px; }
table { border-collapse: collapse; width: 100%; }
.meta th, .facts > tbody > tr > th { text-align: left; vertical-align: top; color: var(--muted); font-weight: 600;
     width: 190px; padding: 5px 12px 5px 0; }
.meta td, .facts > tbody > tr > td { padding: 5px 0; vertical-align: top; }
.meta tr + tr th, .meta tr + tr td { border-top: 1px solid #eaecf0; }
.cards { display: flex; gap: 12px; margin: 8px 0 4px; }
.card { flex: 1; border: 1px solid var(--line); border-radius: 6px; padding: 10px 14px; background: var(--soft); }
.card .big { font-size: 24px; font-weight: 700; }
.card.allow .big { color: var(--allow); } .card.deny .big { color: var(--deny); }
.card .label { color: var(--muted); font-size: 11px; text-transform: uppercase; letter-spacing: .06em; }
.badge { display: inline-block; white-space: nowrap; font-size: 11px; font-weight: 700; letter-spacing: .05em; padding: 2px 8px;
         border-radius: 3px; vertical-align: 1px; }
.badge.allow, .badge.chain-intact { background: var(--allow-bg); color: var(--allow); border: 1px solid var(--allow); }
.badge.deny, .badge.chain-broken { background: var(--deny-bg); color: var(--deny); border: 1px solid var(--deny); }
.badge.chain-unchecked { background: var(--warn-bg); color: var(--warn); border: 1px solid var(--warn); }
.chip { display: inline-block; font-family: "DejaVu Sans Mono", "Liberation Mono", Menlo, monospace; font-size: 11.5px;
        background: #eef2f6; border: 1px solid var(--line); border-radius: 3px; padding: 0 5px; margin: 1px 0; }
code { font-family: "DejaVu Sans Mono", "Liberation Mono", Menlo, monospace; font-size: 11.5px; word-break: break-all; }
.muted { color: var(--muted); }
.summary td, .summary th { border-bottom: 1px solid #eaecf0; padding: 5px 8px; text-align: left; vertical-align: top; }
.summary th { background: var(--soft); font-size: 11px; text-transform: uppercase; letter-spacing: .04em;
              color: var(--muted); }
.summary td.n { color: var(--muted); width: 32px; }
.summary td.t { white-space: nowrap; }
.summary a { color: inherit; text-decoration: none; }
svg.timeline { width: 100%; height: auto; display: block; margin: 4px 0; }
svg .plot { fill: #fbfcfd; stroke: var(--line); }
svg .grid { stroke: #e4e7ec; }
svg .axis { stroke: #98a2b3; }
svg .lane-line { stroke: #eaecf0; stroke-dasharray: 3 3; }
svg .tick { font-size: 11px; fill: var(--muted); text-anchor: middle; }
svg .tz { font-size: 11px; fill: var(--muted); text-anchor: end; }
svg .lane { font-size: 12px; font-weight: 600; text-anchor: end; }
svg .lane.allow { fill: var(--allow); } svg .lane.deny { fill: var(--deny); }
svg .mark.allow { fill: var(--allow); stroke: var(--allow); } svg .mark.deny { fill: var(--deny); stroke: var(--deny); }
svg .mark { fill-opacity: .85; stroke-width: 2; }
svg .count { font-size: 11px; font-weight: 700; text-anchor: middle; stroke: none; }
section.decision { border: 1px solid var(--line); border-left: 5px solid var(--deny); border-radius: 4px;
                   margin: 0 0 16px; padding: 10px 14px 6px; }
section.decision h3 { break-after: avoid; page-break-after: avoid; }
.facts > tbody > tr, table.rules tr, .summary tr, .chain tr { break-inside: avoid; page-break-inside: avoid; }
section.decision.allow { border-left-color: var(--allow); }
section.decision h3 { font-size: 14px; margin: 0 0 8px; font-weight: 600; }
section.decision h3 .num { color: var(--muted); margin-right: 4px; }
section.decision h3 .reasons { margin-left: 6px; font-weight: 400; }
section.decision h3 .extra { margin-left: 8px; font-weight: 400; color: var(--muted); font-size: 12px; }
.facts > tbody > tr > th { width: 170px; }
.facts > tbody > tr + tr > th, .facts > tbody > tr + tr > td { border-top: 1px solid #f0f1f3; }
.facts ul { margin: 0; padding-left: 18px; }
.used { font-size: 11px; font-weight: 700; color: var(--allow); }
.call { display: flex; flex-wrap: wrap; gap: 2px 18px; }
.call i, .facts i { color: var(--muted); font-style: normal; margin-right: 3px; }
table.rules { font-size: 12px; }
table.rules th { text-align: left; color: var(--muted); font-weight: 600; font-size: 11px; padding: 2px 8px 2px 0;
                 border-bottom: 1px solid var(--line); }
table.rules td { padding: 2px 8px 2px 0; border-bottom: 1px solid #f2f4f7; vertical-align: top; }
table.rules tr.o-deny td:nth-child(2) { color: var(--deny); font-weight: 700; }
table.rules tr.o-allow_exception td:nth-child(2) { color: var(--allow); font-weight: 700; }
table.rules tr.o-skipped td { color: var(--muted); }
table.rules td.law { color: var(--muted); font-size: 11px; }
.chain td, .chain th { border-bottom: 1px solid #eaecf0; padding: 5px 8px; text-align: left; vertical-align: top; }
.chain th { background: var(--soft); font-size: 11px; text-transform: uppercase; color: var(--muted); }
.note { background: var(--soft); border-left: 3px solid var(--navy); padding: 8px 12px; color: #344054; }
.alert { background: var(--warn-bg); border-left: 3px solid var(--warn); padding: 8px 12px; margin: 8px 0; }
dl.reasons { display: grid; grid-template-columns: max-content 1fr; gap: 3px 14px; margin: 0; }
dl.reasons dd { margin: 0; }
footer { margin-top: 28px; padding: 12px 36px 0; border-top: 1px solid var(--line); color: var(--muted);
         font-size: 11px; }
@page { size: A4; margin: 14mm 12mm; }
@media print {
  body { background: #fff; font-size: 9pt; }
  .chip, code { font-size: 8pt; }
  table.rules { font-size: 8.5pt; }
  .facts > tbody > tr > th { width: 120px; }
  section.decision { padding: 6px 10px 4px; margin-bottom: 10px; }
  .summary td, .summary th, .chain td, .chain th { padding: 4px 5px; }
  main { margin: 0; max-width: none; box-shadow: none; padding: 0; }
  header.top { padding: 14px 18px; }
  .content, footer { padding-left: 0; padding-right: 0; }
  h2 { break-after: avoid; page-break-after: avoid; }
  .summary a { text-decoration: none; }
}
"""

#: The browser may fetch nothing: no script, no image, no font, no frame, no form target.
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'"


def render(
    callee: str,
    entries: Sequence[Entry],
    chain: Chain,
    generated_at: datetime,
    *,
    written: str | None = None,
    since: date | None = None,
    sources: Sources | None = None,
    version: str = "",
) -> str:
    """The whole report as one HTML document (a pure function of its arguments).

    ``entries`` are filtered by ``since`` (Italian days, :func:`in_period`)
    and shown oldest first; ``chain`` is the verdict of the records read back.
    """
    sources = sources or Sources("audit store")
    shown = select(entries, since)
    verdicts = [verdict(e, chain) for e in shown]
    allowed = sum(1 for e in shown if e.record.get("decision") == "allow")
    denied = len(shown) - allowed
    states = Counter(v.state for v in verdicts)
    if not shown:
        chain_state = "unchecked"
        chain_line = "no records to check"
    elif states["broken"]:
        chain_state, chain_line = "broken", f"{states['broken']} of {len(shown)} record(s) shown fail the check"
    elif states["unchecked"]:
        chain_state, chain_line = "unchecked", f"{states['unchecked']} of {len(shown)} record(s) shown not checked"
    else:
        chain_state, chain_line = "intact", f"the chain holds for all {len(shown)} record(s) shown"

    period = f"decisions from {since.isoformat()} (Italian day) on" if since else "every decision held"
    first_last = ""
    if shown:
        first_last = f"{esc(shown[0].when)} &rarr; {esc(shown[-1].when)}"
    policies = Counter(str((e.record.get("versions") or {}).get("policy", "-")) for e in shown)
    clients = Counter(str((e.record.get("intent") or {}).get("client_id", "-")) for e in shown)
    meta = [
        (
            "Number (E.164)",
            f"<b>{esc(callee)}</b>"
            + (f" <span class='muted'>(entered as {esc(written)})</span>" if written and written != callee else ""),
        ),
        ("Period", esc(period)),
        ("Decisions shown", f"{len(shown)}" + (f": {first_last}" if first_last else "")),
        ("On behalf of", ", ".join(f"{esc(c)} ({n})" for c, n in sorted(clients.items())) or "-"),
        ("Policy versions", ", ".join(f"{_code(p)} ({n})" for p, n in sorted(policies.items())) or "-"),
        ("Read from", esc(sources.description)),
        ("Generated", f"{esc(rome(generated_at))} by callguard {esc(version)}".rstrip()),
    ]
    alerts = []
    if sources.topic_error is not None:
        alerts.append(
            "callguard.audit could not be read, so decisions the audit store does not hold yet may be missing "
            f"({esc(sources.topic_error)})."
        )
    elif sources.store_behind:
        alerts.append(
            f"The audit store was {sources.store_behind:,} record(s) behind callguard.audit: those records were "
            "read from the topic itself and are marked as such."
            + ("" if sources.scan_complete else " They were too many to read them all: some may be missing.")
        )
    if chain.note:
        alerts.append(f"Hash chain: {esc(chain.note)}")
    reasons_seen = sorted({str(r) for e in shown for r in e.record.get("reasons") or ()})

    summary_rows = "".join(
        f'<tr><td class="n"><a href="#d{n}">#{n}</a></td><td class="t">{esc(e.short_when)}</td>'
        f"<td>{_badge(e.record.get('decision'))}</td><td>{_reason_chips(e.record.get('reasons') or ())}</td>"
        f"<td>{esc((e.record.get('intent') or {}).get('client_id'))}</td>"
        f"<td>{esc((e.record.get('intent') or {}).get('operator_id'))}</td>"
        f"<td>{esc((e.record.get('intent') or {}).get('purpose'))}</td>"
        f"<td>{_chain_badge(v.state, short=True)}</td></tr>"
        for n, (e, v) in enumerate(zip(shown, verdicts, strict=True), 1)
    )
    partitions = partition_verdicts(shown, chain)
    chain_rows = "".join(
        f"<tr><td>{p.partition}</td><td>{p.shown}</td><td>{p.records:,}</td>"
        f"<td>{'-' if p.first is None else f'{p.first} to {p.last}'}</td>"
        f"<td>{_chain_badge('intact' if p.ok else 'broken' if p.problems else 'unchecked')}"
        f"{'<br>' + '<br>'.join(esc(x) for x in p.problems) if p.problems else ''}"
        f"{'<br>records past the audit store not read' if p.unread_tail else ''}</td></tr>"
        for p in partitions
    )

    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>callguard report: decisions about {esc(callee)}</title>",
        f"<style>{STYLE}</style></head><body><main>",
        '<header class="top"><div class="kicker">callguard &middot; telemarketing call guard &middot; '
        "report for a data subject</div>",
        "<h1>Every call decision about a telephone number</h1>",
        f'<div class="number">{esc(callee)}</div></header>',
        '<div class="content">',
        "<h2>Summary</h2>",
        '<div class="cards">',
        f'<div class="card"><div class="label">decisions</div><div class="big">{len(shown)}</div></div>',
        f'<div class="card allow"><div class="label">calls allowed</div><div class="big">{allowed}</div></div>',
        f'<div class="card deny"><div class="label">calls denied</div><div class="big">{denied}</div></div>',
        f'<div class="card"><div class="label">hash chain</div><div>{_chain_badge(chain_state)}</div>'
        f'<div class="muted">{esc(chain_line)}</div></div>',
        "</div>",
        *(f'<div class="alert">{a}</div>' for a in alerts),
        '<table class="meta">',
        *(f"<tr><th>{esc(k)}</th><td>{v}</td></tr>" for k, v in meta),
        "</table>",
    ]
    if not shown:
        parts.append(
            '<p class="note">No decision about this number was found'
            + (f" from {esc(since.isoformat())} on" if since else "")
            + ": callguard was never asked to allow a call to it in the records read.</p>"
        )
    else:
        parts += [
            "<h2>Timeline of the calls allowed and denied</h2>",
            timeline(shown),
            "<h2>Decisions</h2>",
            '<table class="summary"><thead><tr><th>#</th><th>time (Europe/Rome)</th><th>decision</th>'
            "<th>reasons</th><th>client</th><th>call centre</th><th>purpose</th><th>chain</th></tr></thead>",
            f"<tbody>{summary_rows}</tbody></table>",
            "<h2>Hash-chain verification</h2>",
            f'<p class="note">{esc(CHAIN_MEANING)}</p>',
            '<table class="chain"><thead><tr><th>partition</th><th>records shown</th><th>records checked</th>'
            "<th>offsets</th><th>verdict</th></tr></thead>",
            f"<tbody>{chain_rows}</tbody></table>",
            "<h2>Each decision and the data it relied on</h2>",
            *(decision_section(n, e, v) for n, (e, v) in enumerate(zip(shown, verdicts, strict=True), 1)),
        ]
    if reasons_seen:
        parts += [
            "<h2>Reason codes</h2>",
            '<dl class="reasons">',
            *(
                f"<dt>{_reason_chips([r])}</dt><dd>{esc(REASON_TEXT.get(r, 'see the README'))}</dd>"
                for r in reasons_seen
            ),
            "</dl>",
        ]
    if shown:
        parts += [
            "<h2>Legal sources cited</h2>",
            '<dl class="reasons">',
            *(
                f"<dt>{esc(SOURCES[k].short)}</dt><dd>{esc(SOURCES[k].citation())}"
                f"{'' if SOURCES[k].verified else ' <span class=muted>(the primary text was not read: quoted from a reproduction, see callguard policy sources)</span>'}</dd>"
                for k in cited(shown)
            ),
            "</dl>",
        ]
    parts += [
        "</div>",
        "<footer>Each decision is shown as its audit record holds it: the facts were read at the time of the "
        "decision, not today. Times are Europe/Rome; days (register consultations, validity periods) are Italian "
        "days. This file is self-contained and loads nothing from the network. It holds personal data (the "
        f"number and the decisions about it): keep it as such. Generated {esc(rome(generated_at))}.</footer>",
        "</main></body></html>",
    ]
    return "\n".join(parts) + "\n"


@dataclass
class Totals:
    """The counts the command prints after writing the file."""

    decisions: int = 0
    allowed: int = 0
    chain: dict[str, int] = field(default_factory=dict)


def totals(entries: Sequence[Entry], chain: Chain, since: date | None) -> Totals:
    shown = select(entries, since)
    states = Counter(verdict(e, chain).state for e in shown)
    return Totals(len(shown), sum(1 for e in shown if e.record.get("decision") == "allow"), dict(states))
