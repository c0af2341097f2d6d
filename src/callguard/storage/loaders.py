"""CSV loaders for register results, operators, consents and opt-outs.

Each loader first reads and validates the whole file; if any line is bad,
nothing is written and every bad line is reported (``file:line: error``).
Only a clean file reaches the stores. Errors never echo a phone number in
clear: they name the line, and the line is in the user's own file.
"""

from __future__ import annotations

import csv
import gc
import hashlib
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import date, tzinfo
from itertools import repeat
from operator import itemgetter, or_
from pathlib import Path
from typing import Any, TextIO

from callguard.core.facts import Consent, Mandate, Operator, OptOut
from callguard.core.numbers import canonical_number_pattern, nanp_national_pattern, normalise_caller_id
from callguard.core.rows import consent_row, id_field, number_field, parse_date, parse_when
from callguard.storage.register_codec import OPPOSED, e164_number, payload, registered_code
from callguard.storage.register_spill import (
    PartitionWriter,
    RegisterRows,
    cpu_count,
    pack_row,
    partitions_for,
    process_context,
)

#: How many bad lines a failed load lists before it only counts them.
MAX_REPORTED_ERRORS = 20


class LoadError(Exception):
    """A file that cannot be loaded; ``errors`` are one line each."""

    def __init__(self, path: str, errors: list[str], error_count: int | None = None) -> None:
        self.path = path
        self.errors = errors
        self.error_count = error_count if error_count is not None else len(errors)
        super().__init__(f"{path}: {self.error_count} bad line(s); nothing was loaded")

    def report(self) -> str:
        lines = [*self.errors]
        if self.error_count > len(self.errors):
            lines.append(f"… and {self.error_count - len(self.errors)} more bad line(s)")
        lines.append(str(self))
        return "\n".join(lines)


class Progress:
    """Prints how far a large load has got, at most once a second, to stderr."""

    def __init__(self, label: str, stream: TextIO | None = None, every: float = 1.0) -> None:
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.every = every
        self.started = self.last = time.monotonic()
        self.count = 0

    def tick(self, count: int) -> None:
        self.count = count
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            rate = count / max(now - self.started, 1e-9)
            print(f"{self.label}: {count:,} rows ({rate:,.0f}/s)", file=self.stream, flush=True)


@dataclass
class Parsed:
    """The validated rows of one file, with its fingerprint for the audit trail."""

    rows: list[Any] | RegisterRows = field(default_factory=list)
    sha256: str = ""
    lines: int = 0


class _NumberedLines:
    """Feeds a CSV reader line by line, noting where each record starts (a
    quoted field may span lines, and blank lines are skipped)."""

    def __init__(self, handle: TextIO) -> None:
        self.handle = handle
        self.number = 0
        self.record_start = 0
        self.between_records = True

    def __iter__(self) -> _NumberedLines:
        return self

    def __next__(self) -> str:
        line = next(self.handle)
        self.number += 1
        if self.between_records:
            self.record_start, self.between_records = self.number, False
        return line


