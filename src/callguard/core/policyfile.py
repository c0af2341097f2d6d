"""Policy as data: read, validate and explain a policy file (TOML).

A compliance officer changes which rules run, for which purposes and with
which parameters without a code release: the worker reads the file named by
``CALLGUARD_POLICY`` (default: the shipped policy set
``callguard/policies/default.toml``). A file is either

- a **pack**: the rules of one jurisdiction (``jurisdiction = "it"``, the
  default, or ``"us"``) and their parameters, e.g. the shipped ``it.toml`` and
  ``us.toml``. A pack alone decides every callee. A pack may start from a
  shipped one with ``base = "it"`` and change only what differs; it must then
  name its own ``version``, which every decision and audit record carries;
- a **set** (a ``[countries]`` table): which pack decides the callees of which
  country, and what happens to the others (``[other_countries]``: the
  purposes denied ``no_policy_for_country``, and the pack that decides the
  rest).

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
from typing import Any, Protocol, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers

from callguard.core.hours import CallingHours, LocalHoliday, Window
from callguard.core.policy import (
    ALWAYS_ON,
    CATALOGUES,
    AreaLimits,
    AreaWindow,
    CapLimit,
    Jurisdictions,
    PolicySettings,
    RegisterRule,
    RuleScope,
    UsSettings,
    default_scopes,
)
from callguard.core.schema import Purpose, Reason
from callguard.core.sources import SOURCES

#: Policy packs shipped in the package, by the name ``base`` and a set's ``[countries]`` use.
SHIPPED = {"it": "it.toml", "us": "us.toml"}
#: Policy sets shipped in the package.
SHIPPED_SETS = {"default": "default.toml"}
DEFAULT_POLICY = "default"
#: A register's name (``callguard register load --register NAME``).
REGISTER_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
_AREA_CODE = re.compile(r"^[2-9]\d\d$")
_STATE = re.compile(r"^[A-Z]{2}$")

_IT_RULE_KEYS: dict[str, set[str]] = {
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
_US_RULE_KEYS: dict[str, set[str]] = {
    "callee_number": set(),
    "operator_certified": set(),
    "operator_mandated": set(),
    "reassigned_numbers": set(),
    "do_not_call_registers": {"registers", "ebr_transaction_months", "ebr_inquiry_months"},
    "wireless_automated": set(),
    "internal_dnc": set(),
    "caller_id": {"require_prefix", "prefixes"},
    "calling_hours": {"window", "state_windows", "zones"},
    "frequency_cap": {"limits", "state_limits"},
    "campaign_silent_rate": {"window_days", "abandoned_rate_limit"},
}
#: Every rule's parameters, per catalogue (besides ``enabled``, ``purposes`` and ``sources``).
RULE_KEYS = {"it": _IT_RULE_KEYS, "us": _US_RULE_KEYS}
_COMMON_KEYS = {"enabled", "purposes", "sources"}
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


def shipped_text(name: str = "it") -> str:
    """The text of a shipped pack (``it``, ``us``) or set (``default``)."""
    filename = SHIPPED.get(name) or SHIPPED_SETS[name]
    return resources.files("callguard").joinpath("policies", filename).read_text(encoding="utf-8")


def shipped_policy(name: str = DEFAULT_POLICY) -> PolicySettings:
    """A shipped pack (``it``, ``us``) or set (``default``)."""
    return parse_policy(shipped_text(name), f"<shipped {name}>")


def load_policy(path: str | Path | None = None) -> PolicySettings:
    """The policy of the file at ``path`` (``None``: the shipped policy set).

    A pack gives its :class:`PolicySettings`; a set gives its fallback pack
    (``[other_countries] pack``) with ``jurisdictions`` filled in, so that
    :func:`callguard.core.policy.decide` chooses each callee's pack."""
    if path is None or str(path) == "":
        return parse_policy(shipped_text(DEFAULT_POLICY), f"<shipped {DEFAULT_POLICY}>")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(str(path), [f"cannot read the file ({exc.strerror or exc})"]) from None
    return parse_policy(text, str(path), Path(path).parent)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Tables merge key by key; any other value (arrays included) replaces."""
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def parse_policy(text: str, source: str = "<policy>", directory: Path | None = None) -> PolicySettings:
    """A pack or a set (see the module docstring); ``directory`` is where a
    set's pack files are found (its own directory)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(source, [f"not valid TOML: {exc}"]) from None
    if "countries" in data or "other_countries" in data:
        return _parse_set(data, source, directory)
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


