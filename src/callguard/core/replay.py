"""Replay: decide recorded intents again, with the facts their audit records hold.

The policy is a pure function of (intent, facts, clock), and every audit
record carries all three: the normalised intent, every fact the decision
used (``facts``) and the decision time (``decided_at``, to the millisecond,
as the guard decided). :func:`inputs_from_audit` rebuilds them;
:func:`redecide` runs :func:`callguard.core.policy.decide` on them under any
policy; :class:`Replay` adds up what changed over a stream of records.

A record that lacks something a decision needs (records written before the
audit trail carried every fact, say) raises :class:`NotReplayable` with the
reason: a replay never guesses a fact. So does a policy that would need
facts the guard did not read when it decided: past calls further back than
it looked, calls of purposes it did not count, campaign outcomes it did not
look up or counted over other days.

Each record is decided again on its own, with the facts as they were: a call
that a stricter policy would have denied still counts among the past calls of
later records (a what-if shows the first effects of a change, not the history
it would have made).

Pure: no I/O, no clock. The command (``callguard replay``) reads the records.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from functools import lru_cache
from typing import Any

import orjson

from callguard.core.facts import (
    BASES,
    Consent,
    Facts,
    Mandate,
    NamedResult,
    Operator,
    OptOut,
    PastCall,
    RegisterResult,
    When,
)
from callguard.core.numbers import mask
from callguard.core.policy import Decision, PolicySettings, decide, malformed
from callguard.core.policy import lookback as policy_lookback
from callguard.core.schema import Intent, Purpose, rfc3339

#: What a replay compares: the decision, its reasons, not_before and requires_operator.
Verdict = tuple[bool, tuple[str, ...], str | None, bool]

OLDER = "recorded before audit records carried every fact"


class NotReplayable(ValueError):
    """A record that cannot be decided again without guessing; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"not replayable: {reason}")
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Inputs:
    """What :func:`callguard.core.policy.decide` was given for one recorded decision.

    ``intent`` is ``None`` for an intent that broke the contract (then
    ``malformed_error`` says how); ``facts`` is ``None`` when the stores did
    not answer (``lookup_unavailable``).
    """

    intent_id: str
    intent: Intent | None
    callee: str | None
    facts: Facts | None
    caller: str | None
    decided_at: datetime
    malformed_error: str | None = None


@lru_cache(maxsize=65_536)
def _parse_day(text: str) -> date:
    return date.fromisoformat(text)


@lru_cache(maxsize=65_536)
def _parse_instant(text: str) -> datetime | None:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return None if moment.tzinfo is None else moment.astimezone(UTC)


def _when(text: Any, name: str) -> When:
    if not isinstance(text, str):
        raise NotReplayable(f"{name} is not a day or a time")
    try:
        if len(text) == 10:
            return _parse_day(text)
        return _instant(text, name)
    except ValueError:
        raise NotReplayable(f"{name} is not a day or a time") from None


def _instant(text: Any, name: str) -> datetime:
    if not isinstance(text, str):
        raise NotReplayable(f"{name} is not a time")
    try:
        moment = _parse_instant(text)
    except ValueError:
        raise NotReplayable(f"{name} is not a time") from None
    if moment is None:
        raise NotReplayable(f"{name} has no UTC offset")
    return moment


def _day(text: Any, name: str) -> date:
    if not isinstance(text, str):
        raise NotReplayable(f"{name} is not a day")
    try:
        return _parse_day(text)
    except ValueError:
        raise NotReplayable(f"{name} is not a day") from None


def _need(obj: dict[str, Any], key: str, where: str) -> Any:
    if key not in obj:
        raise NotReplayable(f"{where}.{key} missing ({OLDER})")
    return obj[key]


def _list(obj: dict[str, Any], key: str, where: str) -> list[dict[str, Any]]:
    value = _need(obj, key, where)
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise NotReplayable(f"{where}.{key} is not a list of objects")
    return value


