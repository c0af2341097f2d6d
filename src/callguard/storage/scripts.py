"""The Lua scripts, composed from the fragments in ``storage/lua/``.

Each per-key operation (a register bucket's lookup, counting a call against
the caps, remembering an intent, a silent-call block, a write that keeps the
newest value) is one ``local function`` in a fragment, written once. The
scripts for one Redis call it in a loop over a batch, in one atomic call;
a Redis Cluster lets a script touch one slot only, so its scripts call the
same function for one key. Scripts take every key as ``KEYS`` (a key named
by data the script reads, as its prefix in ``ARGV``): the key names live in
:mod:`callguard.storage.keys` alone.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files


@cache
def fragment(name: str) -> str:
    """The text of ``storage/lua/{name}.lua`` (shipped as package data)."""
    return files("callguard.storage").joinpath("lua", f"{name}.lua").read_text(encoding="utf-8")


def compose(*names: str) -> str:
    """One script: the fragments in order (functions first, the body last)."""
    return "".join(fragment(name) for name in names)


#: ``register(key, suffix, client)``, the register half of a lookup (set
#: ``reg_hidden_key`` or ``reg_hidden`` before calling it).
REGISTER_LOOKUP = compose("bytes", "register_lookup")

# --- one Redis: a batch in one atomic call ----------------------------------------
LOOKUP = REGISTER_LOOKUP + fragment("lookup")
RECORD_ALLOWED = compose("allowed", "record_allowed")
APPLY_OUTCOMES = compose("outcome", "apply_outcomes")
WRITE_IF_NOT_OLDER = compose("write_field", "write_if_not_older")

# --- a Redis Cluster: the same functions, one key a call ----------------------------
LOOKUP_ONE = REGISTER_LOOKUP + fragment("lookup_one")
RECORD_CALLS = compose("allowed", "record_calls")
REMEMBER = compose("allowed", "remember")
BLOCK_SILENT = compose("outcome", "block_silent")
WRITE_ONE = compose("write_field", "write_one")
#: a cluster's outcome is claimed, then finished, so that a crash between its
#: steps is redone by the redelivered report (callguard.storage.cluster)
CLAIM_OUTCOME = fragment("claim_outcome")
FINISH_OUTCOME = fragment("finish_outcome")

# --- register loads (one bucket a call on either) -------------------------------------
_VERSIONS = ("bytes", "bucket_versions")
STAGE = compose(*_VERSIONS, "stage")
COMPACT = compose(*_VERSIONS, "compact")
DROP = compose(*_VERSIONS, "drop")
COMMIT = fragment("commit")
RENEW = fragment("renew")
RELEASE = fragment("release")
