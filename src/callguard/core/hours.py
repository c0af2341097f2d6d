"""Calling hours in the callee's local time, with the Italian holiday calendar.

Pure functions behind the ``calling_hours`` rule of :mod:`callguard.core.policy`;
the windows and local holidays come from the policy file (:class:`CallingHours`).
Sources:

- **Codice di condotta 2024** (Garante, telemarketing and teleselling, in force
  28 September 2024): calls Monday to Friday 09:00-20:00; Saturday and the day
  before a public holiday 10:00-19:00; never on Sundays or public holidays.
- **Italian public holidays**: L. 260/1949 as amended (national days), with
  Easter Monday; a policy file may add local patron-saint days per province.
- **Time zones**: complaints about compliance tools name zones guessed from a
  number as a known failure (libphonenumber has wrong mappings): a local time
  is used only when every zone the numbering plan allows gives the same local
  time at that instant; otherwise the caller gets ``timezone_unknown``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

import phonenumbers
from phonenumbers import timezone as number_timezones
from phonenumbers.tzdata import TIMEZONE_DATA

ROME = ZoneInfo("Europe/Rome")

#: Fixed-date national holidays (month, day, name).
FIXED_HOLIDAYS = (
    (1, 1, "Capodanno"),
    (1, 6, "Epifania"),
    (4, 25, "Festa della Liberazione"),
    (5, 1, "Festa del Lavoro"),
    (6, 2, "Festa della Repubblica"),
    (8, 15, "Ferragosto"),
    (11, 1, "Ognissanti"),
    (12, 8, "Immacolata Concezione"),
    (12, 25, "Natale"),
    (12, 26, "Santo Stefano"),
)

WEEKDAY_WINDOW = (time(9, 0), time(20, 0))
SATURDAY_AND_EVE_WINDOW = (time(10, 0), time(19, 0))

#: Calls allowed from the first time until just before the second (local), or never (None).
Window = tuple[time, time] | None
#: A holiday added by the policy: (month, day, name).
ExtraDay = tuple[int, int, str]


@dataclass(frozen=True, slots=True)
class LocalHoliday:
    """A local public holiday (a province's patron saint) for numbers starting with ``prefix``.

    Only geographic numbers say where the callee lives: ``+3902`` is the
    Milan district, ``+3906`` Rome. Mobile numbers carry no province, so a
    local day cannot apply to them unless the policy lists it with ``+39``
    (every Italian number), which is the safe side.
    """

    prefix: str
    month: int
    day: int
    name: str


@dataclass(frozen=True, slots=True)
class CallingHours:
    """The windows of each kind of day (Codice di condotta 2024 by default)."""

    weekday: Window = WEEKDAY_WINDOW
    saturday: Window = SATURDAY_AND_EVE_WINDOW
    pre_holiday: Window = SATURDAY_AND_EVE_WINDOW
    sunday: Window = None
    holiday: Window = None
    local_holidays: tuple[LocalHoliday, ...] = ()

    def extra_days(self, e164: str) -> tuple[ExtraDay, ...]:
        """The local holidays that apply to this number."""
        return tuple((h.month, h.day, h.name) for h in self.local_holidays if e164.startswith(h.prefix))


DEFAULT_HOURS = CallingHours()


def easter_sunday(year: int) -> date:
    """Gregorian Easter (the anonymous algorithm of Meeus, Jones and Butcher)."""
    a, b, c = year % 19, year // 100, year % 100
    d, e = b // 4, b % 4
    f = (b + 8) // 25
    g = (b - f + 1) // 3
    h = (19 * a + b - d - g + 15) % 30
    i, k = c // 4, c % 4
    ell = (32 + 2 * e + 2 * i - h - k) % 7
    m = (a + 11 * h + 22 * ell) // 451
    month, day = divmod(h + ell - 7 * m + 114, 31)
    return date(year, month, day + 1)


@lru_cache(maxsize=64)
def italian_holidays(year: int, extra: tuple[tuple[int, int, str], ...] = ()) -> dict[date, str]:
    """The national public holidays of ``year`` (plus ``extra`` (month, day,
    name) days, e.g. a province's patron saint)."""
    days = {date(year, month, day): name for month, day, name in (*FIXED_HOLIDAYS, *extra)}
    if year >= 2026:
        # L151_2025 (callguard.core.sources): 4 October, San Francesco d'Assisi, a
        # national holiday from 1 January 2026 (L. 260/1949 art. 2 as amended)
        days[date(year, 10, 4)] = "San Francesco d'Assisi"
    easter = easter_sunday(year)
    days[easter] = "Pasqua"
    days[easter + timedelta(days=1)] = "Lunedì dell'Angelo"
    return days


def is_holiday(day: date, extra: tuple[tuple[int, int, str], ...] = ()) -> bool:
    return day in italian_holidays(day.year, extra)


def _intersect(a: Window, b: Window) -> Window:
    if a is None or b is None:
        return None
    start, end = max(a[0], b[0]), min(a[1], b[1])
    return (start, end) if start < end else None


def calling_window(day: date, extra: tuple[ExtraDay, ...] = (), hours: CallingHours = DEFAULT_HOURS) -> Window:
    """The hours calls may be placed on ``day`` (local), or None when never.

    Codice di condotta 2024: no calls on Sundays and public holidays;
    10:00-19:00 on Saturdays and on the day before a public holiday;
    09:00-20:00 on other weekdays. The end is exclusive (20:00:00 is too late).
    A day of two kinds (a Saturday before a holiday) gets the narrower
    window: the intersection, on the safe side.
    """
    if day.weekday() == 6:
        return hours.sunday if not is_holiday(day, extra) else _intersect(hours.sunday, hours.holiday)
    if is_holiday(day, extra):
        return hours.holiday
    window = hours.saturday if day.weekday() == 5 else hours.weekday
    if is_holiday(day + timedelta(days=1), extra):
        window = _intersect(window, hours.pre_holiday)
    return window


def within_calling_hours(
    local: datetime, extra: tuple[ExtraDay, ...] = (), hours: CallingHours = DEFAULT_HOURS
) -> bool:
    """Whether ``local`` (an aware datetime in the callee's zone) is inside its day's window."""
    window = calling_window(local.date(), extra, hours)
    return window is not None and window[0] <= local.time().replace(tzinfo=None) < window[1]


def next_window_start(
    local: datetime, extra: tuple[ExtraDay, ...] = (), hours: CallingHours = DEFAULT_HOURS
) -> datetime | None:
    """When the next window opens after ``local`` (aware, callee's zone), looking
    at most 31 days ahead; None when no window opens in that time."""
    day = local.date()
    for offset in range(32):
        window = calling_window(day + timedelta(days=offset), extra, hours)
        if window is None:
            continue
        start = datetime.combine(day + timedelta(days=offset), window[0], tzinfo=local.tzinfo)
        if start > local:
            return start
    return None


def callee_local_time(e164: str, now: datetime) -> datetime | None:
    """The callee's local time at ``now``, or None when it cannot be known.

    libphonenumber lists the zones a number's range may be in; the local time
    is known only when all of them agree at this instant (Italian mobiles list
    Europe/Rome and Europe/Vatican, which always agree; Russian mobiles span
    eleven offsets and get None: never guess).

    Fast path, same answer: when every zone libphonenumber lists anywhere in
    the number's country agrees at this instant (Italy), the number's own
    zones, a subset, agree too; only other countries pay for a parse.
    """
    country = _country_zones(e164)
    if country:
        local = agreed_local_time(country, now)
        if local is not None:
            return local
    try:
        parsed = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return None
    return agreed_local_time(number_timezones.time_zones_for_number(parsed), now)


@lru_cache(maxsize=1024)
def _zones_of_country(code: str) -> tuple[str, ...]:
    """Every zone libphonenumber lists for any number range of a country calling code."""
    zones: set[str] = set()
    for prefix, names in TIMEZONE_DATA.items():
        if prefix.startswith(code):
            zones.update(names)
    return tuple(sorted(zones))


def _country_zones(e164: str) -> tuple[str, ...]:
    for length in (1, 2, 3):
        code = e164[1 : 1 + length]
        if code.isdigit() and int(code) in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
            return _zones_of_country(code)
    return ()


def agreed_local_time(zone_names: Iterable[str], now: datetime) -> datetime | None:
    """``now`` in the zones named, when they all agree on the local time; else None."""
    return _agreed_local_time(tuple(zone_names), now)


@lru_cache(maxsize=1024)
def _agreed_local_time(zone_names: tuple[str, ...], now: datetime) -> datetime | None:
    # cached: a batch's intents share one decision time and mostly one country
    locals_ = set()
    first: datetime | None = None
    for name in zone_names:
        try:
            local = now.astimezone(ZoneInfo(name))
        except (KeyError, ValueError):  # unknown zone name, e.g. "Etc/Unknown"
            return None
        locals_.add(local.replace(tzinfo=None))
        first = first or local
    return first if len(locals_) == 1 else None