def _parse_set(data: dict[str, Any], source: str, directory: Path | None) -> PolicySettings:
    """A policy set: ``version``, ``[countries]`` (region -> pack) and
    ``[other_countries]`` (``deny``: purposes; ``pack``: the pack for the rest)."""
    errors: list[str] = []
    for key in sorted(set(data) - {"version", "countries", "other_countries"}):
        errors.append(f"{key}: unknown key in a policy set (known: version, countries, other_countries)")
    version = data.get("version")
    if not isinstance(version, str) or not version.strip():
        errors.append("version: required, a non-empty string")
        version = "?"
    loaded: dict[str, PolicySettings | None] = {}

    def pack(reference: Any, where: str) -> PolicySettings | None:
        if not isinstance(reference, str) or not reference:
            errors.append(f'{where}: expected a shipped pack ({", ".join(SHIPPED)}) or a pack file "NAME.toml"')
            return None
        if reference not in loaded:
            loaded[reference] = None
            try:
                if reference in SHIPPED:
                    found = parse_policy(shipped_text(reference), f"<shipped {reference}>")
                else:
                    found = load_policy(Path(reference) if directory is None else directory / reference)
            except PolicyError as exc:
                errors.extend(f"{where}: {exc.source}: {error}" for error in exc.errors)
                return None
            if found.jurisdictions is not None:
                errors.append(f"{where}: {reference} is a policy set, not a pack")
                return None
            loaded[reference] = found
        return loaded[reference]

    countries = data.get("countries", {})
    if not isinstance(countries, dict):
        errors.append('countries: expected a table REGION = "pack"')
        countries = {}
    packs: dict[str, PolicySettings] = {}
    names: dict[str, str] = {}
    for region, reference in countries.items():
        where = f"countries.{region}"
        if region not in phonenumbers.SUPPORTED_REGIONS:
            errors.append(f"{where}: not a region libphonenumber knows (ISO 3166-1 alpha-2, e.g. IT, US)")
            continue
        found = pack(reference, where)
        if found is not None:
            packs[region], names[region] = found, reference
    other = data.get("other_countries", {})
    if not isinstance(other, dict):
        errors.append("other_countries: expected a table with deny and pack")
        other = {}
    for key in sorted(set(other) - {"deny", "pack"}):
        errors.append(f"other_countries.{key}: unknown key (known: deny, pack)")
    deny = _purposes(other.get("deny", []), "other_countries.deny", errors)
    fallback = pack(other.get("pack"), "other_countries.pack")
    if not packs and not errors:
        errors.append("countries: name at least one country's pack")
    windows = {
        p.silent_rate_window_days
        for p in (*packs.values(), *([fallback] if fallback else []))
        if p.scopes.get("campaign_silent_rate", RuleScope(False)).enabled
    }
    if len(windows) > 1:
        errors.append(
            "countries: the packs count campaign outcomes over different windows "
            f"({', '.join(map(str, sorted(windows)))} days); one window serves a set (the counters are shared)"
        )
    if errors or fallback is None:
        raise PolicyError(source, errors or ["other_countries.pack: required"])
    sets = Jurisdictions(version, packs, fallback, deny, names, str(other.get("pack")))
    return replace(fallback, jurisdictions=sets)


