"""Policy as data: read, validate and explain a policy file (TOML).

A compliance officer changes which rules run, for which purposes and with
which parameters without a code release: the worker reads the file named by
``CALLGUARD_POLICY`` (default: the Italian policy shipped in
``callguard/policies/it.toml``). A file may start from a shipped policy with
``base = "it"`` and change only what differs; it must then name its own
``version``, which every decision and audit record carries.

Errors name the key and what is wrong, all of them at once, so that
``callguard policy check FILE`` can be used as a pre-release gate.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import replace
from datetime import time, timedelta
from importlib import resources
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from callguard.config import Settings
from callguard.hours import CallingHours, LocalHoliday, Window
from callguard.policy import ALWAYS_ON, RULES, CapLimit, PolicySettings, RuleScope
from callguard.schema import Purpose

#: Policies shipped in the package, by the name ``base`` uses.
SHIPPED = {"it": "it.toml"}
DEFAULT_POLICY = "it"

_RULE_KEYS: dict[str, set[str]] = {
    "callee_number": set(),
    "operator_certified": set(),
    "operator_mandated": set(),
    "opposition_register": {"max_age_days", "contract_grace_days", "request_validity_days"},
    "directory": {"max_age_days"},
    "automated_calls": set(),
    "internal_dnc": set(),
    "caller_id": {"require_prefix", "prefixes"},
    "calling_hours": {"weekday", "saturday", "pre_holiday", "sunday", "holiday", "local_holidays"},
    "frequency_cap": {"limits"},
    "silent_calls": {"block_days", "abandoned_rate_limit"},
    "campaign_silent_rate": {"window_days"},
}
_DURATION = re.compile(r"^\s*(\d+)\s*([mhd])\s*$")
_UNITS = {"m": timedelta(minutes=1), "h": timedelta(hours=1), "d": timedelta(days=1)}
_WINDOW = re.compile(r"^\s*(\d{2}):(\d{2})\s*-\s*(\d{2}):(\d{2})\s*$")
_MONTH_DAY = re.compile(r"^(\d{2})-(\d{2})$")


class PolicyError(Exception):
    """A policy file that cannot be used; ``errors`` lists every problem found."""

    def __init__(self, source: str, errors: list[str]) -> None:
        super().__init__(f"{source}: " + "; ".join(errors))
        self.source = source
        self.errors = errors


def shipped_text(name: str = DEFAULT_POLICY) -> str:
    return resources.files("callguard").joinpath("policies", SHIPPED[name]).read_text(encoding="utf-8")


def load_policy(path: str | Path | None = None) -> PolicySettings:
    """The policy of the file at ``path`` (``None``: the shipped Italian policy)."""
    if path is None or str(path) == "":
        return parse_policy(shipped_text(), f"<shipped {DEFAULT_POLICY}>")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(str(path), [f"cannot read the file ({exc.strerror or exc})"]) from None
    return parse_policy(text, str(path))


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Tables merge key by key; any other value (arrays included) replaces."""
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def parse_policy(text: str, source: str = "<policy>") -> PolicySettings:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(source, [f"not valid TOML: {exc}"]) from None
    errors: list[str] = []
    base = data.pop("base", None)
    if base is not None:
        if base not in SHIPPED:
            raise PolicyError(source, [f"base: unknown policy {base!r} (shipped: {', '.join(SHIPPED)})"])
        if "version" not in data:
            errors.append("version: a policy that changes a base must name its own version")
        data = _merge(tomllib.loads(shipped_text(base)), data)
    settings = _build(data, errors)
    if errors:
        raise PolicyError(source, errors)
    return settings


