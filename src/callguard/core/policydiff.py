"""``callguard policy diff OLD NEW``: what changes between two policies, in words.

Rule by rule: rules switched on or off, purposes a rule now covers or no longer
covers, parameters changed (with what they mean), local holidays added or
removed. Compares the policies the files amount to (a file's ``base`` merged
in), so two files written differently but meaning the same differ in nothing.
"""

from __future__ import annotations

from typing import Any

from callguard.core.policy import PolicySettings
from callguard.core.policyfile import describe

#: What each parameter means, for the sentence that reports its change.
PARAMETERS: dict[tuple[str, str], str] = {
    ("opposition_register", "max_age_days"): "days a register result stays valid",
    ("opposition_register", "contract_grace_days"): "days a contract still allows calls after it ended",
    ("opposition_register", "request_validity_days"): "days a call request without an end counts",
    ("directory", "max_age_days"): "days a public-directory extract stays valid",
    ("campaign_silent_rate", "window_days"): "days over which a campaign's silent-call rate is counted",
    ("caller_id", "require_prefix"): "the 0844/0843 prefix (or a geographic or mobile number) is required",
    ("calling_hours", "weekday"): "calling window Monday to Friday",
    ("calling_hours", "saturday"): "calling window on Saturdays",
    ("calling_hours", "pre_holiday"): "calling window on the day before a public holiday",
    ("calling_hours", "sunday"): "calling window on Sundays",
    ("calling_hours", "holiday"): "calling window on public holidays",
    ("silent_calls", "block_days"): "days a callee is blocked after a silent call",
    ("silent_calls", "abandoned_rate_limit"): "silent calls allowed per answered call",
    ("campaign_silent_rate", "abandoned_rate_limit"): "abandoned calls allowed per answered call",
    ("do_not_call_registers", "registers"): "do-not-call registers checked",
    ("do_not_call_registers", "ebr_transaction_months"): "months a purchase or transaction lifts the registers",
    ("do_not_call_registers", "ebr_inquiry_months"): "months an inquiry lifts the registers",
    ("calling_hours", "window"): "calling window",
    ("calling_hours", "state_windows"): "state calling windows",
    ("calling_hours", "zones"): "time zones added to area codes",
    ("frequency_cap", "state_limits"): "state call limits",
}

_PURPOSE_ORDER = ("marketing", "survey", "statistical", "service")


def _purposes(names: list[str] | set[str]) -> str:
    ordered = [p for p in _PURPOSE_ORDER if p in names]
    return ", ".join(ordered) if ordered else "no purpose"


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float) and value.is_integer():
        return f"{value:g}"
    return str(value)


def _limits(limits: list[dict[str, Any]]) -> str:
    if not limits:
        return "no limit"
    parts = []
    for limit in limits:
        hours = limit["window_hours"]
        span = f"{hours / 24:g} days" if hours >= 48 and hours % 24 == 0 else f"{hours:g} hours"
        parts.append(f"{limit['max']} per {span}")
    return ", ".join(parts)


def _holiday(h: dict[str, Any]) -> str:
    return f"{h['name']} on {h['date']} for numbers starting {h['prefix']}"


def diff_policies(old: PolicySettings, new: PolicySettings) -> list[str]:
    """The differences, one sentence each (empty when the policies decide alike).
    Policy sets are compared country by country (:func:`diff_sets`)."""
    if old.jurisdictions is not None or new.jurisdictions is not None:
        return diff_sets(old, new)
    a, b = describe(old), describe(new)
    out: list[str] = []
    catalogue_a, catalogue_b = a.get("jurisdiction", "it"), b.get("jurisdiction", "it")
    if catalogue_a != catalogue_b:
        out.append(f"jurisdiction: the {catalogue_a} rules become the {catalogue_b} rules")
        return out
    if a["timezone"] != b["timezone"]:
        out.append(f"day boundaries: days of {a['timezone']} become days of {b['timezone']}")
    for name in a["rules"]:
        before, after = a["rules"][name], b["rules"][name]
        if before["enabled"] != after["enabled"]:
            if after["enabled"]:
                out.append(f"{name}: switched on (for {_purposes(after['purposes'])} calls)")
            else:
                out.append(f"{name}: switched off (it applied to {_purposes(before['purposes'])} calls)")
        elif after["enabled"]:
            added = set(after["purposes"]) - set(before["purposes"])
            removed = set(before["purposes"]) - set(after["purposes"])
            if added:
                out.append(f"{name}: now also applies to {_purposes(added)} calls")
            if removed:
                out.append(f"{name}: no longer applies to {_purposes(removed)} calls")
        out += _parameter_changes(name, before, after)
    return out