def _build(data: dict[str, Any], errors: list[str]) -> PolicySettings:
    jurisdiction = data.get("jurisdiction", "it")
    if jurisdiction not in CATALOGUES:
        errors.append(f"jurisdiction: {jurisdiction!r} is not a rule catalogue (known: {', '.join(CATALOGUES)})")
        jurisdiction = "it"
    known = {"version", "timezone", "rules", "jurisdiction"} | ({"area_codes"} if jurisdiction == "us" else set())
    for key in sorted(set(data) - known):
        errors.append(f"{key}: unknown key (known: {', '.join(sorted(known | {'base'}))})")
    version = data.get("version")
    if not isinstance(version, str) or not version.strip():
        errors.append("version: required, a non-empty string")
        version = "?"
    settings = PolicySettings(version=version, jurisdiction=jurisdiction, scopes=default_scopes(jurisdiction))
    if jurisdiction == "us":
        # no Italian carrier block and no default caps: the US pack's file sets its own
        settings = replace(settings, foreign_fixed_block_from=None, foreign_mobile_block_from=None, frequency_limits=())
    zone = data.get("timezone", "Europe/Rome")
    try:
        settings = replace(settings, timezone=ZoneInfo(zone))
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        errors.append(f"timezone: {zone!r} is not an IANA time zone")
    states = _area_codes(data.get("area_codes", {}), errors) if jurisdiction == "us" else {}
    rules = data.get("rules", {})
    if not isinstance(rules, dict):
        errors.append("rules: expected tables [rules.NAME]")
        return settings
    catalogue = CATALOGUES[jurisdiction]
    rule_keys = RULE_KEYS[jurisdiction]
    scopes = dict(settings.scopes)
    cited: dict[str, tuple[str, ...]] = {}
    for name in sorted(set(rules) - set(catalogue)):
        errors.append(f"rules.{name}: unknown rule (known: {', '.join(catalogue)})")
    for name in catalogue:
        table = rules.get(name, {})
        where = f"rules.{name}"
        if not isinstance(table, dict):
            errors.append(f"{where}: expected a table")
            continue
        for key in sorted(set(table) - _COMMON_KEYS - rule_keys[name]):
            known_keys = ", ".join(sorted(_COMMON_KEYS | rule_keys[name]))
            errors.append(f"{where}.{key}: unknown key (known: {known_keys})")
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
        if "sources" in table:
            cited[name] = _sources(table["sources"], f"{where}.sources", errors)
        if jurisdiction == "us":
            settings = _us_parameters(name, table, settings, where, errors, states)
        else:
            settings = _parameters(name, table, settings, where, errors)
    return replace(settings, scopes=scopes, rule_sources=cited)


def _sources(raw: Any, where: str, errors: list[str]) -> tuple[str, ...]:
    """Source keys (:mod:`callguard.core.sources`) a policy file cites for a rule."""
    if not isinstance(raw, list) or not all(isinstance(k, str) for k in raw):
        errors.append(f"{where}: expected a list of source keys (callguard policy sources)")
        return ()
    for key in raw:
        if key not in SOURCES:
            errors.append(f"{where}: unknown source {key!r} (callguard policy sources lists them)")
    return tuple(k for k in raw if k in SOURCES)


def _area_codes(raw: Any, errors: list[str]) -> dict[str, frozenset[str]]:
    """``[area_codes]``: ``STATE = ["305", ...]``, the area codes the state rules key on."""
    if not isinstance(raw, dict):
        errors.append('area_codes: expected a table STATE = ["305", ...]')
        return {}
    states: dict[str, frozenset[str]] = {}
    for state, codes in raw.items():
        where = f"area_codes.{state}"
        if not _STATE.fullmatch(state):
            errors.append(f"{where}: a state is its two-letter code (FL, OK, MD, ...)")
            continue
        states[state] = _area_list(codes, where, errors)
    return states


def _area_list(raw: Any, where: str, errors: list[str]) -> frozenset[str]:
    if not isinstance(raw, list) or not all(isinstance(c, str) and _AREA_CODE.fullmatch(c) for c in raw):
        errors.append(f'{where}: expected a list of three-digit area codes like "305"')
        return frozenset()
    return frozenset(raw)


def _state_areas(
    item: dict[str, Any], at: str, states: dict[str, frozenset[str]], errors: list[str]
) -> tuple[str, frozenset[str]]:
    """The state of an entry and its area codes (``area_codes`` of the entry, or of ``[area_codes]``)."""
    state = item.get("state")
    if not isinstance(state, str) or not _STATE.fullmatch(state):
        errors.append(f"{at}.state: expected a two-letter state code")
        return "", frozenset()
    if "area_codes" in item:
        return state, _area_list(item["area_codes"], f"{at}.area_codes", errors)
    if state not in states:
        errors.append(f"{at}.state: {state} has no [area_codes] entry (or give area_codes here)")
        return state, frozenset()
    return state, states[state]


