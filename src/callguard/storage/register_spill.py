"""A register load's validated rows, spilled to temporary files by partition.

A result covers a caller's whole contact list, tens of millions of lines:
the readers (callguard.storage.loaders) write the rows they validate into
partition files, possibly from several processes, and the load merges one
partition at a time into its buckets, so a load's memory does not grow with
its file. A partition holds whole buckets (rows are spread by bucket).
"""

from __future__ import annotations

import os
import shutil
import struct
import tempfile
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from operator import or_
from pathlib import Path
from typing import Any

from callguard.storage.register_codec import SUFFIX_SPACE, e164_number, pack_u16, payload, unpack_u16

_BLOCK = struct.Struct("<IB")
#: a row ``number << 16 | payload`` divided by this is the number's bucket
ROW_BUCKET = SUFFIX_SPACE << 16


def partitions_for(rows: int) -> int:
    """How many partitions a load of about ``rows`` rows is spilled into: each
    is merged in memory (about 100 000 rows a partition, at most 256)."""
    return max(1, min(256, rows // 100_000 + 1))


class PartitionWriter:
    """Buffers rows per partition and appends them to the partition files in
    blocks: ``n u32 | 0 u8 | row u64 × n``, or when a number has 15 digits
    ``n u32 | 1 u8 | number u64 × n | payload u16 × n``. A row is one
    integer, ``number << 16 | payload`` (E.164 digits as an integer)."""

    def __init__(self, directory: Path, partitions: int, tag: str, flush_rows: int = 1_000_000) -> None:
        self.directory = directory
        self.partitions = partitions
        self.tag = tag
        self.flush_rows = flush_rows
        self.rows: list[list[int]] = [[] for _ in range(partitions)]
        self.buffered = 0

    def add(self, rows: Sequence[int]) -> None:
        """Add rows in file order."""
        count = self.partitions
        if count == 1:
            self.rows[0] += rows
        else:
            add = [part.append for part in self.rows]
            for part, row in zip(map(count.__rmod__, map(ROW_BUCKET.__rfloordiv__, rows)), rows, strict=False):
                add[part](row)
        self.buffered += len(rows)
        if self.buffered >= self.flush_rows:
            self.flush()

    def flush(self) -> None:
        for part in range(self.partitions):
            rows = self.rows[part]
            if not rows:
                continue
            with (self.directory / f"{part:04d}-{self.tag}").open("ab") as handle:
                try:
                    data = array("Q", rows).tobytes()
                    handle.write(_BLOCK.pack(len(rows), 0) + data)
                except OverflowError:  # a 15-digit number
                    handle.write(_BLOCK.pack(len(rows), 1))
                    handle.write(array("Q", map((16).__rrshift__, rows)).tobytes())
                    handle.write(pack_u16(map((0xFFFF).__and__, rows)))
            self.rows[part] = []
        self.buffered = 0


def read_spilled_partition(directory: Path, part: int) -> list[int]:
    """A partition's rows (``number << 16 | payload``) in file order (files sorted by tag)."""
    rows: list[int] = []
    for path in sorted(directory.glob(f"{part:04d}-*")):
        data = path.read_bytes()
        pos = 0
        while pos < len(data):
            n, kind = _BLOCK.unpack_from(data, pos)
            pos += _BLOCK.size
            numbers: array[int] = array("Q")
            numbers.frombytes(data[pos : pos + 8 * n])
            pos += 8 * n
            if kind == 0:
                rows += numbers.tolist()
                continue
            payloads = unpack_u16(data[pos : pos + 2 * n])
            pos += 2 * n
            rows += map(or_, map((16).__rlshift__, numbers), payloads)
    return rows


def pack_row(number: int, bits: int) -> int:
    return number << 16 | bits


@dataclass
class RegisterRows:
    """The validated rows of one register load, spilled to partition files (a
    temporary directory) so that tens of millions of rows load in constant memory."""

    partitions: int
    directory: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="callguard-register-")))
    rows: int = 0
    opposed: int = 0

    def __len__(self) -> int:
        return self.rows

    def writer(self, tag: str = "0") -> PartitionWriter:
        return PartitionWriter(self.directory, self.partitions, tag)

    def cleanup(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)

    @classmethod
    def from_rows(cls, rows: Iterable[tuple[str, bool, date | None]], expected: int = 0) -> RegisterRows:
        """Spill (E.164, opposed, registered_at) rows (tests, benchmarks, tools)."""
        spill = cls(partitions_for(expected))
        writer = spill.writer()
        buffer: list[int] = []
        for e164, opposed, registered_at in rows:
            buffer.append(pack_row(e164_number(e164), payload(opposed, registered_at)))
            spill.opposed += opposed
            if len(buffer) >= 100_000:
                writer.add(buffer)
                spill.rows += len(buffer)
                buffer = []
        writer.add(buffer)
        spill.rows += len(buffer)
        writer.flush()
        return spill


def process_context() -> Any:
    import multiprocessing

    # spawn: the loaders run inside an event loop and Redis connections; a
    # fresh interpreter inherits neither
    return multiprocessing.get_context("spawn")


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1
