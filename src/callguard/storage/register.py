"""The opposition register in Redis: compact buckets, atomic loads, batched lookups.

Layout
======

A number's register results live in the bucket of its E.164 form without the
last four digits: one Redis string per 10 000 consecutive numbers::

    cg:reg:{+39348123}      string  the results of +39 348 123 0000 … 9999, every scope
    cg:register:hidden      set     ids of loads staged but not committed: readers skip them
    cg:register:next        string  the last load id handed out (INCR)
    cg:register:lock        string  the running load's token (SET NX PX, renewed): one load at a time
    cg:register:census      hash    "{scope}|{as_of}" -> numbers whose current result is that one
    cg:register:loads       list    one JSON line per register load (newest first)

The hash tag (the part in braces) is the bucket prefix itself, so the layout
works unchanged on Redis Cluster: every read or write of a number's results
touches exactly one key and one slot, and a batch's lookups can be grouped per
node by slot. (A coarser tag, e.g. ``{+39348}``, would put 100 buckets in one
slot for no gain: nothing ever needs two buckets atomically.)

How a bucket's value is encoded: :mod:`callguard.storage.register_codec`;
how a load's rows wait in temporary files: :mod:`callguard.storage.register_spill`;
how a load is staged and made visible at once:
:mod:`callguard.storage.register_load`. A reader takes, per bucket, the last
version whose id is not hidden: one lookup script call is one atomic
snapshot of every bucket it reads, so it sees a load whole or not at all.
This module is what the rest of callguard imports, and the readers for
tests and tools.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import redis

from callguard.core.facts import RegisterResult
from callguard.storage.connection import is_cluster
from callguard.storage.keys import HIDDEN_KEY, register_key
from callguard.storage.register_codec import (
    DIRECTORY_SCOPE,
    EPOCH,
    MAX_GENERATION,
    NAMED_PREFIX,
    OPPOSED,
    SUFFIX_SPACE,
    cover_field,
    day_number,
    e164_number,
    encode_segment,
    find,
    merge,
    payload,
    register_result,
    registered_code,
    segments,
    version,
    versions,
    visible,
)
from callguard.storage.register_load import (
    CLUSTER_GRACE,
    Coverage,
    LoadPlan,
    LoadResult,
    RegisterError,
    Staged,
    load,
    stage_partition,
)
from callguard.storage.register_spill import (
    PartitionWriter,
    RegisterRows,
    cpu_count,
    pack_row,
    partitions_for,
    process_context,
    read_spilled_partition,
)

__all__ = [
    "CLUSTER_GRACE",
    "DIRECTORY_SCOPE",
    "EPOCH",
    "MAX_GENERATION",
    "NAMED_PREFIX",
    "OPPOSED",
    "SUFFIX_SPACE",
    "Coverage",
    "LoadPlan",
    "LoadResult",
    "PartitionWriter",
    "RegisterError",
    "RegisterRows",
    "Staged",
    "cover_field",
    "cpu_count",
    "day_number",
    "e164_number",
    "encode_segment",
    "find",
    "load",
    "merge",
    "pack_row",
    "partitions_for",
    "payload",
    "process_context",
    "read_results",
    "read_spilled_partition",
    "register_result",
    "registered_code",
    "results",
    "segments",
    "stage_partition",
    "version",
    "versions",
    "visible",
]


# --- reading (tests, tools) ----------------------------------------------------------


def _results(value: bytes | None, hidden: Iterable[bytes], suffix: int) -> dict[str, RegisterResult]:
    seen = visible(value, {int(x) for x in hidden})
    if seen is None:
        return {}
    return {scope: register_result(answer, scope) for scope, answer in find(seen[1], suffix).items()}


async def results(client: Any, e164: str) -> dict[str, RegisterResult]:
    """Every scope's current result for one number, as readers see it
    (``client`` must not decode responses)."""
    key, suffix = register_key(e164)
    async with client.pipeline(transaction=not is_cluster(client)) as pipe:
        pipe.get(key)
        pipe.smembers(HIDDEN_KEY)
        value, hidden = await pipe.execute()
    return _results(value, hidden, suffix)


def read_results(client: redis.Redis, e164: str) -> dict[str, RegisterResult]:
    """The synchronous twin of :func:`results` (tests, tools); ``client`` may decode responses."""
    pool = client.connection_pool
    kwargs = {**pool.connection_kwargs, "decode_responses": False}
    raw = redis.Redis(connection_pool=redis.ConnectionPool(connection_class=pool.connection_class, **kwargs))
    try:
        key, suffix = register_key(e164)
        with raw.pipeline(transaction=True) as pipe:
            pipe.get(key)
            pipe.smembers(HIDDEN_KEY)
            value, hidden = pipe.execute()
    finally:
        raw.close()
    return _results(value, hidden, suffix)