def _entries(raw: Any, where: str, errors: list[str], shape: str) -> list[tuple[str, dict[str, Any]]]:
    if not isinstance(raw, list):
        errors.append(f"{where}: expected a list of {shape}")
        return []
    out = []
    for index, item in enumerate(raw):
        at = f"{where}[{index}]"
        if not isinstance(item, dict):
            errors.append(f"{at}: expected {shape}")
            continue
        out.append((at, item))
    return out


def _us_parameters(
    name: str,
    table: dict[str, Any],
    settings: PolicySettings,
    where: str,
    errors: list[str],
    states: dict[str, frozenset[str]],
) -> PolicySettings:
    """The parameters of the United States pack's rules."""
    us = settings.us
    if name == "do_not_call_registers":
        registers = us.registers
        if "registers" in table:
            registers = tuple(_register_rules(table["registers"], f"{where}.registers", errors, states))
        us = replace(
            us,
            registers=registers,
            ebr_transaction_months=_int(
                table, "ebr_transaction_months", us.ebr_transaction_months, 1, 120, where, errors
            ),
            ebr_inquiry_months=_int(table, "ebr_inquiry_months", us.ebr_inquiry_months, 1, 120, where, errors),
        )
        return replace(settings, us=us)
    if name == "calling_hours":
        return replace(settings, us=_us_hours(table, us, where, errors, states))
    if name == "frequency_cap":
        limits = settings.frequency_limits
        if "limits" in table:
            limits = () if table["limits"] == [] else _limits(table, limits, where, errors)
        state_limits = us.state_limits
        if "state_limits" in table:
            found: list[AreaLimits] = []
            shape = '{state = "FL", limits = [{window = "24h", max = 3}]}'
            for at, item in _entries(table["state_limits"], f"{where}.state_limits", errors, shape):
                for key in sorted(set(item) - {"state", "area_codes", "limits", "sources"}):
                    errors.append(f"{at}.{key}: unknown key (known: area_codes, limits, sources, state)")
                state, areas = _state_areas(item, at, states, errors)
                parsed = _limits({"limits": item.get("limits")}, (), at, errors)
                cited = _sources(item.get("sources", []), f"{at}.sources", errors)
                if state and parsed:
                    found.append(AreaLimits(state, areas, parsed, cited))
            state_limits = tuple(found)
        return replace(settings, frequency_limits=limits, us=replace(us, state_limits=state_limits))
    if name == "campaign_silent_rate":
        return replace(
            settings,
            silent_rate_window_days=_int(table, "window_days", settings.silent_rate_window_days, 1, 40, where, errors),
            abandoned_rate_limit=_abandoned_rate(table, settings, where, errors),
        )
    if name == "caller_id":
        return _parameters(name, table, settings, where, errors)
    return settings


def _us_hours(
    table: dict[str, Any], us: UsSettings, where: str, errors: list[str], states: dict[str, frozenset[str]]
) -> UsSettings:
    """``calling_hours`` of the US pack: ``window``, ``state_windows``, ``zones``."""
    window = us.window
    if "window" in table:
        window = _window(table["window"], f"{where}.window", errors) or window
    windows = us.state_windows
    if "state_windows" in table:
        found: list[AreaWindow] = []
        shape = '{state = "FL", window = "08:00-20:00"}'
        for at, item in _entries(table["state_windows"], f"{where}.state_windows", errors, shape):
            for key in sorted(set(item) - {"state", "area_codes", "window", "sources"}):
                errors.append(f"{at}.{key}: unknown key (known: area_codes, sources, state, window)")
            state, areas = _state_areas(item, at, states, errors)
            parsed = _window(item.get("window"), f"{at}.window", errors)
            cited = _sources(item.get("sources", []), f"{at}.sources", errors)
            if parsed is not None and state:
                found.append(AreaWindow(state, areas, parsed, cited))
        windows = tuple(found)
    zones = dict(us.zones)
    if "zones" in table:
        zones = {}
        shape = '{area_codes = ["850"], zones = ["America/Chicago", "America/New_York"]}'
        for at, item in _entries(table["zones"], f"{where}.zones", errors, shape):
            if set(item) != {"area_codes", "zones"}:
                errors.append(f"{at}: expected {shape}")
                continue
            areas = _area_list(item["area_codes"], f"{at}.area_codes", errors)
            names = item["zones"]
            if not isinstance(names, list) or not names or not all(isinstance(z, str) for z in names):
                errors.append(f"{at}.zones: expected a list of IANA time zones")
                continue
            bad = False
            for zone in names:
                try:
                    ZoneInfo(zone)
                except (ZoneInfoNotFoundError, ValueError):
                    errors.append(f"{at}.zones: {zone!r} is not an IANA time zone")
                    bad = True
            if not bad:
                for area in areas:
                    zones[area] = tuple(sorted(set(zones.get(area, ())) | set(names)))
    return replace(us, window=window, state_windows=windows, zones=zones)


