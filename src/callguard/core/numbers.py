"""Callee numbers: normalisation to E.164 and masking for logs.

Every rule keys on the E.164 form, so the same person is found whatever way the
dialer wrote the number (``+39 347 …``, ``0039…``, ``(06) …``, ``347-…``).
Phone numbers are personal data (GDPR art. 4(1)): they appear in the audit
trail, which is the evidence, but anything meant for a log goes through
:func:`mask` first.
"""

from __future__ import annotations

import importlib
import re
from functools import lru_cache
from typing import Any

import phonenumbers

_sre_parser: Any = importlib.import_module("re._parser")  # the widths a pattern can match

#: Longest input we hand to libphonenumber; real numbers are far shorter and
#: the library itself refuses inputs over 250 characters.
MAX_INPUT_LENGTH = 64


def normalise(raw: str, default_region: str) -> str | None:
    """Return the E.164 form of ``raw``, or ``None`` when it is not a valid number.

    ``default_region`` (ISO 3166 alpha-2) applies to numbers written without a
    country code. "Valid" is libphonenumber's ``is_valid_number``: a number
    that cannot be assigned cannot be checked against a register, and a guard
    fails closed on what it cannot check. Italian numbers in canonical form
    (``+39…``, and for region IT ``0039…`` or the national number) take a
    fast path built from libphonenumber's own metadata, with the same answer.
    """
    if not raw or len(raw) > MAX_INPUT_LENGTH:
        return None
    return canonical_e164(raw, default_region) or libphonenumber_e164(raw, default_region)


