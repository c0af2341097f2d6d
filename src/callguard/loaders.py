"""CSV loaders for register results, operators, consents and opt-outs.

Each loader first reads and validates the whole file; if any line is bad,
nothing is written and every bad line is reported (``file:line: error``).
Only a clean file reaches the stores. Errors never echo a phone number in
clear: they name the line, and the line is in the user's own file.
"""

from __future__ import annotations

import csv
import hashlib
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, tzinfo
from pathlib import Path
from typing import Any, TextIO

from callguard.facts import Consent, Operator, OptOut, When
from callguard.numbers import normalise, normalise_caller_id
from callguard.schema import ALL_CLIENTS, MAX_ID_LENGTH

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


class SpilledRows:
    """Validated rows kept in a temporary file instead of memory, so that a
    register result of tens of millions of lines loads in constant memory."""

    def __init__(self, encode: Callable[[Any], str], decode: Callable[[str], Any]) -> None:
        self.encode = encode
        self.decode = decode
        # unlinked at once on POSIX; its space is freed when this object goes
        self.file = tempfile.TemporaryFile("w+", encoding="utf-8")  # noqa: SIM115
        self.count = 0

    def append(self, row: Any) -> None:
        self.file.write(self.encode(row) + "\n")
        self.count += 1

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[Any]:
        self.file.flush()
        self.file.seek(0)
        for line in self.file:
            yield self.decode(line[:-1])


@dataclass
class Parsed:
    """The validated rows of one file, with its fingerprint for the audit trail."""

    rows: list[Any] | SpilledRows = field(default_factory=list)
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


def parse_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"not an ISO date (YYYY-MM-DD): {text!r}") from None


def parse_when(text: str, tz: tzinfo) -> When:
    """An ISO date, or an ISO datetime; a datetime without offset is local time in ``tz``."""
    if len(text) == 10:
        return parse_date(text)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"not an ISO date or datetime: {text!r}") from None
    return moment.replace(tzinfo=tz) if moment.tzinfo is None else moment


def _id(row: dict[str, str], name: str, allow_all: bool = False) -> str:
    value = row.get(name, "")
    if not 1 <= len(value) <= MAX_ID_LENGTH:
        raise ValueError(f"{name} must be 1-{MAX_ID_LENGTH} characters")
    if "|" in value:
        raise ValueError(f"{name} must not contain '|'")
    if value == ALL_CLIENTS and not allow_all:
        raise ValueError(f"{name} '*' (every client) is not allowed here")
    return value


def _number(row: dict[str, str], name: str, region: str) -> str:
    e164 = normalise(row.get(name, ""), region)
    if e164 is None:
        raise ValueError(f"{name} is not a valid phone number")
    return e164


def _parse_file(
    path: Path,
    required: tuple[str, ...],
    optional: tuple[str, ...],
    parse_row: Callable[[dict[str, str]], Any],
    label: str,
    rows: list[Any] | SpilledRows | None = None,
) -> Parsed:
    if not path.is_file():
        raise LoadError(str(path), [f"{path}: no such file"])
    parsed = Parsed(rows=[] if rows is None else rows, sha256=_sha256(path))
    errors: list[str] = []
    error_count = 0
    progress = Progress(f"{label}: read")
    for line, row in _reader(path, required, optional):
        parsed.lines += 1
        progress.tick(parsed.lines)
        try:
            if "__extra__" in row:
                raise ValueError("more fields than the header has")
            parsed.rows.append(parse_row(row))
        except ValueError as exc:
            error_count += 1
            if len(errors) < MAX_REPORTED_ERRORS:
                errors.append(f"{path}:{line}: {exc}")
    if error_count:
        raise LoadError(str(path), errors, error_count)
    return parsed


def parse_register(path: Path, region: str) -> Parsed:
    """``number,status[,registered_at]``: one consultation result of the RPO.

    Rows are ``(E.164, opposed, registered_at)``, spilled to a temporary file
    (a result covers a caller's whole contact list: millions of lines).
    """

    def row_parser(row: dict[str, str]) -> tuple[str, bool, date | None]:
        e164 = _number(row, "number", region)
        status = row.get("status", "")
        if status not in ("opposed", "clear"):
            raise ValueError(f"status must be 'opposed' or 'clear', not {status!r}")
        registered = row.get("registered_at", "")
        return e164, status == "opposed", parse_date(registered) if registered else None

    def encode(row: tuple[str, bool, date | None]) -> str:
        e164, opposed, registered_at = row
        return f"{e164}|{'o' if opposed else 'c'}|{'' if registered_at is None else registered_at.isoformat()}"

    def decode(text: str) -> tuple[str, bool, date | None]:
        e164, status, registered_at = text.split("|")
        return e164, status == "o", date.fromisoformat(registered_at) if registered_at else None

    spill = SpilledRows(encode, decode)
    return _parse_file(path, ("number", "status"), ("registered_at",), row_parser, "register", spill)


def parse_operators(path: Path, region: str = "IT") -> Parsed:
    """``operator_id,status,valid_from,valid_until[,caller_ids]``: the certification list.

    ``caller_ids`` (``;``-separated) are the numbers the operator declared in
    the ROC; they are stored in E.164, so the ``caller_id`` rule finds an
    intent's caller ID however either side wrote it."""
    seen: set[str] = set()

    def row_parser(row: dict[str, str]) -> Operator:
        operator_id = _id(row, "operator_id")
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
        return Operator(operator_id, status, valid_from, valid_until, tuple(dict.fromkeys(caller_ids)))  # type: ignore[arg-type]

    return _parse_file(
        path, ("operator_id", "status", "valid_from", "valid_until"), ("caller_ids",), row_parser, "operators"
    )


def parse_consents(path: Path, region: str, tz: tzinfo) -> Parsed:
    """``callee,client_id,basis,granted_at[,ends_at]``; rows are ``(E.164, Consent)``.

    A consent names one client: blanket consents for every client do not
    override the register (Garante, February 2025), so ``*`` is refused.
    """

    def row_parser(row: dict[str, str]) -> tuple[str, Consent]:
        e164 = _number(row, "callee", region)
        client_id = _id(row, "client_id")
        basis = row.get("basis", "")
        if basis not in ("consent", "contract"):
            raise ValueError(f"basis must be 'consent' or 'contract', not {basis!r}")
        granted_at = parse_when(row.get("granted_at", ""), tz)
        ends_raw = row.get("ends_at", "")
        ends_at = parse_when(ends_raw, tz) if ends_raw else None
        return e164, Consent(client_id, basis, granted_at, ends_at)  # type: ignore[arg-type]

    return _parse_file(path, ("callee", "client_id", "basis", "granted_at"), ("ends_at",), row_parser, "consents")


def parse_optouts(path: Path, region: str, tz: tzinfo) -> Parsed:
    """``callee,client_id,at``; ``client_id`` ``*`` opts out of every client."""

    def row_parser(row: dict[str, str]) -> tuple[str, OptOut]:
        e164 = _number(row, "callee", region)
        client_id = _id(row, "client_id", allow_all=True)
        return e164, OptOut(client_id, parse_when(row.get("at", ""), tz))

    return _parse_file(path, ("callee", "client_id", "at"), (), row_parser, "optouts")