_REGISTER_REASONS = {"national_dnc": Reason.NATIONAL_DNC, "state_dnc": Reason.STATE_DNC}
_EXCEPTIONS = ("consent", "ebr_transaction", "ebr_inquiry")


def _register_rules(raw: Any, where: str, errors: list[str], states: dict[str, frozenset[str]]) -> list[RegisterRule]:
    out: list[RegisterRule] = []
    seen: set[str] = set()
    shape = '{name = "us-dnc", reason = "national_dnc", stale_after_days = 31}'
    known = {"name", "reason", "stale_after_days", "state", "area_codes", "exceptions", "sources"}
    for at, item in _entries(raw, where, errors, shape):
        for key in sorted(set(item) - known):
            errors.append(f"{at}.{key}: unknown key (known: {', '.join(sorted(known))})")
        name = item.get("name")
        if not isinstance(name, str) or not REGISTER_NAME.fullmatch(name):
            errors.append(f"{at}.name: expected a register name like us-dnc (lower case letters, digits, '-')")
            continue
        if name in seen:
            errors.append(f"{at}.name: register {name!r} appears twice")
        seen.add(name)
        reason = _REGISTER_REASONS.get(str(item.get("reason", "")))
        if reason is None:
            errors.append(f"{at}.reason: expected {' or '.join(_REGISTER_REASONS)}")
            continue
        stale = _int(item, "stale_after_days", 31, 0, 366, at, errors)
        state: str | None = None
        areas: frozenset[str] = frozenset()
        if "state" in item or "area_codes" in item:
            state, areas = _state_areas(item, at, states, errors)
        exceptions = item.get("exceptions", list(_EXCEPTIONS))
        if not isinstance(exceptions, list) or not all(e in _EXCEPTIONS for e in exceptions):
            errors.append(f"{at}.exceptions: expected a list of {', '.join(_EXCEPTIONS)}")
            exceptions = list(_EXCEPTIONS)
        cited = _sources(item.get("sources", []), f"{at}.sources", errors)
        out.append(RegisterRule(name, reason, stale, areas, tuple(exceptions), state or None, cited))
    return out


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


def _abandoned_rate(table: dict[str, Any], settings: PolicySettings, where: str, errors: list[str]) -> float:
    rate = table.get("abandoned_rate_limit", settings.abandoned_rate_limit)
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 <= rate <= 1:
        errors.append(f"{where}.abandoned_rate_limit: expected a fraction 0-1 (0.03 is 3 per 100), got {rate!r}")
        return settings.abandoned_rate_limit
    return float(rate)


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
        rate = _abandoned_rate(table, settings, where, errors)
        return replace(settings, silent_call_block=timedelta(days=block), abandoned_rate_limit=rate)
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


def _window_text(w: Window) -> str:
    return "never" if w is None else f"{w[0]:%H:%M}-{'24:00' if w[1] == time.max else f'{w[1]:%H:%M}'}"


def _limits_json(limits: tuple[CapLimit, ...]) -> list[dict[str, Any]]:
    return [{"window_hours": lim.window / timedelta(hours=1), "max": lim.max_calls} for lim in limits]


def describe(settings: PolicySettings) -> dict[str, Any]:
    """The policy as plain data, for ``callguard policy show`` and ``/ready``
    (a set: :func:`describe_set`)."""
    if settings.jurisdictions is not None:
        return describe_set(settings)
    window = _window_text
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
        "frequency_cap": {"limits": _limits_json(settings.frequency_limits)},
        "silent_calls": {
            "block_days": settings.silent_call_block.days,
            "abandoned_rate_limit": settings.abandoned_rate_limit,
        },
    }
    described: dict[str, Any] = {"version": settings.version, "timezone": str(settings.timezone)}
    if settings.jurisdiction != "it":
        described["jurisdiction"] = settings.jurisdiction
        parameters = _us_description(settings)
    described["rules"] = {
        name: {
            "enabled": settings.scopes[name].enabled,
            "purposes": sorted(p.value for p in settings.scopes[name].purposes),
            **parameters.get(name, {}),
            **({"sources": list(settings.rule_sources[name])} if name in settings.rule_sources else {}),
        }
        for name in settings.rules
    }
    return described


