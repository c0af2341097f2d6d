"""Every Redis key callguard reads or writes, in one place.

The names are the data's address on the server: a renamed key is data lost
to a running fleet (workers of the previous version read the same keys during
a rolling upgrade), so they change only with a migration. The Lua scripts
write no key name of their own: they get their keys as ``KEYS`` (or, for a
key named by data a script reads, its prefix as an argument).

Layout (every key under the ``cg:`` prefix)::

    cg:reg:{e164 minus last 4 digits}   string register results of 10 000 numbers, every scope, packed
                                              (about 3.4 bytes a number; see callguard.storage.register)
    cg:register:hidden                  set   ids of loads staged but not committed: readers skip them
    cg:register:next                    string the last load id handed out (INCR)
    cg:register:lock                    string the running load's token (SET NX PX, renewed): one load at a time
    cg:register:census                  hash  "{scope}|{as_of}" -> numbers whose current result is that one
    cg:register:loads                   list  one JSON line per register load (newest first)
    cg:register:cover:{name}            hash  "+1NPA" or "*" -> "{generation}|{as_of}": a named register's
                                              coverage (callguard.storage.register.NAMED_PREFIX)
    cg:callee:{e164}                    hash  "consent:{client}"   -> "{granted_at}|{ends_at}"
                                              "contract:{client}"  -> "{granted_at}|{ends_at}"
                                              (and "request:", "ebr_transaction:", "ebr_inquiry:")
                                              "disconnected"       -> "{YYYY-MM-DD}" last permanent disconnection
                                              "optout:{client|*}"  -> "{at}"
                                              "calls:{client}"     -> "{ms}:{ref},…" calls allowed (frequency caps)
                                              "silent:{client}"    -> "{at}" latest silent/abandoned call
    cg:intent:{intent_id}               hash  callee, client, campaign[, outcome]: an allowed intent,
                                              kept OUTCOME_MEMORY for its outcome
    cg:outcomes:{YYYY-MM-DD}            hash  "{campaign}|{outcome}" -> count (Rome days, kept 40 days)
    cg:operators                        hash  "{operator_id}"      -> "{status}|{valid_from}|{valid_until}|{caller_ids;…}"
    cg:mandates                         hash  "{client_id}|{operator_id}" -> "{valid_from}|{valid_until};…"
    cg:meta                             hash  "operators_version", "register_last_load", counters "consents", …
    cg:audit:heads                      hash  "{audit partition}"   -> "{offset, 20 digits}|{sha256 of that record}"
    cg:tokens, cg:tokens:names, cg:tokens:used   hashes of the check API's tokens (see below)

A register bucket's hash tag (the part in braces) is the bucket prefix itself,
so the layout works unchanged on Redis Cluster: every read or write of a
number's results touches exactly one key and one slot.
"""

from __future__ import annotations

from datetime import date

PREFIX = "cg:"

OPERATORS_KEY = PREFIX + "operators"
#: ``{client_id}|{operator_id}`` -> ``{valid_from}|{valid_until};…`` (``callguard mandates load``).
MANDATES_KEY = PREFIX + "mandates"
META_KEY = PREFIX + "meta"
AUDIT_HEADS_KEY = PREFIX + "audit:heads"
#: ``POST /v1/check`` tokens (callguard.core.tokens): SHA-256 of the token -> its grant (JSON);
#: name -> that hash; name -> when last used (RFC 3339, written at most once a minute a worker).
TOKENS_KEY = PREFIX + "tokens"
TOKEN_NAMES_KEY = PREFIX + "tokens:names"
TOKENS_USED_KEY = PREFIX + "tokens:used"

CALLEE_PREFIX = PREFIX + "callee:"
INTENT_PREFIX = PREFIX + "intent:"
OUTCOMES_PREFIX = PREFIX + "outcomes:"

# --- the register (callguard.storage.register) ---------------------------------

BUCKET_PREFIX = PREFIX + "reg:"
HIDDEN_KEY = PREFIX + "register:hidden"
NEXT_ID_KEY = PREFIX + "register:next"
LOCK_KEY = PREFIX + "register:lock"
#: ``{scope}|{as_of}`` -> how many numbers hold a current result of that scope and day (kept by the loaders).
CENSUS_KEY = PREFIX + "register:census"
LOADS_KEY = PREFIX + "register:loads"
COVER_PREFIX = PREFIX + "register:cover:"

#: digits of a number kept inside its register bucket (10 000 numbers a bucket)
SUFFIX_DIGITS = 4


#: The fields of a callee hash a lookup reads for client {c}, in the order of
#: its reply (lua/lookup.lua names the same ones; the cluster asks for these).
CALLEE_FIELDS = (
    "consent:{c}",
    "contract:{c}",
    "optout:{c}",
    "optout:*",
    "calls:{c}",
    "silent:{c}",
    "request:{c}",
    "ebr_transaction:{c}",
    "ebr_inquiry:{c}",
    "disconnected",
)


def callee_key(e164: str) -> str:
    return CALLEE_PREFIX + e164


def intent_key(intent_id: str) -> str:
    return INTENT_PREFIX + intent_id


def outcome_days_key(day: date) -> str:
    """The outcome counters of one (Rome) day."""
    return OUTCOMES_PREFIX + day.isoformat()


def staging_key(key: str, cluster: bool = False) -> str:
    """Where a list is staged before it replaces ``key`` by ``RENAME``; on a
    cluster in ``key``'s own slot, so that the rename stays atomic."""
    return ("{" + key + "}" if cluster else key) + ":staging"


def register_key(e164: str) -> tuple[str, int]:
    """The bucket key of a number and its suffix (last four digits)."""
    return BUCKET_PREFIX + "{" + e164[:-SUFFIX_DIGITS] + "}", int(e164[-SUFFIX_DIGITS:])


def bucket_key(bucket: int) -> str:
    """The key of bucket ``bucket`` (the E.164 digits without the last four,
    as an integer: E.164 digits never start with 0, so this is lossless)."""
    return f"{BUCKET_PREFIX}{{+{bucket}}}"


def bucket_e164(key: str) -> str:
    """The number a bucket key's hash tag names, with the suffix digits zeroed."""
    return key[key.index("{") + 1 : key.index("}")] + "0" * SUFFIX_DIGITS


def cover_key(name: str) -> str:
    """The coverage hash of a named register."""
    return COVER_PREFIX + "{" + name + "}"