def intent_from_audit(record: dict[str, Any]) -> tuple[Intent, str | None]:
    """The intent and its normalised callee, as the guard decided them."""
    raw = record.get("intent")
    if not isinstance(raw, dict):
        raise NotReplayable("no intent in the record")
    try:
        purpose = Purpose(raw["purpose"])
        automated = _need(raw, "automated", "intent")
        if not isinstance(automated, bool):
            raise NotReplayable("intent.automated is not true or false")
        requested = raw.get("requested_at")
        callee = raw.get("callee")
        intent = Intent(
            intent_id=str(record["intent_id"]),
            callee=str(callee if callee is not None else raw.get("callee_input") or ""),
            operator_id=str(raw["operator_id"]),
            client_id=str(raw["client_id"]),
            purpose=purpose,
            caller_id=raw.get("caller_id"),
            campaign_id=raw.get("campaign_id"),
            requested_at=None if requested is None else _instant(requested, "intent.requested_at"),
            automated=automated,
            script_id=raw.get("script_id"),
            list_source=raw.get("list_source"),
        )
    except (KeyError, ValueError, TypeError) as exc:
        if isinstance(exc, NotReplayable):
            raise
        raise NotReplayable(f"intent unreadable ({type(exc).__name__}: {exc})") from None
    return intent, callee if isinstance(callee, str) else None


def _operator(raw: Any) -> Operator | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise NotReplayable("facts.operator is not an object")
    caller_ids = _need(raw, "caller_ids", "facts.operator")
    status = raw.get("status")
    if status not in ("active", "suspended", "revoked"):
        raise NotReplayable("facts.operator.status unreadable")
    return Operator(
        operator_id=str(raw.get("operator_id")),
        status=status,
        valid_from=_day(raw.get("valid_from"), "facts.operator.valid_from"),
        valid_until=_day(raw.get("valid_until"), "facts.operator.valid_until"),
        caller_ids=tuple(str(c) for c in caller_ids),
        country=str(_need(raw, "country", "facts.operator")),
    )


def facts_from_audit(record: dict[str, Any]) -> Facts | None:
    """The facts the decision used, ``None`` when the stores did not answer."""
    raw = record.get("facts")
    if not raw and any(isinstance(r, dict) and r.get("rule") == "lookup" for r in record.get("rules") or ()):
        return None
    if not raw and _no_policy(record):
        return None  # the callee's country had no pack: nothing was looked up for it
    if not isinstance(raw, dict):
        raise NotReplayable("no facts in the record")
    versions = record.get("versions")
    versions = (
        {
            k: v
            for k, v in versions.items()
            if k not in ("policy", "register", "directory", "policy_set") and not k.startswith("register:")
        }
        if isinstance(versions, dict)
        else {}
    )
    operator = _operator(_need(raw, "operator", "facts"))
    mandates = tuple(
        Mandate(
            str(m.get("client_id")),
            str(m.get("operator_id")),
            _day(m.get("valid_from"), "facts.mandates.valid_from"),
            _day(m.get("valid_until"), "facts.mandates.valid_until"),
        )
        for m in _list(raw, "mandates", "facts")
    )
    if record.get("callee") is None:
        return Facts(operator=operator, versions=versions, mandates=mandates)
    consents = _consents(raw)
    optouts = tuple(
        OptOut(str(o.get("client_id")), _when(o.get("at"), "facts.optouts.at")) for o in _list(raw, "optouts", "facts")
    )
    calls = tuple(
        PastCall(_instant(c.get("at"), "facts.calls.at"), str(c.get("ref"))) for c in _list(raw, "calls", "facts")
    )
    outcomes = _need(raw, "campaign_outcomes", "facts")
    if outcomes is not None and not (isinstance(outcomes, dict) and all(isinstance(v, int) for v in outcomes.values())):
        raise NotReplayable("facts.campaign_outcomes is not a table of counts")
    if "registers" in raw:  # decided by the United States pack
        registers = {}
        for r in _list(raw, "registers", "facts"):
            as_of = r.get("as_of")
            name = str(r.get("register"))
            registers[name] = NamedResult(
                name, bool(r.get("listed")), None if as_of is None else _day(as_of, "facts.registers.as_of")
            )
        cut = _need(raw, "disconnected_at", "facts")
        return Facts(
            operator=operator,
            consents=consents,
            optouts=optouts,
            versions=versions,
            calls=calls,
            campaign_outcomes=outcomes,
            mandates=mandates,
            registers=registers,
            disconnected_at=None if cut is None else _day(cut, "facts.disconnected_at"),
        )
    register = []
    for r in _list(raw, "register", "facts"):
        registered = r.get("registered_at")
        register.append(
            RegisterResult(
                opposed=r.get("status") == "opposed",
                as_of=_day(r.get("as_of"), "facts.register.as_of"),
                registered_at=None if registered is None else _day(registered, "facts.register.registered_at"),
                client_id=str(r.get("client_id")),
            )
        )
    silent = _need(raw, "silent_at", "facts")
    directory = _need(raw, "directory", "facts")
    if not isinstance(directory, dict):
        raise NotReplayable("facts.directory is not an object")
    extract = directory.get("extract")
    return Facts(
        operator=operator,
        register=tuple(register),
        consents=tuple(consents),
        optouts=optouts,
        versions=versions,
        calls=calls,
        silent_at=None if silent is None else _instant(silent, "facts.silent_at"),
        listed=bool(directory.get("listed")),
        directory_as_of=None if extract is None else _day(extract, "facts.directory.extract"),
        campaign_outcomes=outcomes,
        mandates=mandates,
    )