def _build(data: dict[str, Any], errors: list[str]) -> PolicySettings:
    for key in sorted(set(data) - {"version", "timezone", "rules"}):
        errors.append(f"{key}: unknown key (known: version, timezone, rules, base)")
    version = data.get("version")
    if not isinstance(version, str) or not version.strip():
        errors.append("version: required, a non-empty string")
        version = "?"
    settings = PolicySettings(version=version)
    zone = data.get("timezone", "Europe/Rome")
    try:
        settings = replace(settings, timezone=ZoneInfo(zone))
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        errors.append(f"timezone: {zone!r} is not an IANA time zone")
    rules = data.get("rules", {})
    if not isinstance(rules, dict):
        errors.append("rules: expected tables [rules.NAME]")
        return settings
    scopes = dict(settings.scopes)
    for name in sorted(set(rules) - set(RULES)):
        errors.append(f"rules.{name}: unknown rule (known: {', '.join(RULES)})")
    for name in RULES:
        table = rules.get(name, {})
        where = f"rules.{name}"
        if not isinstance(table, dict):
            errors.append(f"{where}: expected a table")
            continue
        for key in sorted(set(table) - {"enabled", "purposes"} - _RULE_KEYS[name]):
            known = ", ".join(sorted({"enabled", "purposes"} | _RULE_KEYS[name]))
            errors.append(f"{where}.{key}: unknown key (known: {known})")
        scope = scopes[name]
        enabled = table.get("enabled", scope.enabled)
        if not isinstance(enabled, bool):
            errors.append(f"{where}.enabled: expected true or false")
            enabled = scope.enabled
        if not enabled and name in ALWAYS_ON:
            errors.append(f"{where}.enabled: this rule cannot be switched off (nothing could be checked)")
            enabled = True
        purposes = scope.purposes
        if "purposes" in table:
            purposes = _purposes(table["purposes"], f"{where}.purposes", errors)
        scopes[name] = RuleScope(enabled, purposes)
        settings = _parameters(name, table, settings, where, errors)
    return replace(settings, scopes=scopes)


def _purposes(raw: Any, where: str, errors: list[str]) -> frozenset[Purpose]:
    if not isinstance(raw, list) or not all(isinstance(p, str) for p in raw):
        errors.append(f"{where}: expected a list of purposes")
        return frozenset()
    chosen: set[Purpose] = set()
    for name in raw:
        try:
            chosen.add(Purpose(name))
        except ValueError:
            errors.append(f"{where}: unknown purpose {name!r} (known: {', '.join(p.value for p in Purpose)})")
    return frozenset(chosen)


def _int(table: dict[str, Any], key: str, default: int, low: int, high: int, where: str, errors: list[str]) -> int:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        errors.append(f"{where}.{key}: expected a whole number {low}-{high}, got {value!r}")
        return default
    return value


def _parameters(
    name: str, table: dict[str, Any], settings: PolicySettings, where: str, errors: list[str]
) -> PolicySettings:
    if name == "opposition_register":
        return replace(
            settings,
            register_max_age_days=_int(table, "max_age_days", settings.register_max_age_days, 1, 366, where, errors),
            contract_grace_days=_int(table, "contract_grace_days", settings.contract_grace_days, 0, 366, where, errors),
            request_validity_days=_int(
                table, "request_validity_days", settings.request_validity_days, 1, 30, where, errors
            ),
        )
    if name == "directory":
        return replace(
            settings,
            directory_max_age_days=_int(table, "max_age_days", settings.directory_max_age_days, 1, 366, where, errors),
        )
    if name == "campaign_silent_rate":
        return replace(
            settings,
            silent_rate_window_days=_int(table, "window_days", settings.silent_rate_window_days, 1, 40, where, errors),
        )
    if name == "caller_id":
        require = table.get("require_prefix", settings.caller_id_require_prefix)
        if not isinstance(require, bool):
            errors.append(f"{where}.require_prefix: expected true or false")
            require = False
        prefixes = dict(settings.caller_id_prefixes)
        raw = table.get("prefixes", {})
        if not isinstance(raw, dict):
            errors.append(f'{where}.prefixes: expected a table purpose = "+39…"')
            raw = {}
        for purpose_name, prefix in raw.items():
            purposes = _purposes([purpose_name], f"{where}.prefixes", errors)
            if not isinstance(prefix, str) or not re.fullmatch(r"\+\d{1,15}", prefix):
                errors.append(f'{where}.prefixes.{purpose_name}: expected an E.164 prefix like "+390844"')
            elif purposes:
                prefixes[next(iter(purposes))] = prefix
        return replace(settings, caller_id_require_prefix=require, caller_id_prefixes=prefixes)
    if name == "calling_hours":
        return replace(settings, calling_hours=_hours(table, settings.calling_hours, where, errors))
    if name == "frequency_cap":
        return replace(settings, frequency_limits=_limits(table, settings.frequency_limits, where, errors))
    if name == "silent_calls":
        block = _int(table, "block_days", settings.silent_call_block.days, 0, 366, where, errors)
        rate = table.get("abandoned_rate_limit", settings.abandoned_rate_limit)
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 <= rate <= 1:
            errors.append(f"{where}.abandoned_rate_limit: expected a fraction 0-1 (0.03 is 3 per 100), got {rate!r}")
            rate = settings.abandoned_rate_limit
        return replace(settings, silent_call_block=timedelta(days=block), abandoned_rate_limit=float(rate))
    return settings


