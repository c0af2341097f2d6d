"""The register's packed buckets, its loads and its lookups.

Encoding and merging are checked as pure functions; the Lua lookup against its
Python twin, loads, scopes, the census, atomicity (a reader running during a
real load) and abandoned loads on the session's real Redis. The fast register
reader is checked against libphonenumber and against the line-by-line reader.

Numbers of this module: +39 352 …; its loads use client scopes ``reg-…`` only
(the census of ``*`` belongs to the end-to-end modules).
"""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
import tempfile
from collections import Counter
from datetime import date, timedelta
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from callguard.core.facts import RegisterResult
from callguard.core.numbers import canonical_e164, libphonenumber_e164, normalise
from callguard.storage import register as reg
from callguard.storage.keys import CENSUS_KEY, HIDDEN_KEY, LOCK_KEY, NEXT_ID_KEY, bucket_key, register_key
from callguard.storage.loaders import (
    REGISTER_COLUMNS,
    LoadError,
    _parse_file,
    _register_row_parser,
    parse_register,
)
from callguard.storage.register import OPPOSED, encode_segment, find, merge, payload, segments
from callguard.storage.scripts import REGISTER_LOOKUP
from callguard.storage.stores import Query, Stores
from tests.conftest import env_for, today

TODAY = date.fromisoformat(today())
DAY = reg.day_number(TODAY)


def e164(n: int) -> str:
    """The n-th number of this module's range, +39 352 000 0000 onwards."""
    return f"+39352{n:07d}"


# --- encoding and merging (pure) ------------------------------------------------

payloads = st.builds(
    lambda opposed, code: (OPPOSED if opposed else 0) | code,
    st.booleans(),
    st.one_of(st.just(0), st.integers(1, 0x7FFF), st.integers(19_000, 21_000)),
)


@st.composite
def segment_rows(draw: st.DrawFn) -> tuple[list[int], list[int]]:
    size = draw(st.one_of(st.integers(0, 120), st.integers(0, 3000)))
    suffixes = sorted(draw(st.sets(st.integers(0, reg.SUFFIX_SPACE - 1), max_size=size)))
    return suffixes, [draw(payloads) for _ in suffixes]


@settings(max_examples=300, deadline=None)
@given(rows=segment_rows(), scope=st.sampled_from([b"*", b"acme", "clïent".encode()]), day=st.integers(0, 0xFFFF))
def test_a_segment_decodes_to_what_was_encoded(rows: tuple[list[int], list[int]], scope: bytes, day: int) -> None:
    suffixes, values = rows
    data = encode_segment(scope, day, suffixes, values)
    (seg,) = segments(data)
    assert (seg.scope, seg.day, seg.n) == (scope, day, len(suffixes))
    assert seg.entries() == (suffixes, values)
    assert len(data) <= 7 + len(scope) + 4 * len(suffixes)  # never bigger than the plain format
    for suffix, value in list(zip(suffixes, values, strict=True))[:20]:
        assert find(data, suffix) == {scope.decode(): day << 16 | value}
    absent = set(range(50)) - set(suffixes)
    for suffix in absent:
        assert find(data, suffix) == {}


def results(body: bytes | None, client: str | None = None) -> dict[int, dict[str, tuple[int, int]]]:
    """suffix -> scope -> (as_of day, payload), for every suffix stored."""
    out: dict[int, dict[str, tuple[int, int]]] = {}
    for seg in segments(body or b""):
        for suffix, value in zip(*seg.entries(), strict=True):
            out.setdefault(suffix, {})[seg.scope.decode()] = (seg.day, value)
    return out