def _consents(raw: dict[str, Any]) -> tuple[Consent, ...]:
    consents = []
    for c in _list(raw, "consents", "facts"):
        basis = c.get("basis")
        if basis not in BASES:
            raise NotReplayable("facts.consents.basis unreadable")
        ends = c.get("ends_at")
        consents.append(
            Consent(
                str(c.get("client_id")),
                basis,
                _when(c.get("granted_at"), "facts.consents.granted_at"),
                None if ends is None else _when(ends, "facts.consents.ends_at"),
            )
        )
    return tuple(consents)


def _no_policy(record: dict[str, Any]) -> bool:
    """Whether the record is a deny because the callee's country had no pack."""
    return any(
        isinstance(r, dict) and r.get("rule") == "jurisdiction" and r.get("outcome") == "deny"
        for r in record.get("rules") or ()
    )


def inputs_from_audit(record: dict[str, Any]) -> Inputs:
    """Everything :func:`callguard.core.policy.decide` was given, from one audit record."""
    intent_id = record.get("intent_id")
    if not isinstance(intent_id, str) or record.get("decision") not in ("allow", "deny"):
        raise NotReplayable("not an audit record of a decision")
    decided_at = _instant(record.get("decided_at"), "decided_at")
    rules = record.get("rules") or ()
    if record.get("intent") is None:
        first = rules[0] if rules and isinstance(rules[0], dict) else {}
        if first.get("rule") != "well_formed":
            raise NotReplayable("no intent in the record")
        error = str((first.get("detail") or {}).get("error", ""))
        return Inputs(intent_id, None, None, None, None, decided_at, malformed_error=error)
    intent, callee = intent_from_audit(record)
    facts = facts_from_audit(record)
    caller: str | None = None
    if facts is not None:
        raw = record["facts"]
        caller = _need(raw, "caller", "facts")
        if caller is not None and not isinstance(caller, str):
            raise NotReplayable("facts.caller is not a number")
    return Inputs(intent_id, intent, callee, facts, caller, decided_at)


def check_policy(inputs: Inputs, record: dict[str, Any], settings: PolicySettings) -> None:
    """Raise :class:`NotReplayable` when ``settings`` would need facts the
    guard did not read when it decided this record."""
    intent = inputs.intent
    if intent is not None and inputs.facts is None and _no_policy(record):
        if settings.pack_for(inputs.callee, intent.purpose) is not None:
            raise NotReplayable("nothing was looked up when decided (the callee's country had no policy pack)")
        return
    if intent is None or inputs.facts is None or inputs.callee is None:
        return
    pack = settings.pack_for(inputs.callee, intent.purpose)
    if pack is None:
        return  # denied no_policy_for_country whatever the facts
    settings = pack
    lookback = _need(record["facts"], "lookback", "facts")
    if not isinstance(lookback, dict):
        raise NotReplayable("facts.lookback is not an object")
    needed = policy_lookback(settings)
    if lookback == needed:
        return  # the stores were read as this policy reads them
    purpose = intent.purpose
    if settings.applies("frequency_cap", purpose):
        hours = needed["calls_hours"]
        kept = lookback.get("calls_hours")
        if not isinstance(kept, int | float) or hours > kept:
            raise NotReplayable(f"past calls were read over {kept} h, the policy counts them over {hours:g} h")
        counted = lookback.get("calls_purposes")
        if counted != needed["calls_purposes"]:
            missing = [p for p in needed["calls_purposes"] if p not in (counted or ())]
            if missing:
                raise NotReplayable(f"calls of purpose {', '.join(missing)} were not counted when decided")
    if settings.applies("campaign_silent_rate", purpose):
        days = lookback.get("outcome_days")
        if days is None:
            raise NotReplayable("campaign outcomes were not looked up when decided (campaign_silent_rate was off)")
        if days != settings.silent_rate_window_days:
            raise NotReplayable(
                f"campaign outcomes were counted over {days} days, the policy counts {settings.silent_rate_window_days}"
            )


