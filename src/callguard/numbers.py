"""Callee numbers: normalisation to E.164 and masking for logs.

Every rule keys on the E.164 form, so the same person is found whatever way the
dialer wrote the number (``+39 347 …``, ``0039…``, ``(06) …``, ``347-…``).
Phone numbers are personal data (GDPR art. 4(1)): they appear in the audit
trail, which is the evidence, but anything meant for a log goes through
:func:`mask` first.
"""

from __future__ import annotations

from functools import lru_cache

import phonenumbers

#: Longest input we hand to libphonenumber; real numbers are far shorter and
#: the library itself refuses inputs over 250 characters.
MAX_INPUT_LENGTH = 64


@lru_cache(maxsize=65_536)
def normalise(raw: str, default_region: str) -> str | None:
    """Return the E.164 form of ``raw``, or ``None`` when it is not a valid number.

    ``default_region`` (ISO 3166 alpha-2) applies to numbers written without a
    country code. "Valid" is libphonenumber's ``is_valid_number``: a number
    that cannot be assigned cannot be checked against a register, and a guard
    fails closed on what it cannot check.
    """
    if not raw or len(raw) > MAX_INPUT_LENGTH:
        return None
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