def test_the_most_recent_consultation_wins_when_merging() -> None:
    opposed = payload(True, date(2024, 1, 10))
    clear = payload(False, None)
    body, skipped, census = merge(None, b"*", 100, [1, 2, 3], [opposed] * 3)
    assert skipped == [] and census == Counter({100: 3})

    # an older consultation changes nothing it also covers, adds what it alone covers
    older, skipped, census = merge(body, b"*", 90, [2, 4], [clear, clear])
    assert skipped == [2] and census == Counter({90: 1})
    assert results(older) == {1: {"*": (100, opposed)}, 2: {"*": (100, opposed)}, 3: {"*": (100, opposed)},
                              4: {"*": (90, clear)}}  # fmt: skip

    # a reload of the same day replaces
    same, skipped, census = merge(body, b"*", 100, [2], [clear])
    assert skipped == [] and +census == Counter()
    assert results(same)[2] == {"*": (100, clear)} and results(same)[1] == {"*": (100, opposed)}

    # a newer one moves the numbers it covers to its day
    newer, skipped, census = merge(body, b"*", 110, [1, 9], [clear, clear])
    assert skipped == [] and census == Counter({100: -1, 110: 2})
    assert results(newer) == {1: {"*": (110, clear)}, 2: {"*": (100, opposed)}, 3: {"*": (100, opposed)},
                              9: {"*": (110, clear)}}  # fmt: skip

    # a full reload drops the old day's segment
    full, _, census = merge(body, b"*", 120, [1, 2, 3], [clear] * 3)
    assert census == Counter({100: -3, 120: 3}) and [s.day for s in segments(full)] == [120]

    # another scope is kept apart, and the lookup finds both
    both, skipped, census = merge(body, b"acme", 50, [1], [clear])
    assert census == Counter({50: 1})
    assert results(both)[1] == {"*": (100, opposed), "acme": (50, clear)}
    assert find(both, 1, "acme") == {"*": 100 << 16 | opposed, "acme": 50 << 16 | clear}
    assert find(both, 1, "beta") == {"*": 100 << 16 | opposed}
    assert merge(both, b"*", 90, [1, 2, 3], [clear] * 3)[0] is None  # all older: nothing to write


# --- the Lua lookup equals its Python twin ----------------------------------------

LUA_TWIN = REGISTER_LOOKUP + "reg_hidden_key = KEYS[2]\nreturn register(KEYS[1], tonumber(ARGV[1]), ARGV[2])"
HIDDEN_TEST_ID = 4_000_000_002  # far above any load id INCR hands out in a test session


@pytest.fixture(scope="module")
def raw(embedded) -> redis.Redis:
    client = redis.Redis.from_url(embedded.redis_url)
    client.sadd(HIDDEN_KEY, HIDDEN_TEST_ID)
    return client


@st.composite
def bucket_values(draw: st.DrawFn) -> bytes:
    parts = []
    for load_id in draw(
        st.lists(st.sampled_from([4_000_000_001, HIDDEN_TEST_ID, 4_000_000_003]), min_size=1, max_size=3)
    ):
        segs = []
        scopes = [b"*", b"acme", b"beta", reg.DIRECTORY_SCOPE.encode(), b"@us-dnc", b"@us-fl-dnc"]
        for scope in draw(st.sets(st.sampled_from(scopes), min_size=1)):
            suffixes, values = draw(segment_rows())
            segs.append(encode_segment(scope, draw(st.integers(0, 0xFFFF)), suffixes, values))
        parts.append(reg.version(load_id, segs))
    return b"".join(parts)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=bucket_values(), probes=st.lists(st.integers(0, reg.SUFFIX_SPACE - 1), max_size=30), data=st.data())
def test_the_lua_lookup_agrees_with_python(
    raw: redis.Redis, value: bytes, probes: list[int], data: st.DataObject
) -> None:
    key = bucket_key(39352999)
    raw.set(key, value)
    seen = reg.visible(value, {HIDDEN_TEST_ID})
    stored = [s for seg in segments(seen[1]) for s in seg.suffixes()] if seen else []
    probes += data.draw(st.lists(st.sampled_from(stored), max_size=30)) if stored else []
    lookup = raw.register_script(LUA_TWIN)
    for suffix in probes:
        # the directory extract's entry (its generation in the day field) is answered for every client
        entry = find(seen[1], suffix).get(reg.DIRECTORY_SCOPE) if seen else None
        for client in ("acme", "beta", "*", "@us-dnc"):
            everyone, mine, listed, named = lookup(keys=[key, HIDDEN_KEY], args=[suffix, client])
            expected = find(seen[1], suffix, client) if seen else {}
            assert everyone == expected.get("*")
            # a client named like a register never reads the register's entries as its own
            own = client if client != "*" and not client.startswith("@") else None
            assert mine == (expected.get(own) if own else None)
            assert listed == (None if entry is None else entry >> 16)
            # the named registers (scope "@NAME") that list the number, for every client alike
            wanted = {scope: value for scope, value in expected.items() if scope.startswith("@")}
            assert dict(zip([s.decode() for s in named[::2]], named[1::2], strict=True)) == wanted
    raw.delete(key)