def redecide(record: dict[str, Any], settings: PolicySettings) -> Decision:
    """Decide a recorded intent again under ``settings``, at its recorded time."""
    inputs = inputs_from_audit(record)
    if inputs.intent is None:
        return malformed(inputs.intent_id, inputs.malformed_error or "", inputs.decided_at, settings)
    check_policy(inputs, record, settings)
    return decide(inputs.intent, inputs.callee, inputs.facts, inputs.decided_at, settings, inputs.caller)


def recorded_verdict(record: dict[str, Any]) -> Verdict:
    return (
        record.get("decision") == "allow",
        tuple(str(r) for r in record.get("reasons") or ()),
        record.get("not_before"),
        bool(record.get("requires_operator", False)),
    )


def verdict(decision: Decision) -> Verdict:
    return (
        decision.allow,
        tuple(str(r) for r in decision.reasons),
        None if decision.not_before is None else rfc3339(decision.not_before),
        decision.requires_operator,
    )


def change_kind(before: Verdict, after: Verdict) -> str | None:
    """``allow->deny``, ``deny->allow``, ``other`` (same verdict, other reasons,
    not_before or requires_operator), or ``None`` when nothing changed."""
    if before == after:
        return None
    if before[0] != after[0]:
        return "allow->deny" if before[0] else "deny->allow"
    return "other"


def _verdict_json(v: Verdict) -> dict[str, Any]:
    out: dict[str, Any] = {"decision": "allow" if v[0] else "deny", "reasons": list(v[1])}
    if v[2] is not None:
        out["not_before"] = v[2]
    if v[3]:
        out["requires_operator"] = True
    return out


KINDS = ("allow->deny", "deny->allow", "other")


