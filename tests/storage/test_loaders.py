"""Loader files with hostile lines: every bad line is named, the load is all or nothing."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callguard.storage.loaders import (
    MAX_REPORTED_ERRORS,
    LoadError,
    parse_consents,
    parse_named_register,
    parse_optouts,
    parse_reassigned,
    parse_register,
)
from callguard.storage.register import read_spilled_partition

ROME = ZoneInfo("Europe/Rome")

GOOD_REGISTER = [
    "+39 347 000 0001,opposed,2024-01-02",
    "3470000002,clear,",
    "0039 347 0000003,clear",
    "(06) 2222 3333,opposed,",
]
BAD_REGISTER = [
    "not a number,clear,",
    "+39 347 000 0001,maybe,",
    "+39 347 000 0001,opposed,02/01/2024",
    "+39 347 000 0001,opposed,2024-13-01",
    ",clear,",
    "+39 347 000 0001,clear,,extra",
    "\x00\x1b[31m,clear,",
    "+39 347 000 0001,CLEAR,",
    '"+39 347 000 0001\nsecond line",clear,',
    "9" * 300 + ",clear,",
    "💩,opposed,",
]
GOOD_CONSENTS = [
    "+393470000001,acme,consent,2025-01-01,",
    "+393470000002,acme,contract,2024-01-01T10:00:00,2026-01-01",
    "+1 212 555 0100,acme,ebr_transaction,2025-06-01,",
    "+12125550101,acme,ebr_inquiry,2026-11-01T15:00:00Z,",
]
BAD_CONSENTS = [
    "+393470000001,*,consent,2025-01-01,",
    "+393470000001,acme,omnibus,2025-01-01,",
    "+393470000001,acme,ebr,2025-01-01,",
    "+393470000001,acme,consent,yesterday,",
    "+393470000001,,consent,2025-01-01,",
    "+393470000001,ac|me,consent,2025-01-01,",
    "12,acme,consent,2025-01-01,",
]
GOOD_OPTOUTS = ["+393470000001,*,2025-01-01", "+393470000002,acme,2025-01-01T12:00:00Z"]
BAD_OPTOUTS = [
    "+393470000001,acme,",
    "+393470000001,acme,2025/01/01",
    "x,acme,2025-01-01",
    "+393470000001," + "c" * 200 + ",2025-01-01",
]

#: a named register (the US National Do Not Call Registry): numbers without a country code are North American
GOOD_NAMED = ["2125550100", "+1 212 555 0101", "1-305-555-0123", "(646) 555-0100", "+12125550102"]
BAD_NAMED = ["1115550100", "21255501", "+1 212 555", "not a number", "2125550100,extra"]
GOOD_REASSIGNED = ["+12125550100,2026-01-10", "646 555 0100,2025-12-31"]
BAD_REASSIGNED = ["+12125550100,", "+12125550100,10/01/2026", "x,2026-01-10"]

CASES = [
    ("number,status,registered_at", GOOD_REGISTER, BAD_REGISTER, lambda p: parse_register(p, "IT")),
    ("callee,client_id,basis,granted_at,ends_at", GOOD_CONSENTS, BAD_CONSENTS, lambda p: parse_consents(p, "IT", ROME)),
    ("callee,client_id,at", GOOD_OPTOUTS, BAD_OPTOUTS, lambda p: parse_optouts(p, "IT", ROME)),
    ("number", GOOD_NAMED, BAD_NAMED, parse_named_register),
    ("number,disconnected_at", GOOD_REASSIGNED, BAD_REASSIGNED, parse_reassigned),
]


def lines_of(rows: list[tuple[bool | None, str]]) -> tuple[str, list[int]]:
    """The file body and the line numbers (header = 1) of the bad rows
    (``None`` marks a blank line, which is no record at all)."""
    body, bad, line = [], [], 2
    for is_bad, row in rows:
        body.append(row)
        if is_bad:
            bad.append(line)
        line += row.count("\n") + 1
    return "\n".join(body) + "\n", bad


@pytest.mark.parametrize(
    ("header", "good", "bad", "parse"), CASES, ids=["register", "consents", "optouts", "named", "reassigned"]
)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_every_bad_line_is_reported_and_nothing_is_loaded(header, good, bad, parse, data) -> None:
    rows = data.draw(
        st.lists(st.one_of(st.sampled_from(good).map(lambda r: (False, r)), st.sampled_from(bad).map(lambda r: (True, r)),
                           st.just((None, ""))),
                 min_size=1, max_size=60)
    )  # fmt: skip
    body, bad_lines = lines_of(rows)
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "data.csv"
        path.write_text(header + "\n" + body, encoding="utf-8")
        if not bad_lines:
            assert len(parse(path).rows) == sum(1 for is_bad, _ in rows if is_bad is False)
            return
        with pytest.raises(LoadError) as info:
            parse(path)
    error = info.value
    assert error.error_count == len(bad_lines)
    reported = [int(re.match(r".*:(\d+): ", line).group(1)) for line in error.errors]
    assert reported == bad_lines[:MAX_REPORTED_ERRORS]
    assert "nothing was loaded" in error.report()
    for line in error.errors:  # an error names the line, never echoes a number from it
        assert "3470000" not in line and "347 000" not in line and "555" not in line


def _numbers(parsed) -> list[int]:
    rows = parsed.rows
    try:
        return sorted(
            row >> 16 for part in range(rows.partitions) for row in read_spilled_partition(rows.directory, part)
        )
    finally:
        rows.cleanup()


def test_the_ftcs_flat_file_is_read_line_by_line_as_north_american_numbers(tmp_path: Path) -> None:
    """The National Do Not Call Registry's download: no header, ``AAA,NNNNNNN`` a line."""
    path = tmp_path / "dnc.txt"
    path.write_text("212,5550100\n305,5550123\r\n787,5550100\n\n646, 5550199\n")
    assert _numbers(parse_named_register(path)) == [12125550100, 13055550123, 16465550199, 17875550100]
    path.write_text("212,5550100\n111,5550100\n212,555010\nhello\n305,5550123\n")
    with pytest.raises(LoadError) as info:
        parse_named_register(path)
    assert [int(re.match(r".*:(\d+): ", e).group(1)) for e in info.value.errors] == [2, 3, 4]


def test_a_named_register_csv_is_read_as_north_american_numbers(tmp_path: Path) -> None:
    path = tmp_path / "fl.csv"
    path.write_text("number\n3055550123\n+1 646 555 0100\n13055550124\n")
    assert _numbers(parse_named_register(path)) == [13055550123, 13055550124, 16465550100]