def test_the_lua_lookup_reads_an_unknown_registration_day_in_a_packed_segment(raw: redis.Redis) -> None:
    """A packed segment stores registration days from its earliest one (base); an
    unknown day (code 0) must stay unknown, never become the day before the base,
    which would let a consent given after it lift the register."""
    suffixes = list(range(0, 3000, 3))
    values = [OPPOSED | (19_000 + n % 500) if n % 2 else OPPOSED for n in range(len(suffixes))]  # every other undated
    segment = encode_segment(b"*", 20_000, suffixes, values)
    assert len(segment) < 7 + 1 + 4 * len(suffixes)  # packed: smaller than the plain format
    key = bucket_key(39352997)
    raw.set(key, reg.version(4_000_000_001, [segment]))
    lookup = raw.register_script(LUA_TWIN)
    for n in (0, 1, 2, 3):
        everyone, *_ = lookup(keys=[key, HIDDEN_KEY], args=[suffixes[n], "acme"])
        assert everyone == 20_000 << 16 | values[n]
    raw.delete(key)


def test_the_lua_lookup_of_a_missing_bucket_answers_nothing_in_every_field(raw: redis.Redis) -> None:
    """A number whose bucket holds nothing (no result, no directory entry, no
    named register) answers the same four fields as any other: the batch
    lookup unpacks four."""
    key = bucket_key(39352998)
    raw.delete(key)
    assert raw.register_script(LUA_TWIN)(keys=[key, HIDDEN_KEY], args=[1, "acme"]) == [None, None, None, []]


# --- loads through the stores --------------------------------------------------------


def census(embedded, scope: str) -> dict[date, int]:
    raw_census = redis.Redis.from_url(embedded.redis_url, decode_responses=True).hgetall(CENSUS_KEY)
    return {
        date.fromisoformat(f.rpartition("|")[2]): int(n) for f, n in raw_census.items() if f.rpartition("|")[0] == scope
    }


async def test_loads_accumulate_and_the_most_recent_wins_per_scope(stores: Stores, embedded) -> None:
    numbers = [e164(n) for n in range(10)]
    d = TODAY - timedelta(days=2)
    registered = date(2024, 1, 1)
    assert await stores.add_register_results([(n, True, registered) for n in numbers], d, "reg-newest") == 10
    assert census(embedded, "reg-newest") == {d: 10}
    # older: nothing applied
    assert (
        await stores.add_register_results([(n, False, None) for n in numbers[:5]], d - timedelta(days=3), "reg-newest")
        == 0
    )
    # the same day again: replaces
    assert await stores.add_register_results([(numbers[5], False, None)], d, "reg-newest") == 1
    assert census(embedded, "reg-newest") == {d: 10}
    # newer, for three numbers
    assert (
        await stores.add_register_results([(n, False, None) for n in numbers[:3]], d + timedelta(days=1), "reg-newest")
        == 3
    )
    assert census(embedded, "reg-newest") == {d: 7, d + timedelta(days=1): 3}
    # another client's results are its own
    assert await stores.add_register_results([(numbers[0], True, None)], TODAY, "reg-other") == 1

    assert (await stores.register_results(numbers[0])) == {
        "reg-newest": RegisterResult(False, d + timedelta(days=1), None, "reg-newest"),
        "reg-other": RegisterResult(True, TODAY, None, "reg-other"),
    }
    facts = await stores.lookup(
        [Query(n, "reg-newest", "op") for n in numbers] + [Query(numbers[0], "reg-other", "op")]
    )
    assert [f.register for f in facts[:10]] == (
        [(RegisterResult(False, d + timedelta(days=1), None, "reg-newest"),)] * 3
        + [(RegisterResult(True, d, registered, "reg-newest"),)] * 2
        + [(RegisterResult(False, d, None, "reg-newest"),)]
        + [(RegisterResult(True, d, registered, "reg-newest"),)] * 4
    )
    assert facts[10].register == (RegisterResult(True, TODAY, None, "reg-other"),)
    assert (await stores.lookup([Query(e164(99), "reg-newest", "op")]))[0].register == ()