def _window(raw: Any, where: str, errors: list[str]) -> Window:
    if raw == "never":
        return None
    match = _WINDOW.match(raw) if isinstance(raw, str) else None
    if match is None:
        errors.append(f'{where}: expected "HH:MM-HH:MM" or "never", got {raw!r}')
        return None
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    if not (h1 < 24 and m1 < 60 and ((h2 < 24 and m2 < 60) or (h2, m2) == (24, 0))):
        errors.append(f"{where}: {raw!r} is not a time of day (00:00-24:00)")
        return None
    start, end = time(h1, m1), time.max if (h2, m2) == (24, 0) else time(h2, m2)
    if start >= end:
        errors.append(f'{where}: {raw!r} ends before it starts (write "never" for no calls)')
        return None
    return start, end


def _hours(table: dict[str, Any], hours: CallingHours, where: str, errors: list[str]) -> CallingHours:
    windows = {
        kind: _window(table[kind], f"{where}.{kind}", errors)
        for kind in ("weekday", "saturday", "pre_holiday", "sunday", "holiday")
        if kind in table
    }
    local = hours.local_holidays
    if "local_holidays" in table:
        raw = table["local_holidays"]
        entries: list[LocalHoliday] = []
        if not isinstance(raw, list):
            errors.append(f"{where}.local_holidays: expected a list of {{prefix, date, name}}")
            raw = []
        for index, item in enumerate(raw):
            at = f"{where}.local_holidays[{index}]"
            if not isinstance(item, dict) or set(item) != {"prefix", "date", "name"}:
                errors.append(f'{at}: expected {{prefix = "+3906", date = "06-29", name = "…"}}')
                continue
            prefix, day, label = item["prefix"], item["date"], item["name"]
            match = _MONTH_DAY.match(day) if isinstance(day, str) else None
            if not isinstance(prefix, str) or not re.fullmatch(r"\+\d{1,15}", prefix):
                errors.append(f'{at}.prefix: expected an E.164 prefix like "+3906"')
            elif match is None or not _valid_month_day(int(match[1]), int(match[2])):
                errors.append(f'{at}.date: expected "MM-DD", got {day!r}')
            elif not isinstance(label, str):
                errors.append(f"{at}.name: expected a string")
            else:
                entries.append(LocalHoliday(prefix, int(match[1]), int(match[2]), label))
        local = tuple(entries)
    return replace(hours, local_holidays=local, **windows)


def _valid_month_day(month: int, day: int) -> bool:
    days_in = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
    return 1 <= month <= 12 and 1 <= day <= days_in[month - 1]