def _packs(settings: PolicySettings) -> tuple[dict[str, PolicySettings], PolicySettings]:
    """A policy's pack per country and the pack of the other countries (a pack alone: every country's)."""
    sets = settings.jurisdictions
    if sets is None:
        return {}, settings
    return dict(sets.packs), sets.other


def diff_sets(old: PolicySettings, new: PolicySettings) -> list[str]:
    """Two policies of which one at least is a set: which countries' callees
    change pack, what the other countries get, and each country's pack's changes."""
    old_packs, old_other = _packs(old)
    new_packs, new_other = _packs(new)
    out: list[str] = []
    old_deny = set() if old.jurisdictions is None else {p.value for p in old.jurisdictions.deny_purposes}
    new_deny = set() if new.jurisdictions is None else {p.value for p in new.jurisdictions.deny_purposes}
    if old_deny != new_deny:
        out.append(
            f"other countries: no_policy_for_country for {_purposes(old_deny)} calls -> for {_purposes(new_deny)} calls"
        )
    groups: dict[tuple[int, int], list[str]] = {}
    pairs: dict[tuple[int, int], tuple[PolicySettings, PolicySettings]] = {}
    for region in sorted(old_packs.keys() | new_packs.keys()):
        before = old_packs.get(region, old_other)
        after = new_packs.get(region, new_other)
        if region not in old_packs:
            out.append(f"{region}: now decided by pack {after.version} (was: the other countries' rules)")
        elif region not in new_packs:
            out.append(f"{region}: no pack of its own any more (was {before.version})")
        key = (id(before), id(after))
        groups.setdefault(key, []).append(f"{region} callees")
        pairs[key] = (before, after)
    key = (id(old_other), id(new_other))
    groups.setdefault(key, []).append("other countries")
    pairs[key] = (old_other, new_other)
    # countries that had and have the same packs change alike: said once for all of them
    for key, names in groups.items():
        before, after = pairs[key]
        out += [f"{', '.join(names)}: {line}" for line in diff_policies(before, after)]
    return out


def _parameter_changes(name: str, before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for key in before:
        if key in ("enabled", "purposes", "sources") or before[key] == after.get(key):
            continue
        old, new = before[key], after[key]
        if key == "limits":
            out.append(f"{name}: call limits change from {_limits(old)} to {_limits(new)}")
        elif key == "local_holidays":
            was = {(h["prefix"], h["date"]): h for h in old}
            now = {(h["prefix"], h["date"]): h for h in new}
            for k in sorted(now.keys() - was.keys()):
                out.append(f"{name}: local holiday added: {_holiday(now[k])}")
            for k in sorted(was.keys() - now.keys()):
                out.append(f"{name}: local holiday removed: {_holiday(was[k])}")
            for k in sorted(was.keys() & now.keys()):
                if was[k]["name"] != now[k]["name"]:
                    out.append(f"{name}: local holiday renamed: {was[k]['name']} -> {now[k]['name']}")
        elif key == "prefixes":
            for purpose in _PURPOSE_ORDER:
                if old.get(purpose) != new.get(purpose):
                    out.append(
                        f"{name}: caller-ID prefix for {purpose} calls changes from "
                        f"{old.get(purpose) or 'none'} to {new.get(purpose) or 'none'}"
                    )
        else:
            meaning = PARAMETERS.get((name, key), key)
            out.append(f"{name}: {meaning}: {_value(old)} -> {_value(new)}")
    return out