async def test_within_one_load_the_last_row_of_a_number_wins(stores: Stores, embedded) -> None:
    rows = [(e164(20), True, None), (e164(21), True, None), (e164(20), False, None), (e164(21), True, date(2025, 1, 2))]
    assert await stores.add_register_results(rows, TODAY, "reg-dup") == 4  # rows applied, as before
    assert census(embedded, "reg-dup") == {TODAY: 2}
    assert await stores.register_results(e164(20)) == {"reg-dup": RegisterResult(False, TODAY, None, "reg-dup")}
    assert (await stores.register_results(e164(21)))["reg-dup"].registered_at == date(2025, 1, 2)


def csv_of(path: Path, numbers: range, status: str, registered: str = "") -> Path:
    with path.open("w") as handle:
        handle.write("number,status,registered_at\n")
        handle.writelines(f"{e164(n)},{status},{registered}\n" for n in numbers)
    return path


def spread(count: int, space: int = 10_000_000) -> range:
    """``count`` numbers spread over every bucket of +39 352 (1 000 buckets)."""
    return range(0, space, space // count)


async def test_a_reader_never_sees_half_a_load(stores: Stores, embedded, tmp_path: Path) -> None:
    """A real ``callguard register load`` runs while this test looks numbers up
    in batches spread over every bucket it writes: each batch sees the register
    before the load or after it, never a mix, also while some buckets already
    hold the staged new version and others not yet."""
    numbers = spread(300_000)
    old_day, new_day = TODAY - timedelta(days=3), TODAY - timedelta(days=1)
    client = "reg-swap"
    await stores.add_register_results([(e164(n), False, None) for n in numbers], old_day, client)
    path = csv_of(tmp_path / "new.csv", numbers, "opposed", "2024-05-06")
    raw = aioredis.Redis.from_url(embedded.redis_url)
    load_id = int(await raw.get(NEXT_ID_KEY) or 0) + 1
    env = env_for(embedded.broker_url, embedded.redis_url)
    process = subprocess.Popen(
        [sys.executable, "-m", "callguard", "register", "load", str(path), "--as-of", str(new_day), "--client", client],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    rng = random.Random(5)
    sample = list(numbers)
    seen: Counter[str] = Counter()
    try:
        while process.poll() is None:
            batch = [e164(n) for n in rng.sample(sample, 400)]
            keys = list(dict.fromkeys(register_key(n)[0] for n in batch))
            async with raw.pipeline(transaction=False) as pipe:
                pipe.sismember(HIDDEN_KEY, load_id)
                for key in keys:
                    pipe.get(key)
                before, *values = await pipe.execute()
            staged = sum(any(v == load_id for v, _, _ in reg.versions(value)) for value in values)
            facts = await stores.lookup([Query(n, client, "op") for n in batch])
            after = await raw.sismember(HIDDEN_KEY, load_id)
            states = {(f.register[0].opposed, f.register[0].as_of) for f in facts}
            assert states in ({(False, old_day)}, {(True, new_day)}), states  # never a mix
            if before and after and 0 < staged < len(keys):
                seen["half-staged"] += 1
                assert states == {(False, old_day)}  # staged but not committed: invisible
            seen["old" if states == {(False, old_day)} else "new"] += 1
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
        await raw.aclose()
    assert process.returncode == 0, err
    assert seen["half-staged"] > 0, seen  # the reader really ran against a half-written register
    facts = await stores.lookup([Query(e164(n), client, "op") for n in sample[:: len(sample) // 500]])
    assert {(f.register[0].opposed, f.register[0].as_of) for f in facts} == {(True, new_day)}
    assert census(embedded, client) == {new_day: len(numbers)}


async def test_a_failed_load_changes_nothing(stores: Stores, embedded) -> None:
    numbers = spread(3_000)
    day = TODAY - timedelta(days=4)
    await stores.add_register_results([(e164(n), False, None) for n in numbers], day, "reg-fail")
    before = census(embedded, "reg-fail")

    async def boom() -> None:
        raise RuntimeError("disk on fire")

    rows = reg.RegisterRows.from_rows([(e164(n), True, None) for n in numbers], expected=len(numbers))
    try:
        with pytest.raises(RuntimeError, match="disk on fire"):
            await reg.load(stores.raw, rows, TODAY, "reg-fail", fail_after_staging=boom)
    finally:
        rows.cleanup()
    assert census(embedded, "reg-fail") == before
    raw = redis.Redis.from_url(embedded.redis_url)
    assert not raw.exists(LOCK_KEY)
    for n in numbers[::100]:  # the staged versions were removed again
        assert [v for v, _, _ in reg.versions(raw.get(register_key(e164(n))[0]))] != []
        assert (await stores.register_results(e164(n)))["reg-fail"] == RegisterResult(False, day, None, "reg-fail")
        assert len(reg.versions(raw.get(register_key(e164(n))[0]))) == 1


async def test_an_abandoned_load_stays_invisible_and_the_next_one_cleans_up(stores: Stores, embedded) -> None:
    """A load killed after staging part of its buckets (its lease then runs
    out): readers never see its versions; the next load drops them."""
    numbers = spread(20_000)
    day = TODAY - timedelta(days=5)
    await stores.add_register_results([(e164(n), False, None) for n in numbers], day, "reg-crash")
    client = stores.raw
    # what a load does up to its commit, for half of its partitions, then nothing: killed
    rows = reg.RegisterRows.from_rows([(e164(n), True, None) for n in numbers], expected=400_000)
    try:
        assert rows.partitions > 2
        assert await client.set(LOCK_KEY, "killed", nx=True, px=60_000)
        load_id = int(await client.incr(NEXT_ID_KEY))
        await client.sadd(HIDDEN_KEY, load_id)
        hidden = frozenset(int(x) for x in await client.smembers(HIDDEN_KEY))
        plan = reg.LoadPlan(str(rows.directory), b"reg-crash", reg.day_number(TODAY), load_id, hidden)
        staged = reg.Staged()
        for part in range(rows.partitions // 2):
            staged.add(await reg.stage_partition(client, plan, part))
    finally:
        rows.cleanup()
    assert staged.keys
    await client.delete(LOCK_KEY)  # the lease ran out
    raw = redis.Redis.from_url(embedded.redis_url)
    assert any(len(reg.versions(raw.get(key))) == 2 for key in staged.keys)
    facts = await stores.lookup([Query(e164(n), "reg-crash", "op") for n in numbers[::40]])
    assert {(f.register[0].opposed, f.register[0].as_of) for f in facts} == {(False, day)}

    later = TODAY - timedelta(days=1)
    assert await stores.add_register_results([(e164(n), True, None) for n in numbers], later, "reg-crash") == len(
        numbers
    )
    facts = await stores.lookup([Query(e164(n), "reg-crash", "op") for n in numbers[::40]])
    assert {(f.register[0].opposed, f.register[0].as_of) for f in facts} == {(True, later)}
    assert all(len(reg.versions(raw.get(key))) == 1 for key in staged.keys)  # the abandoned versions are gone
    assert census(embedded, "reg-crash") == {later: len(numbers)}


async def test_a_second_load_waits_for_the_first(stores: Stores, embedded) -> None:
    client = stores.raw
    assert await client.set(LOCK_KEY, "another", nx=True, px=60_000)
    told: list[str] = []
    rows = reg.RegisterRows.from_rows([(e164(30), True, None)])
    try:
        task = asyncio.create_task(stores.load_register(rows, TODAY, "reg-wait", waiting=lambda: told.append("wait")))
        await asyncio.sleep(0.5)
        assert not task.done() and told == ["wait"]
    finally:
        await client.delete(LOCK_KEY)
    try:
        assert (await asyncio.wait_for(task, 10)).applied == 1 and told == ["wait"]
    finally:
        rows.cleanup()


# --- the fast register reader ----------------------------------------------------------

#: leading digits that reach every Italian number type, Vatican City and invalid ranges
LEADS = ["3", "31", "32", "33", "38", "39", "390", "393", "399", "30", "43", "0", "02", "06", "066", "0669", "06698",
         "08", "0831", "0878", "00", "80", "800", "803", "84", "848", "89", "892", "893", "895", "899", "1", "144",
         "178", "199", "55", "70", "9", "7"]  # fmt: skip


@settings(max_examples=3000, deadline=None)
@given(
    prefix=st.sampled_from(["+39", "0039", "", "+390", "39", "+39 ", " +39", "+ 39", "0039-"]),
    lead=st.sampled_from(LEADS),
    tail=st.text("0123456789", max_size=12),
    region=st.sampled_from(["IT", "US", "GB", "SM", "VA"]),
)
def test_normalise_and_its_fast_path_equal_libphonenumber(prefix: str, lead: str, tail: str, region: str) -> None:
    raw = prefix + lead + tail
    fast = canonical_e164(raw, region)
    expected = libphonenumber_e164(raw, region)
    assert normalise(raw, region) == expected  # the guard's normalise, fast path or not
    if fast is not None:
        assert fast == expected
    elif prefix == "+39" and expected == raw and not raw.startswith("+3906698"):
        pytest.fail(f"{raw}: valid, canonical and Italian, but not on the fast path")


def test_the_fast_path_equals_libphonenumber_on_every_three_digit_prefix() -> None:
    rng = random.Random(11)
    checked = fast = 0
    for lead in range(1000):
        for length in range(5, 14):
            for fill in ("0", "9", None):
                body = f"{lead:03d}"[:length]
                body += "".join(fill or rng.choice("0123456789") for _ in range(length - len(body)))
                for raw, region in ((f"+39{body}", "IT"), (f"0039{body}", "IT"), (body, "IT"), (f"+39{body}", "US")):
                    answer = canonical_e164(raw, region)
                    expected = libphonenumber_e164(raw, region)
                    checked += 1
                    if answer is not None:
                        fast += 1
                        assert answer == expected, raw
                    elif region == "IT" and raw.startswith("+39") and expected == raw:
                        assert raw.startswith("+3906698"), raw  # only Vatican City numbers leave the fast path
    assert fast > 5_000 and checked == 108_000  # the fast path is really taken


LINES = [
    "+393471234567,opposed,2024-01-02", "+393471234568,clear,", "3471234569,clear,", "00393471234570,opposed,",
    "+390612345678,clear,", "0612345679,opposed,2023-12-31", "+393912345678,clear,", "3912345679,clear,",
    " +393471234571 , opposed , 2024-02-03 ", "+393471234572,clear", "+393471234567,clear,",
    "+39 347 123 4573,clear,", "(06) 2222 3333,opposed,", "347-1234574,clear,", "+390669812345,clear,",
    '"+393471234575",opposed,2024-03-04', '"+39347123 4576",clear,', "+393471234577,opposed,1969-12-31",
    "+393471234578,opposed,2024-02-30", "+393471234579,maybe,", "+39347,clear,", "not a number,clear,",
    "+393471234580,clear,,extra", "\x00,clear,", "+393471234581,CLEAR,", "+393471234582,opposed,20240102",
    "+393471234583,opposed,2024-1-02", "", "   ", "+1 202 555 0147,clear,", "🙂,opposed,", "\ufeff+393471234584,clear,",
]  # fmt: skip
RARE = ['"+39347123\n4585",clear,', "+393471234586,clear,\r+393471234587,clear,"]


def reference(path: Path, region: str) -> tuple[list[tuple[str, bool, date | None]], list[str], int]:
    """The line-by-line reader (csv module and libphonenumber for every line)."""
    try:
        parsed = _parse_file(path, *REGISTER_COLUMNS, _register_row_parser(region), "register")
    except LoadError as exc:
        return [], exc.errors, exc.error_count
    assert isinstance(parsed.rows, list)
    return parsed.rows, [], 0


def spilled(rows: reg.RegisterRows) -> list[list[int]]:
    return [reg.read_spilled_partition(rows.directory, part) for part in range(rows.partitions)]


def check_against_reference(path: Path, region: str, **options: int) -> None:
    rows, errors, count = reference(path, region)
    try:
        parsed = parse_register(path, region, **options)
    except LoadError as exc:
        assert (exc.errors, exc.error_count) == (errors, count)
        return
    assert not errors
    try:
        assert isinstance(parsed.rows, reg.RegisterRows)
        expected: list[list[int]] = [[] for _ in range(parsed.rows.partitions)]
        for number, opposed, registered_at in rows:
            packed = reg.pack_row(reg.e164_number(number), payload(opposed, registered_at))
            expected[packed // (reg.SUFFIX_SPACE << 16) % parsed.rows.partitions].append(packed)
        assert spilled(parsed.rows) == expected
        assert (parsed.rows.rows, parsed.rows.opposed) == (len(rows), sum(o for _, o, _ in rows))
    finally:
        parsed.rows.cleanup()


@st.composite
def register_files(draw: st.DrawFn) -> tuple[str, str]:
    header = draw(st.sampled_from(["number,status,registered_at", "status,number,registered_at", "number,status",
                                   "registered_at,number,status", "\ufeffnumber,status,registered_at", "number,stat"]))  # fmt: skip
    lines = draw(st.lists(st.one_of(st.sampled_from(LINES), st.sampled_from(RARE)) if draw(st.booleans())
                          else st.sampled_from(LINES), max_size=80))  # fmt: skip
    if header.startswith("status,number"):
        lines = [",".join([*line.split(",")[1:2], *line.split(",")[:1], *line.split(",")[2:]]) for line in lines]
    ending = draw(st.sampled_from(["\n", "\r\n"]))
    last = draw(st.sampled_from(["", ending]))
    return header + ending + ending.join(lines) + (last if lines else ending), draw(st.sampled_from(["IT", "IT", "US"]))


@settings(max_examples=200, deadline=None)
@given(file=register_files(), chunk=st.sampled_from([40, 97, 8 << 20]))
def test_the_fast_reader_reads_what_the_line_reader_reads(file: tuple[str, str], chunk: int) -> None:
    text, region = file
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "register.csv"
        path.write_bytes(text.encode())
        check_against_reference(path, region, workers=1, chunk_bytes=chunk)


@settings(max_examples=12, deadline=None)
@given(file=register_files())
def test_the_fast_reader_in_several_processes_reads_the_same(file: tuple[str, str]) -> None:
    text, region = file
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "register.csv"
        path.write_bytes(text.encode())
        check_against_reference(path, region, workers=3, chunk_bytes=64, part_bytes=50)


def test_a_large_file_read_in_parallel_names_its_bad_lines(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    lines = [f"+39352{n:07d},clear," for n in range(60_000)]
    lines[12_345] = "+39352,clear,"
    lines[45_678] = "+393520045678,opposed,2024-13-01"
    path.write_text("number,status,registered_at\n" + "\n".join(lines) + "\n")
    with pytest.raises(LoadError) as info:
        parse_register(path, "IT", workers=2, chunk_bytes=50_000, part_bytes=100_000)
    assert info.value.errors == [
        f"{path}:12347: number is not a valid phone number",
        f"{path}:45680: not an ISO date (YYYY-MM-DD): '2024-13-01'",
    ]
    check_against_reference(path, "IT", workers=2, chunk_bytes=50_000, part_bytes=100_000)