@lru_cache(maxsize=65_536)
def libphonenumber_e164(raw: str, default_region: str) -> str | None:
    """:func:`normalise` by libphonenumber alone: parse, validate, format."""
    try:
        parsed = phonenumbers.parse(raw, default_region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(parsed):
        return None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


#: What dialers put in a caller-ID field when the number is withheld.
HIDDEN_CALLER_IDS = frozenset(
    {"", "anonymous", "private", "restricted", "unknown", "withheld", "hidden", "unavailable"}
)

#: AGCOM's telemarketing (0844) and statistical-survey (0843) ranges are newer
#: than libphonenumber's metadata, which calls them invalid: they are accepted
#: as caller IDs when their length is possible for an Italian number.
ITALIAN_TELEMARKETING_RANGES = ("+390843", "+390844")


@lru_cache(maxsize=16_384)
def normalise_caller_id(raw: str | None, default_region: str) -> str | None:
    """The E.164 form of a caller ID, or ``None`` when it is missing, withheld
    or not a callable number (the callee could not call it back)."""
    if raw is None or raw.strip().lower() in HIDDEN_CALLER_IDS or len(raw) > MAX_INPUT_LENGTH:
        return None
    valid = normalise(raw, default_region)
    if valid is not None:
        return valid
    try:
        parsed = phonenumbers.parse(raw, default_region)
    except phonenumbers.NumberParseException:
        return None
    e164 = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    if e164.startswith(ITALIAN_TELEMARKETING_RANGES) and phonenumbers.is_possible_number(parsed):
        return e164
    return None


@lru_cache(maxsize=16_384)
@lru_cache(maxsize=4096)
def is_mobile(e164: str) -> bool:
    """True for a number libphonenumber knows as mobile only (a number that may
    be either counts as not mobile: the stricter reading where it matters)."""
    try:
        parsed = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return False
    return phonenumbers.number_type(parsed) == phonenumbers.PhoneNumberType.MOBILE


def is_geographic_or_mobile(e164: str) -> bool:
    """True for fixed-line and mobile numbers (AGCOM's accepted alternative to
    the 0843/0844 prefixes); False for toll-free, premium, shared-cost, ..."""
    try:
        parsed = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return False
    kind = phonenumbers.number_type(parsed)
    return kind in (
        phonenumbers.PhoneNumberType.FIXED_LINE,
        phonenumbers.PhoneNumberType.MOBILE,
        phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE,
    )


# --- the fast path for canonical Italian numbers -------------------------------


def _desc_pattern(desc: Any) -> str | None:
    """A number description (national number pattern and possible lengths) as
    a regular expression that matches a whole run of digits exactly when
    libphonenumber's ``_is_number_matching_desc`` accepts it."""
    if desc is None or not desc.national_number_pattern:
        return None
    pattern = f"(?:{desc.national_number_pattern})(?!\\d)"
    if desc.possible_length:
        # the lengths need checking only where the pattern itself allows others
        shortest, longest = _sre_parser.parse(desc.national_number_pattern).getwidth()
        if not set(range(shortest, longest + 1)) <= set(desc.possible_length):
            lengths = "|".join(f"\\d{{{n}}}" for n in sorted(desc.possible_length))
            pattern = f"(?=(?:{lengths})(?!\\d))" + pattern
    return pattern


@lru_cache(maxsize=1)
def italian_national_pattern() -> str:
    """A lookahead that accepts a run of digits exactly when libphonenumber
    finds it a valid Italian national significant number: it matches the
    general description and one number type (``_number_type_helper`` is not
    UNKNOWN). Then ``+39`` and those digits parse to region IT and are valid.
    (A number valid only as Vatican City, +39 06698, is not matched: it takes
    the slow path, which asks libphonenumber.)"""
    return national_pattern("IT")


@lru_cache(maxsize=1)
def nanp_national_pattern() -> str:
    """A lookahead that accepts ten digits exactly when they are a valid
    national number of some region of the North American Numbering Plan
    (the US first: the commonest), by each region's own metadata as
    :func:`national_pattern` builds it. The US National Do Not Call Registry
    lists numbers of the states and the territories alike."""
    regions = sorted(phonenumbers.COUNTRY_CODE_TO_REGION_CODE[1], key=lambda r: r != "US")
    return "(?:" + "|".join(national_pattern(region) for region in regions) + ")"


@lru_cache(maxsize=32)
def national_pattern(region: str) -> str:
    """:func:`italian_national_pattern` for any region's metadata."""
    metadata: Any = phonenumbers.PhoneMetadata.metadata_for_region(region)
    general = _desc_pattern(metadata.general_desc)
    kinds = [
        metadata.mobile,  # the commonest first: the answer is the same in any order
        metadata.fixed_line,
        metadata.premium_rate,
        metadata.toll_free,
        metadata.shared_cost,
        metadata.voip,
        metadata.personal_number,
        metadata.pager,
        metadata.uan,
        metadata.voicemail,
    ]
    types = [p for p in map(_desc_pattern, kinds) if p is not None]
    assert general is not None
    return f"(?={general})(?=" + "|".join(f"(?:{p})" for p in types) + ")"


def canonical_number_pattern(region: str) -> str:
    """Canonical Italian numbers as a regular expression (the register reader
    uses it for its number field); its one group is the national number.

    ``+39`` works whatever the default region. For region IT also ``0039``
    (IT's international prefix is 00) and the national number alone, which
    libphonenumber never reads as starting with a country code when it is a
    valid national number, nor as an international prefix (no valid Italian
    number starts with 00)."""
    prefix = r"(?:\+39|0039|(?!00))" if region == "IT" else r"\+39"
    return prefix + "(" + italian_national_pattern() + r"\d+)"


@lru_cache(maxsize=8)
def _fast_number(region: str) -> re.Pattern[bytes]:
    return re.compile(canonical_number_pattern(region).encode())


def canonical_e164(raw: str, region: str) -> str | None:
    """The E.164 form of ``raw`` when it is a valid Italian number in a
    canonical form (then it equals :func:`libphonenumber_e164`), else None:
    one regular expression instead of libphonenumber's parse and validation,
    an order of magnitude faster (DEVELOPERS.md)."""
    if not raw.isascii():
        return None
    match = _fast_number(region).fullmatch(raw.encode())
    return None if match is None else "+39" + match.group(1).decode()


@lru_cache(maxsize=4096)
def calling_code(prefix: str) -> int | None:
    """The country calling code an E.164 number starts with (``prefix`` is
    its first four characters or more), or None."""
    for length in (1, 2, 3):
        digits = prefix[1 : 1 + length]
        if digits.isdigit() and int(digits) in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
            return int(digits)
    return None


def regions_of_code(code: int) -> tuple[str, ...]:
    """Every region (ISO 3166-1 alpha-2) that shares a country calling code."""
    return tuple(phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(code, ()))


def region_of(e164: str) -> str | None:
    """The region (ISO 3166-1 alpha-2) of a valid E.164 number, as
    libphonenumber's ``region_code_for_number`` answers for it, without a
    parse where that can be done: the only region of its calling code; or
    the first region whose leading digits the number starts with (``+39
    06698`` VA), else the one region told apart by validity alone (``+39 347``
    IT). In the North American plan several regions have no leading digits
    (the US, Canada): the area code decides there (``+1 212`` US, ``+1 416``
    CA, ``+1 787`` PR), and libphonenumber's answer for the first number of
    an area code is kept for the others."""
    code = calling_code(e164[:4])
    if code is None:
        return None
    regions = regions_of_code(code)
    if len(regions) == 1:
        return regions[0]
    leading, rest = _leading_regions(code)
    if len(rest) <= 1:
        national = e164[1 + len(str(code)) :]
        for region, pattern in leading:
            if pattern.match(national):
                return region
        return rest[0] if rest else None
    if code != 1:
        return _region_of_number(e164)
    area = e164[:5]
    known = _NANP_REGIONS.get(area)
    if known is not None:
        return known
    found = _region_of_number(e164)
    if found is not None and len(_NANP_REGIONS) < 4096:
        _NANP_REGIONS[area] = found
    return found


_NANP_REGIONS: dict[str, str] = {}


@lru_cache(maxsize=64)
def _leading_regions(code: int) -> tuple[tuple[tuple[str, re.Pattern[str]], ...], tuple[str, ...]]:
    """The regions of a shared calling code that libphonenumber tells apart by
    their leading digits (with those digits as a regular expression), and
    the others, told apart by validity."""
    leading, rest = [], []
    for region in regions_of_code(code):
        metadata: Any = phonenumbers.PhoneMetadata.metadata_for_region(region)
        if metadata is not None and metadata.leading_digits:
            leading.append((region, re.compile(metadata.leading_digits)))
        else:
            rest.append(region)
    return tuple(leading), tuple(rest)


@lru_cache(maxsize=65_536)
def _region_of_number(e164: str) -> str | None:
    try:
        return phonenumbers.region_code_for_number(phonenumbers.parse(e164, None))
    except phonenumbers.NumberParseException:
        return None


def is_known_region(region: str) -> bool:
    """True when libphonenumber knows ``region`` (used to validate configuration)."""
    return region in phonenumbers.SUPPORTED_REGIONS


def mask(number: str | None) -> str:
    """Mask a phone number for logs: keep the country code and first digits
    needed to tell mobile from fixed, and the last two digits.

    ``+393475555555`` becomes ``+39347*****55``. Anything too short to mask
    safely is replaced entirely.
    """
    if not number:
        return "<none>"
    if len(number) < 9:
        return "*" * len(number)
    return number[:6] + "*" * (len(number) - 8) + number[-2:]