def _reader(path: Path, required: tuple[str, ...], optional: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield (line number where the record starts, fields by column)."""
    with path.open(newline="", encoding="utf-8-sig") as handle:
        lines = _NumberedLines(handle)
        reader = csv.reader(lines)
        header = [h.strip() for h in next(reader, [])]
        missing = [c for c in required if c not in header]
        unknown = [c for c in header if c not in required + optional]
        if missing or unknown:
            problems = []
            if missing:
                problems.append("missing column(s) " + ", ".join(missing))
            if unknown:
                problems.append("unknown column(s) " + ", ".join(unknown))
            expected = ",".join(required) + "".join(f"[,{c}]" for c in optional)
            raise LoadError(str(path), [f"{path}:1: header: {'; '.join(problems)} (expected {expected})"])
        lines.between_records = True
        for row in reader:
            start, lines.between_records = lines.record_start, True
            if not row:  # a blank line
                continue
            if len(row) > len(header):
                yield start, {"__extra__": "too many fields"}
                continue
            yield start, {name: (row[i].strip() if i < len(row) else "") for i, name in enumerate(header)}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _parse_file(
    path: Path,
    required: tuple[str, ...],
    optional: tuple[str, ...],
    parse_row: Callable[[dict[str, str]], Any],
    label: str,
    rows: Any = None,
) -> Parsed:
    if not path.is_file():
        raise LoadError(str(path), [f"{path}: no such file"])
    sink: Any = [] if rows is None else rows
    parsed = Parsed(rows=sink, sha256=_sha256(path))
    errors: list[str] = []
    error_count = 0
    progress = Progress(f"{label}: read")
    for line, row in _reader(path, required, optional):
        parsed.lines += 1
        progress.tick(parsed.lines)
        try:
            if "__extra__" in row:
                raise ValueError("more fields than the header has")
            sink.append(parse_row(row))
        except ValueError as exc:
            error_count += 1
            if len(errors) < MAX_REPORTED_ERRORS:
                errors.append(f"{path}:{line}: {exc}")
    if error_count:
        raise LoadError(str(path), errors, error_count)
    return parsed


def _register_row_parser(
    region: str, listing: bool = False
) -> Callable[[dict[str, str]], tuple[str, bool, date | None]]:
    """Rows of a register result, or with ``listing`` of a directory extract (a number alone)."""

    def row_parser(row: dict[str, str]) -> tuple[str, bool, date | None]:
        e164 = number_field(row, "number", region)
        if listing:
            return e164, False, None
        status = row.get("status", "")
        if status not in ("opposed", "clear"):
            raise ValueError(f"status must be 'opposed' or 'clear', not {status!r}")
        registered = row.get("registered_at", "")
        registered_at = parse_date(registered) if registered else None
        registered_code(registered_at)  # raises when it cannot be stored
        return e164, status == "opposed", registered_at

    return row_parser


REGISTER_COLUMNS = (("number", "status"), ("registered_at",))
#: A public-directory extract: the numbers present in the directories.
DIRECTORY_COLUMNS: tuple[tuple[str, ...], tuple[str, ...]] = (("number",), ())


def parse_directory(path: Path, region: str, workers: int | None = None) -> Parsed:
    """``number``: the numbers present in the public telephone directories (an
    extract of their single database), read like a register result."""
    return parse_register(path, region, workers, columns=DIRECTORY_COLUMNS)


def parse_named_register(path: Path, workers: int | None = None) -> Parsed:
    """A register loaded under its own name (``register load --register``):
    the numbers on it, as a CSV with the header ``number`` or as the FTC's
    flat file of the National Do Not Call Registry (no header, one
    ``AAA,NNNNNNN`` line a number). Numbers without a country code are North
    American (region US); canonical North American numbers (ten digits, or
    ``1`` or ``+1`` and ten digits; the FTC's lines) are validated by one
    regular expression built from libphonenumber's metadata of every region
    of the plan, anything else by libphonenumber."""
    return parse_register(path, "US", workers, columns=DIRECTORY_COLUMNS, nanp=True)


def parse_register(
    path: Path,
    region: str,
    workers: int | None = None,
    chunk_bytes: int = 8 << 20,
    part_bytes: int = 1 << 20,
    columns: tuple[tuple[str, ...], tuple[str, ...]] = REGISTER_COLUMNS,
    nanp: bool = False,
) -> Parsed:
    """``number,status[,registered_at]``: one consultation result of the RPO.

    Rows are spilled by partition to a temporary directory
    (:class:`~callguard.storage.register.RegisterRows`, ``Parsed.rows``): a result
    covers a caller's whole contact list, tens of millions of lines. Lines in
    canonical form (``+39`` and the national number, or for region IT the
    national number alone or after ``0039``; ``opposed``/``clear``; an ISO
    date or nothing) are validated by one regular expression built from
    libphonenumber's own Italian metadata (:func:`callguard.core.numbers.canonical_e164`); any other line
    goes through :func:`callguard.core.numbers.normalise` as before. Files over
    16 MB are read by ``workers`` processes (default: one a CPU), each its
    own part of the file (at least ``part_bytes``), ``chunk_bytes`` at a
    time. The caller must ``cleanup()`` the rows.
    """
    if not path.is_file():
        raise LoadError(str(path), [f"{path}: no such file"])
    size = path.stat().st_size
    if workers is None:
        workers = min(cpu_count(), 8) if size > 16 << 20 else 1
    rows = RegisterRows(partitions_for(size // 20))
    try:
        with ThreadPoolExecutor(1) as hashing:  # hashlib releases the GIL on large blocks
            digest = hashing.submit(_sha256, path)
            parsed = _parse_register_fast(path, region, rows, workers, chunk_bytes, part_bytes, columns, nanp)
            if parsed is None:  # a line the fast reader cannot split alone (a quoted line break, a bare CR)
                rows.cleanup()
                rows = RegisterRows(partitions_for(size // 20))
                sink = _SpillSink(rows)
                listing = columns == DIRECTORY_COLUMNS
                label = "directory" if listing else "register"
                parsed = _parse_file(path, *columns, _register_row_parser(region, listing), label, sink)
                sink.flush()
                parsed.rows = rows
            parsed.sha256 = digest.result()
        return parsed
    except BaseException:
        rows.cleanup()
        raise


class _SpillSink:
    """``Parsed.rows`` of the line-by-line reader, spilling into RegisterRows."""

    def __init__(self, rows: RegisterRows) -> None:
        self.rows = rows
        self.writer = rows.writer()
        self.buffer: list[int] = []

    def append(self, parsed: tuple[str, bool, date | None]) -> None:
        e164, opposed, registered_at = parsed
        self.buffer.append(pack_row(e164_number(e164), payload(opposed, registered_at)))
        self.rows.rows += 1
        self.rows.opposed += opposed
        if len(self.buffer) >= 100_000:
            self.flush()

    def flush(self) -> None:
        self.writer.add(self.buffer)
        self.writer.flush()
        self.buffer = []


# --- the fast register reader ---------------------------------------------------


_BLANK_LINE = re.compile(rb"^\r?\n", re.M)
_STATUS_BITS = {b"opposed": OPPOSED, b"clear": 0}
_SPACE = r"[ \t]*"


@dataclass(frozen=True)
class _RegisterSpec:
    """How to read a register file's lines, from its header."""

    region: str
    header: tuple[str, ...]
    line: re.Pattern[bytes]  # one line (re.M), groups in header order
    number: int
    status: int | None  # None: a directory extract, every number "clear"
    registered_at: int | None
    #: the country calling code the number group's national numbers take
    country: bytes = b"39"
    #: the FTC's flat file of the National Do Not Call Registry: no header, "AAA,NNNNNNN" lines
    ftc: bool = False

    @classmethod
    def build(cls, header: list[str], region: str, nanp: bool = False, ftc: bool = False) -> _RegisterSpec:
        fields = {
            "number": (r"(?:\+?1)?(" + nanp_national_pattern() + r"\d{10})")
            if nanp
            else canonical_number_pattern(region),
            "status": "(opposed|clear)",
            "registered_at": r"(\d{4}-\d\d-\d\d)?",
        }
        parts = [_SPACE + fields[name] + _SPACE for name in header]
        body = ",".join(parts)
        if header[-1] == "registered_at" and len(header) > 1:  # a missing last field reads as empty
            body = ",".join(parts[:-1]) + "(?:," + parts[-1] + ")?"
        line = re.compile(("^" + body + r"\r?$").encode(), re.M)
        at = header.index("registered_at") if "registered_at" in header else None
        status = header.index("status") if "status" in header else None
        country = b"1" if nanp else b"39"
        return cls(region, tuple(header), line, header.index("number"), status, at, country, ftc)


@dataclass
class _RangeResult:
    """What reading one part of a register file found (lines relative to the part)."""

    lines: int = 0
    records: int = 0
    opposed: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)
    error_count: int = 0
    sequential: bool = False  # the fast reader cannot read this file: read it line by line


class _Sequential(Exception):
    """A line only the line-by-line reader can read (a record that spans lines)."""


def _record_ends(text: str) -> bool:
    """Whether a CSV record (default dialect) that starts at ``text`` ends with it."""
    quoted, field_start, i = False, True, 0
    while i < len(text):
        c = text[i]
        if quoted:
            if c == '"':
                if text[i + 1 : i + 2] == '"':
                    i += 1
                else:
                    quoted = False
        elif c == '"' and field_start:
            quoted = True
        field_start = c == "," and not quoted
        i += 1
    return not quoted


class _RangeReader:
    def __init__(self, spec: _RegisterSpec, writer: PartitionWriter, tick: Callable[[int], None]) -> None:
        self.spec = spec
        self.writer = writer
        self.tick = tick
        self.result = _RangeResult()
        self.dates: dict[bytes, int] = {b"": 0}
        self.row_parser = _register_row_parser(spec.region, listing=spec.status is None)

    def error(self, line: int, message: str) -> None:
        self.result.error_count += 1
        if len(self.result.errors) < MAX_REPORTED_ERRORS:
            self.result.errors.append((line, message))

    def chunk(self, data: bytes) -> None:
        """Read whole lines (``data`` ends with a newline)."""
        spec = self.spec
        if spec.ftc:  # "AAA,NNNNNNN": the area code and the number, read as one national number
            data = data.replace(b",", b"")
        lines = data.count(b"\n")
        found = spec.line.findall(data)
        if spec.country == b"1" and spec.header == ("number",):
            # North American numbers on their own: ten digits each, 1 and the ten as an integer
            if len(found) + len(_BLANK_LINE.findall(data)) == lines:
                self.writer.add(list(map((16).__rlshift__, map((10_000_000_000).__add__, map(int, found)))))
                self.result.records += len(found)
            else:
                self._lines(data)
            self.result.lines += lines
            self.tick(self.result.records)
            return
        rows = [(row,) for row in found] if len(spec.header) == 1 else found  # one group: findall gives strings
        if len(rows) + len(_BLANK_LINE.findall(data)) != lines or not self._rows(rows):
            self._lines(data)
        self.result.lines += lines
        self.tick(self.result.records)

    def _rows(self, rows: list[tuple[bytes, ...]]) -> bool:
        """Store rows that all matched the fast pattern; False (nothing stored)
        when a date is not a real day or cannot be stored."""
        spec = self.spec
        statuses = [] if spec.status is None else list(map(itemgetter(spec.status), rows))
        bits: Iterable[int] = repeat(0, len(rows)) if spec.status is None else map(_STATUS_BITS.__getitem__, statuses)
        if spec.registered_at is not None:
            days = list(map(itemgetter(spec.registered_at), rows))
            try:
                for day in set(days) - self.dates.keys():
                    self.dates[day] = registered_code(date.fromisoformat(day.decode()))
            except ValueError:
                return False
            bits = map(or_, bits, map(self.dates.__getitem__, days))
        numbers = map(int, map(spec.country.__add__, map(itemgetter(spec.number), rows)))
        self.writer.add(list(map(or_, map((16).__rlshift__, numbers), bits)))
        self.result.records += len(rows)
        self.result.opposed += statuses.count(b"opposed")
        return True

    def _lines(self, data: bytes) -> None:
        """Line by line: the fast pattern where it matches, else the CSV reader
        and libphonenumber, exactly as :func:`_reader` and the row parser."""
        spec = self.spec
        base = self.result.lines
        header = spec.header
        for offset, line in enumerate(data.split(b"\n")[:-1], start=1):
            match = spec.line.fullmatch(line)
            if match is not None and self._rows([match.groups(b"")]):
                continue
            text = line.decode("utf-8")
            if "\r" in text.removesuffix("\r") or not _record_ends(text):
                raise _Sequential
            fields = next(csv.reader([text + "\n"]), [])
            if not fields:  # a blank line
                continue
            self.result.records += 1
            try:
                if len(fields) > len(header):
                    raise ValueError("more fields than the header has")
                row = {name: (fields[i].strip() if i < len(fields) else "") for i, name in enumerate(header)}
                e164, opposed, registered_at = self.row_parser(row)
            except ValueError as exc:
                self.error(base + offset, str(exc))
                continue
            self.writer.add([pack_row(e164_number(e164), payload(opposed, registered_at))])
            self.result.opposed += opposed


_read_counter: Any = None


def _init_reader(counter: Any) -> None:
    global _read_counter
    _read_counter = counter


def _read_range(
    path: str, start: int, stop: int, spec: _RegisterSpec, directory: str, partitions: int, tag: str, chunk_bytes: int
) -> _RangeResult:
    """Read bytes [start, stop) of a register file (whole lines) into partition files."""
    writer = PartitionWriter(Path(directory), partitions, tag)
    reported = 0

    def tick(records: int) -> None:
        nonlocal reported
        if _read_counter is not None:
            with _read_counter.get_lock():
                _read_counter.value += records - reported
            reported = records

    reader = _RangeReader(spec, writer, tick)
    gc_was = gc.isenabled()
    gc.disable()  # millions of small objects, no cycles: the collector only costs time here
    try:
        with open(path, "rb") as handle:
            handle.seek(start)
            carry = b""
            position = start
            while position < stop or carry:
                block = handle.read(min(chunk_bytes, stop - position)) if position < stop else b""
                position += len(block)
                data = carry + block
                if position < stop:
                    cut = data.rfind(b"\n") + 1
                    data, carry = data[:cut], data[cut:]
                    if not data:
                        continue
                else:
                    carry = b""
                    if not data.endswith(b"\n"):
                        data += b"\n"
                reader.chunk(data)
    except _Sequential:
        reader.result.sequential = True
    finally:
        if gc_was:
            gc.enable()
    writer.flush()
    return reader.result


def _line_starts(path: Path, start: int, size: int, parts: int) -> list[int]:
    """``parts`` + 1 offsets that cut [start, size) at line starts."""
    cuts = [start]
    with path.open("rb") as handle:
        for k in range(1, parts):
            guess = max(start + (size - start) * k // parts, cuts[-1])
            handle.seek(guess)
            handle.readline()
            cuts.append(min(handle.tell(), size))
    cuts.append(size)
    return cuts


#: The first line of the FTC's flat file: an area code and a number, no header.
_FTC_LINE = re.compile(r"^\s*\d{3}\s*,\s*\d{7}\s*$")


def _parse_register_fast(
    path: Path,
    region: str,
    rows: RegisterRows,
    workers: int,
    chunk_bytes: int,
    part_bytes: int,
    columns: tuple[tuple[str, ...], tuple[str, ...]] = REGISTER_COLUMNS,
    nanp: bool = False,
) -> Parsed | None:
    with path.open("rb") as handle:
        first = handle.readline()
    start = len(first)
    text = first.decode("utf-8").removeprefix("\ufeff")
    if "\r" in text.rstrip("\r\n") or not _record_ends(text.rstrip("\r\n")):
        return None
    if nanp and _FTC_LINE.match(text):  # the FTC's flat file: every line a number
        spec = _RegisterSpec.build(["number"], region, nanp=True, ftc=True)
        start = 0
    else:
        header = [h.strip() for h in next(csv.reader([text]), [])]
        required, optional = columns
        if sorted(header) not in (sorted(required), sorted(required + optional)):
            return None  # a header to complain about: the line-by-line reader says what is wrong at once
        spec = _RegisterSpec.build(header, region, nanp=nanp)
    size = path.stat().st_size
    parts = max(1, min(workers, (size - start) // part_bytes + 1))
    cuts = _line_starts(path, start, size, parts)
    progress = Progress(("directory" if columns == DIRECTORY_COLUMNS else "register") + ": read")
    jobs = [
        (str(path), cuts[k], cuts[k + 1], spec, str(rows.directory), rows.partitions, f"{k:03d}", chunk_bytes)
        for k in range(parts)
    ]
    if parts == 1:
        results = [_read_range(*jobs[0])]
    else:
        context = process_context()
        counter = context.Value("q", 0)
        with ProcessPoolExecutor(parts, mp_context=context, initializer=_init_reader, initargs=(counter,)) as pool:
            futures = [pool.submit(_read_range, *job) for job in jobs]
            while wait(futures, timeout=1.0).not_done:
                progress.tick(int(counter.value))
            results = [f.result() for f in futures]
    if any(r.sequential for r in results):
        return None
    errors: list[str] = []
    error_count = 0
    first_line = 1 if spec.ftc else 2  # the header is line 1
    for result in results:
        for line, message in result.errors:
            if len(errors) < MAX_REPORTED_ERRORS:
                errors.append(f"{path}:{first_line + line - 1}: {message}")
        error_count += result.error_count
        first_line += result.lines
    if error_count:
        raise LoadError(str(path), errors, error_count)
    rows.rows = sum(r.records for r in results)
    rows.opposed = sum(r.opposed for r in results)
    return Parsed(rows=rows, lines=rows.rows)


#: ISO 3166-1 alpha-2, as written in the operators list's ``country`` column.
_COUNTRY = re.compile(r"[A-Z]{2}")


def parse_operators(path: Path, region: str = "IT") -> Parsed:
    """``operator_id,status,valid_from,valid_until[,caller_ids][,country]``: the certification list.

    ``caller_ids`` (``;``-separated) are the numbers the operator declared in
    the ROC; they are stored in E.164, so the ``caller_id`` rule finds an
    intent's caller ID however either side wrote it. ``country`` is where the
    operator places its calls from (ISO 3166-1 alpha-2; empty: Italy)."""
    seen: set[str] = set()

    def row_parser(row: dict[str, str]) -> Operator:
        operator_id = id_field(row, "operator_id")
        if operator_id in seen:
            raise ValueError(f"operator_id {operator_id!r} appears twice")
        seen.add(operator_id)
        status = row.get("status", "")
        if status not in ("active", "suspended", "revoked"):
            raise ValueError(f"status must be active, suspended or revoked, not {status!r}")
        valid_from = parse_date(row.get("valid_from", ""))
        valid_until = parse_date(row.get("valid_until", ""))
        if valid_until < valid_from:
            raise ValueError("valid_until is before valid_from")
        caller_ids: list[str] = []
        for raw in (c.strip() for c in row.get("caller_ids", "").split(";")):
            if not raw:
                continue
            e164 = normalise_caller_id(raw, region)
            if e164 is None:
                raise ValueError(f"caller_ids: {raw!r} is not a callable phone number")
            caller_ids.append(e164)
        country = row.get("country", "").strip().upper() or "IT"
        if not _COUNTRY.fullmatch(country):
            raise ValueError(f"country must be an ISO 3166-1 alpha-2 code like IT or AL, not {row.get('country')!r}")
        unique = tuple(dict.fromkeys(caller_ids))
        return Operator(operator_id, status, valid_from, valid_until, unique, country)  # type: ignore[arg-type]

    return _parse_file(
        path,
        ("operator_id", "status", "valid_from", "valid_until"),
        ("caller_ids", "country"),
        row_parser,
        "operators",
    )


def parse_mandates(path: Path) -> Parsed:
    """``client_id,operator_id,valid_from,valid_until``: which call centres may
    call for which client, and when (Italian days, both included). A pair may
    have several periods, one a line."""

    def row_parser(row: dict[str, str]) -> Mandate:
        client_id = id_field(row, "client_id")
        operator_id = id_field(row, "operator_id")
        valid_from = parse_date(row.get("valid_from", ""))
        valid_until = parse_date(row.get("valid_until", ""))
        if valid_until < valid_from:
            raise ValueError("valid_until is before valid_from")
        return Mandate(client_id, operator_id, valid_from, valid_until)

    return _parse_file(path, ("client_id", "operator_id", "valid_from", "valid_until"), (), row_parser, "mandates")


def parse_consents(path: Path, region: str, tz: tzinfo) -> Parsed:
    """``callee,client_id,basis,granted_at[,ends_at]``; rows are ``(E.164, Consent)``.

    A consent names one client: blanket consents for every client do not
    override the register (Garante, February 2025), so ``*`` is refused.
    """

    def row_parser(row: dict[str, str]) -> tuple[str, Consent]:
        return consent_row(row, region, tz)

    return _parse_file(path, ("callee", "client_id", "basis", "granted_at"), ("ends_at",), row_parser, "consents")


def parse_reassigned(path: Path, region: str = "US") -> Parsed:
    """``number,disconnected_at``: numbers and the day each was last
    permanently disconnected (the FCC's reassigned numbers database, 47 CFR
    64.1200(m)); rows are ``(E.164, date)``. The database holds US numbers:
    a number without a country code is North American (``region``)."""

    def row_parser(row: dict[str, str]) -> tuple[str, date]:
        return number_field(row, "number", region), parse_date(row.get("disconnected_at", ""))

    return _parse_file(path, ("number", "disconnected_at"), (), row_parser, "reassigned")


def parse_optouts(path: Path, region: str, tz: tzinfo) -> Parsed:
    """``callee,client_id,at``; ``client_id`` ``*`` opts out of every client."""

    def row_parser(row: dict[str, str]) -> tuple[str, OptOut]:
        e164 = number_field(row, "callee", region)
        client_id = id_field(row, "client_id", allow_all=True)
        return e164, OptOut(client_id, parse_when(row.get("at", ""), tz))

    return _parse_file(path, ("callee", "client_id", "at"), (), row_parser, "optouts")