@dataclass
class Replay:
    """Adds up a replay, one record at a time (nothing but the counts and a
    few examples is kept: a replay of millions of records runs in constant memory)."""

    settings: PolicySettings
    examples_per_kind: int = 3
    records: int = 0
    replayed: int = 0
    allow: int = 0
    deny: int = 0
    changes: Counter[str] = field(default_factory=Counter)
    #: per kind: the reasons that now deny (allow->deny, other) or no longer deny (deny->allow)
    by_reason: dict[str, Counter[str]] = field(default_factory=lambda: {k: Counter() for k in KINDS})
    by_client: dict[str, Counter[str]] = field(default_factory=lambda: {k: Counter() for k in KINDS})
    by_campaign: dict[str, Counter[str]] = field(default_factory=lambda: {k: Counter() for k in KINDS})
    examples: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: {k: [] for k in KINDS})
    not_replayable: Counter[str] = field(default_factory=Counter)
    #: the policy versions the records were decided under
    recorded_policies: Counter[str] = field(default_factory=Counter)
    first: str | None = None
    last: str | None = None

    def add_bytes(self, value: bytes) -> str | None:
        try:
            record = orjson.loads(value)
        except orjson.JSONDecodeError:
            self.records += 1
            self.not_replayable["not JSON"] += 1
            return None
        if not isinstance(record, dict):
            self.records += 1
            self.not_replayable["not a JSON object"] += 1
            return None
        return self.add(record)

    def add(self, record: dict[str, Any]) -> str | None:
        """Replay one record; returns its change kind (``None``: unchanged or not replayable)."""
        self.records += 1
        try:
            decision = redecide(record, self.settings)
        except NotReplayable as exc:
            self.not_replayable[exc.reason] += 1
            return None
        self.replayed += 1
        stamp = record["decided_at"]
        if self.first is None or stamp < self.first:
            self.first = stamp
        if self.last is None or stamp > self.last:
            self.last = stamp
        versions = record.get("versions")
        self.recorded_policies[str(versions.get("policy") if isinstance(versions, dict) else None)] += 1
        before, after = recorded_verdict(record), verdict(decision)
        if after[0]:
            self.allow += 1
        else:
            self.deny += 1
        kind = change_kind(before, after)
        if kind is None:
            return None
        self.changes[kind] += 1
        moved = set(before[1]) - set(after[1]) if kind == "deny->allow" else set(after[1]) - set(before[1])
        for reason in sorted(moved) or ["(same reasons)"]:
            self.by_reason[kind][reason] += 1
        intent = record.get("intent") or {}
        self.by_client[kind][str(intent.get("client_id") or "-")] += 1
        self.by_campaign[kind][str(intent.get("campaign_id") or "-")] += 1
        if len(self.examples[kind]) < self.examples_per_kind:
            self.examples[kind].append(
                {
                    "intent_id": record["intent_id"],
                    "callee": mask(record.get("callee") or intent.get("callee_input")),
                    "client_id": intent.get("client_id"),
                    "campaign_id": intent.get("campaign_id"),
                    "decided_at": stamp,
                    "recorded": _verdict_json(before),
                    "replayed": _verdict_json(after),
                }
            )
        return kind

    @property
    def changed(self) -> int:
        return sum(self.changes.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "policy": self.settings.version,
            **({"policy_set": self.settings.label()} if self.settings.jurisdictions is not None else {}),
            "records": self.records,
            "replayed": self.replayed,
            "unchanged": self.replayed - self.changed,
            "changed": self.changed,
            "allow_to_deny": self.changes["allow->deny"],
            "deny_to_allow": self.changes["deny->allow"],
            "other_changes": self.changes["other"],
            "replayed_allow": self.allow,
            "replayed_deny": self.deny,
            "by_reason": {k: dict(self.by_reason[k].most_common()) for k in KINDS},
            "by_client": {k: dict(self.by_client[k].most_common()) for k in KINDS},
            "by_campaign": {k: dict(self.by_campaign[k].most_common()) for k in KINDS},
            "examples": self.examples,
            "not_replayable": self.not_replayable_count,
            "not_replayable_reasons": dict(self.not_replayable.most_common()),
            "recorded_policies": dict(self.recorded_policies.most_common()),
            "first_decided_at": self.first,
            "last_decided_at": self.last,
        }

    @property
    def not_replayable_count(self) -> int:
        return sum(self.not_replayable.values())

    def summary(self) -> str:
        return (
            f"replayed {self.replayed:,} of {self.records:,} records under policy {self._name()}: "
            f"{self.changes['allow->deny']:,} allow->deny, {self.changes['deny->allow']:,} deny->allow, "
            f"{self.changes['other']:,} other changes, {self.replayed - self.changed:,} unchanged; "
            f"{self.not_replayable_count:,} not replayable"
        )

    def _name(self) -> str:
        sets = self.settings.jurisdictions
        return self.settings.version if sets is None else f"set {sets.version}"

    def lines(self) -> list[str]:
        """The report for people: what would change, by reason, client and campaign, with examples."""
        out = [f"Replay under policy {self.settings.label()}"]
        if self.first is not None:
            out.append(f"records decided from {self.first} to {self.last} (UTC)")
        if self.recorded_policies:
            shown = ", ".join(f"{v} ({n:,})" for v, n in self.recorded_policies.most_common())
            out.append(f"recorded under: {shown}")
        titles = {
            "allow->deny": "allow -> deny (would now be denied)",
            "deny->allow": "deny -> allow (would now be allowed)",
            "other": "same verdict, other reasons, not_before or requires_operator",
        }
        for kind in KINDS:
            count = self.changes[kind]
            out.append("")
            out.append(f"{titles[kind]}: {count:,}")
            if not count:
                continue
            word = "no longer denying" if kind == "deny->allow" else "newly denying"
            out.append(f"  by reason ({word}): " + _top(self.by_reason[kind]))
            out.append("  by client: " + _top(self.by_client[kind]))
            out.append("  by campaign: " + _top(self.by_campaign[kind]))
            for example in self.examples[kind]:
                before, after = example["recorded"], example["replayed"]
                out.append(
                    f"  e.g. {example['intent_id']} to {example['callee']} at {example['decided_at']} "
                    f"(client {example['client_id']}, campaign {example['campaign_id'] or '-'}): "
                    f"{_verdict_text(before)} -> {_verdict_text(after)}"
                )
        if self.not_replayable:
            out.append("")
            out.append(f"not replayable: {self.not_replayable_count:,}")
            for reason, count in self.not_replayable.most_common():
                out.append(f"  {count:,}: {reason}")
        out.append("")
        out.append(self.summary())
        return out


def _top(counter: Counter[str], n: int = 10) -> str:
    items = counter.most_common(n)
    rest = len(counter) - len(items)
    return ", ".join(f"{k} {v:,}" for k, v in items) + (f", and {rest} more" if rest > 0 else "")


def _verdict_text(v: dict[str, Any]) -> str:
    text = str(v["decision"]) + (f" ({', '.join(v['reasons'])})" if v["reasons"] else "")
    if "not_before" in v:
        text += f" not before {v['not_before']}"
    if v.get("requires_operator"):
        text += " requires_operator"
    return text