def _limits(table: dict[str, Any], limits: tuple[CapLimit, ...], where: str, errors: list[str]) -> tuple[CapLimit, ...]:
    if "limits" not in table:
        return limits
    raw = table["limits"]
    if not isinstance(raw, list) or not raw:
        errors.append(f'{where}.limits: expected a list of {{window = "24h", max = 3}}')
        return limits
    parsed: list[CapLimit] = []
    for index, item in enumerate(raw):
        at = f"{where}.limits[{index}]"
        if not isinstance(item, dict) or set(item) != {"window", "max"}:
            errors.append(f'{at}: expected {{window = "24h", max = 3}}')
            continue
        match = _DURATION.match(item["window"]) if isinstance(item["window"], str) else None
        maximum = item["max"]
        if match is None:
            errors.append(f'{at}.window: expected minutes, hours or days like "90m", "24h", "30d"')
        elif not timedelta(minutes=1) <= int(match[1]) * _UNITS[match[2]] <= timedelta(days=366):
            errors.append(f"{at}.window: expected 1 minute to 366 days")
        elif isinstance(maximum, bool) or not isinstance(maximum, int) or not 1 <= maximum <= 1000:
            errors.append(f"{at}.max: expected a whole number 1-1000, got {maximum!r}")
        else:
            parsed.append(CapLimit(int(match[1]) * _UNITS[match[2]], maximum))
    return tuple(parsed)


def describe(settings: PolicySettings) -> dict[str, Any]:
    """The policy as plain data, for ``callguard policy show`` and ``/ready``."""

    def window(w: Window) -> str:
        return "never" if w is None else f"{w[0]:%H:%M}-{'24:00' if w[1] == time.max else f'{w[1]:%H:%M}'}"

    hours = settings.calling_hours
    parameters: dict[str, dict[str, Any]] = {
        "opposition_register": {
            "max_age_days": settings.register_max_age_days,
            "contract_grace_days": settings.contract_grace_days,
            "request_validity_days": settings.request_validity_days,
        },
        "directory": {"max_age_days": settings.directory_max_age_days},
        "campaign_silent_rate": {"window_days": settings.silent_rate_window_days},
        "caller_id": {
            "require_prefix": settings.caller_id_require_prefix,
            "prefixes": {p.value: prefix for p, prefix in sorted(settings.caller_id_prefixes.items())},
        },
        "calling_hours": {
            "weekday": window(hours.weekday),
            "saturday": window(hours.saturday),
            "pre_holiday": window(hours.pre_holiday),
            "sunday": window(hours.sunday),
            "holiday": window(hours.holiday),
            "local_holidays": [
                {"prefix": h.prefix, "date": f"{h.month:02d}-{h.day:02d}", "name": h.name} for h in hours.local_holidays
            ],
        },
        "frequency_cap": {
            "limits": [
                {"window_hours": lim.window / timedelta(hours=1), "max": lim.max_calls}
                for lim in settings.frequency_limits
            ]
        },
        "silent_calls": {
            "block_days": settings.silent_call_block.days,
            "abandoned_rate_limit": settings.abandoned_rate_limit,
        },
    }
    return {
        "version": settings.version,
        "timezone": str(settings.timezone),
        "rules": {
            name: {
                "enabled": settings.scopes[name].enabled,
                "purposes": sorted(p.value for p in settings.scopes[name].purposes),
                **parameters.get(name, {}),
            }
            for name in RULES
        },
    }


def policy_for(settings: Settings) -> PolicySettings:
    """The policy a worker or command runs with: the file ``CALLGUARD_POLICY``
    names (or the shipped one), with ``CALLGUARD_REGISTER_MAX_AGE_DAYS`` on top
    when set (kept from before policy files existed)."""
    policy = load_policy(settings.policy or None)
    if settings.register_max_age_days is not None:
        policy = replace(policy, register_max_age_days=settings.register_max_age_days)
    return policy
