"""The audit hash chain: every edit, drop and reorder is found, with its position."""

from __future__ import annotations

import orjson

from callguard.core.audit import GENESIS, ChainCheck, ChainHeads, Stored, digest, link, verify


def chain(partition: int, count: int, start: int = 0, prev: str = GENESIS) -> list[Stored]:
    out = []
    for n in range(count):
        value, prev = link({"intent_id": f"i-{partition}-{n}", "decision": "allow"}, prev)
        out.append(Stored(partition, start + n, value))
    return out


def test_an_intact_chain_verifies() -> None:
    records = chain(0, 5) + chain(1, 3)
    report = verify(records, {0: (4, digest(records[4].value))})
    assert report.ok and report.records == {0: 5, 1: 3}


def test_an_edited_record_breaks_the_next_link() -> None:
    records = chain(0, 5)
    edited = orjson.loads(records[2].value)
    edited["decision"] = "deny"
    records[2] = Stored(0, 2, orjson.dumps(edited))
    report = verify(records)
    assert [(p.offset, p.kind) for p in report.problems] == [(3, "broken_link")]


def test_a_dropped_record_is_found() -> None:
    records = chain(0, 5)
    del records[1]
    assert [(p.offset, p.kind) for p in verify(records).problems] == [(2, "broken_link")]


def test_reordered_records_are_found() -> None:
    records = chain(0, 5)
    records[1], records[2] = Stored(0, 1, records[2].value), Stored(0, 2, records[1].value)
    assert [p.offset for p in verify(records).problems] == [1, 2, 3]


def test_an_edited_newest_record_is_caught_by_the_checkpoint() -> None:
    records = chain(0, 3)
    head = (2, digest(records[2].value))
    records[2] = Stored(0, 2, records[2].value.replace(b"allow", b"deny!"))
    assert verify(records).ok  # nothing points at the newest record...
    report = verify(records, {0: head})  # ...but the worker's checkpoint does
    assert [(p.offset, p.kind) for p in report.problems] == [(2, "checkpoint_mismatch")]


def test_records_dropped_from_the_end_are_caught_by_the_checkpoint() -> None:
    records = chain(0, 4)
    head = (3, digest(records[3].value))
    report = verify(records[:2], {0: head})
    assert [(p.offset, p.kind) for p in report.problems] == [(3, "checkpoint_missing")]


def test_a_chain_whose_start_expired_is_checked_from_its_first_record() -> None:
    records = chain(0, 6)[2:]
    report = verify(records)
    assert report.ok and report.first_offset == {0: 2}


def test_a_forged_first_record_is_found() -> None:
    records = chain(0, 3)
    value, _ = link({"intent_id": "forged"}, "f" * 64)
    records[0] = Stored(0, 0, value)
    assert [(p.offset, p.kind) for p in verify(records).problems] == [(0, "broken_link"), (1, "broken_link")]


def test_unchained_records_are_reported() -> None:
    records = [Stored(0, 0, b'{"intent_id": "old"}'), *chain(0, 2, start=1, prev=digest(b'{"intent_id": "old"}'))]
    assert [(p.offset, p.kind) for p in verify(records).problems] == [(0, "unchained")]


async def test_chain_heads_load_once_and_a_rebalance_forces_a_reload() -> None:
    loads: list[int] = []
    tails = {0: b'{"intent_id": "last"}', 1: None}

    async def load_tail(partition: int) -> bytes | None:
        loads.append(partition)
        return tails[partition]

    chain = ChainHeads(load_tail)
    heads = await chain.load({0, 1})
    assert heads == {0: digest(tails[0]), 1: GENESIS} and loads == [0, 1]
    generation = chain.generation
    _, heads[0] = link({"intent_id": "next"}, heads[0])
    chain.advance(heads, generation)
    assert (await chain.load({0}))[0] == heads[0] and loads == [0, 1]  # known: not loaded again

    generation = chain.generation
    chain.forget()  # a rebalance while a batch was in flight
    chain.advance({0: "stale"}, generation)  # the in-flight batch must not restore its heads
    assert chain.heads == {}
    await chain.load({0})
    assert loads == [0, 1, 0]


# --- watched records (the regulator's report asks about the records it shows) ---


def watch(
    records: list[Stored], *offsets: int, start_at: int = 0
) -> dict[int, tuple[bool | None, int | None, bool | None]]:
    check = ChainCheck(watch={(0, o) for o in offsets})
    for stored in records[start_at:]:
        check.add(stored)
    report = check.finish()
    return {o: (w.linked_to_previous, w.next_offset, w.next_links_here) for (_, o), w in report.watched.items()}


def test_a_watched_record_of_an_intact_chain_is_linked_both_ways() -> None:
    records = chain(0, 5)
    assert watch(records, 0, 2, 4) == {0: (True, 1, True), 2: (True, 3, True), 4: (True, None, None)}
    check = ChainCheck(watch={(0, 2)})
    for stored in records:
        check.add(stored)
    assert check.finish().watched[(0, 2)].sha256 == digest(records[2].value)


def test_an_edited_watched_record_is_not_the_one_the_next_record_commits_to() -> None:
    records = chain(0, 5)
    records[2] = Stored(0, 2, records[2].value.replace(b"allow", b"deny!"))
    # its own link to the record before holds; the record after it no longer points at it
    assert watch(records, 1, 2, 3) == {1: (True, 2, True), 2: (True, 3, False), 3: (False, 4, True)}


def test_a_segment_that_starts_mid_partition_compares_nothing_before_its_first_record() -> None:
    records = chain(0, 5)
    assert watch(records, 2, 3, start_at=2) == {2: (None, 3, True), 3: (True, 4, True)}
    report = verify(records[2:])
    assert report.ok and report.first_offset == {0: 2} and report.last_offset == {0: 4}


def test_a_first_record_that_does_not_start_the_chain_is_not_linked() -> None:
    records = chain(0, 3, prev="1" * 64)
    assert watch(records, 0) == {0: (False, 1, True)}


def test_an_unchained_record_after_a_watched_one_does_not_commit_to_it() -> None:
    records = chain(0, 3)
    records[1] = Stored(0, 1, b"not json")
    assert watch(records, 0, 1) == {0: (True, 1, False), 1: (False, 2, False)}
