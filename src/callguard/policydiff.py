"""``callguard policy diff OLD NEW``: what changes between two policies, in words.

Rule by rule: rules switched on or off, purposes a rule now covers or no longer
covers, parameters changed (with what they mean), local holidays added or
removed. Compares the policies the files amount to (a file's ``base`` merged
in), so two files written differently but meaning the same differ in nothing.
"""

from __future__ import annotations

from typing import Any

from callguard.policy import RULES, PolicySettings
from callguard.policyfile import describe

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
    """The differences, one sentence each (empty when the policies decide alike)."""
    a, b = describe(old), describe(new)
    out: list[str] = []
    if a["timezone"] != b["timezone"]:
        out.append(f"day boundaries: Italian days of {a['timezone']} become days of {b['timezone']}")
    for name in RULES:
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


def _parameter_changes(name: str, before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for key in before:
        if key in ("enabled", "purposes") or before[key] == after[key]:
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