def _us_description(settings: PolicySettings) -> dict[str, dict[str, Any]]:
    us = settings.us
    return {
        "do_not_call_registers": {
            "registers": [
                {
                    "name": r.name,
                    "reason": r.reason.value,
                    "stale_after_days": r.stale_after_days,
                    "state": r.state,
                    "area_codes": sorted(r.area_codes),
                    "exceptions": list(r.exceptions),
                }
                for r in us.registers
            ],
            "ebr_transaction_months": us.ebr_transaction_months,
            "ebr_inquiry_months": us.ebr_inquiry_months,
        },
        "caller_id": {
            "require_prefix": settings.caller_id_require_prefix,
            "prefixes": {p.value: prefix for p, prefix in sorted(settings.caller_id_prefixes.items())},
        },
        "calling_hours": {
            "window": _window_text(us.window),
            "state_windows": [
                {"state": w.state, "window": _window_text(w.window), "area_codes": sorted(w.area_codes)}
                for w in us.state_windows
            ],
            "zones": {area: list(zones) for area, zones in sorted(us.zones.items())},
        },
        "frequency_cap": {
            "limits": _limits_json(settings.frequency_limits),
            "state_limits": [
                {"state": a.state, "limits": _limits_json(a.limits), "area_codes": sorted(a.area_codes)}
                for a in us.state_limits
            ],
        },
        "campaign_silent_rate": {
            "window_days": settings.silent_rate_window_days,
            "abandoned_rate_limit": settings.abandoned_rate_limit,
        },
    }


def describe_set(settings: PolicySettings) -> dict[str, Any]:
    """A policy set as plain data: its countries, the other countries, and each pack."""
    sets = settings.jurisdictions
    assert sets is not None
    packs: dict[str, Any] = {}
    for region, name in sorted(sets.names.items()):
        packs.setdefault(name, describe(sets.packs[region]))
    packs.setdefault(sets.other_name, describe(sets.other))
    return {
        "version": sets.version,
        "countries": dict(sorted(sets.names.items())),
        "other_countries": {"deny": sorted(p.value for p in sets.deny_purposes), "pack": sets.other_name},
        "packs": packs,
    }


def map_packs(settings: PolicySettings, change: Any) -> PolicySettings:
    """``settings`` with ``change(pack)`` applied to each of its packs (a set's
    packs and fallback, the same object once)."""
    sets = settings.jurisdictions
    if sets is None:
        return cast(PolicySettings, change(settings))
    done: dict[int, PolicySettings] = {}

    def one(pack: PolicySettings) -> PolicySettings:
        if id(pack) not in done:
            done[id(pack)] = change(pack)
        return done[id(pack)]

    packs = {region: one(pack) for region, pack in sets.packs.items()}
    other = one(sets.other)
    new = Jurisdictions(sets.version, packs, other, sets.deny_purposes, sets.names, sets.other_name)
    return replace(other, jurisdictions=new)


class PolicyChoice(Protocol):
    """What :func:`policy_for` reads from :class:`callguard.config.Settings`
    (structural, so the core imports no shell settings)."""

    @property
    def policy(self) -> str: ...

    @property
    def register_max_age_days(self) -> int | None: ...


def policy_for(settings: PolicyChoice) -> PolicySettings:
    """The policy a worker or command runs with: the file ``CALLGUARD_POLICY``
    names (or the shipped set), with ``CALLGUARD_REGISTER_MAX_AGE_DAYS`` on top
    of every Italian pack when set (kept from before policy files existed)."""
    policy = load_policy(settings.policy or None)
    days = settings.register_max_age_days
    if days is not None:
        policy = map_packs(
            policy, lambda pack: replace(pack, register_max_age_days=days) if pack.jurisdiction == "it" else pack
        )
    return policy
