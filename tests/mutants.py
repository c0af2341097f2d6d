"""Comparison mutants: flip each ``<``/``<=``/``>``/``>=`` of the given files to its
boundary twin, one at a time, run the tests against each, and print the mutants
that no test kills.

Every bound of a rule is meant to be pinned on both sides, so a surviving
mutant is either a missing boundary test or an equivalent mutant (a memo bound,
a fast path with the same answer): read each one. Runs ``./dev mutants``; the
default is the core with the tests that start no server (about 40 minutes on
two cores); Lua scripts need the storage tests, e.g.::

    ./dev mutants src/callguard/storage/lua/allowed.lua --tests tests/storage

The repository is copied first (its tracked files), so the working tree is
never touched, even when the run is stopped half way.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import tokenize
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
FLIP = {"<": "<=", "<=": "<", ">": ">=", ">=": ">"}
#: a Lua comparison (not part of ``~=``, ``==``, ``--`` or ``<<``/``>>``)
_LUA_OPERATOR = re.compile(r"(?<![<>=~-])(<=|>=|<|>)(?![<>=-])")


class Mutant(NamedTuple):
    path: str
    line: int
    column: int
    operator: str

    def apply(self, text: str) -> str:
        lines = text.splitlines(keepends=True)
        old = lines[self.line - 1]
        end = self.column + len(self.operator)
        assert old[self.column : end] == self.operator, (self, old)
        lines[self.line - 1] = old[: self.column] + FLIP[self.operator] + old[end:]
        return "".join(lines)

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.column} {self.operator} -> {FLIP[self.operator]}"


def mutants(path: str, text: str) -> Iterator[Mutant]:
    """Every comparison of a Python or Lua source (comments and strings excluded in Python, comments in Lua)."""
    if path.endswith(".lua"):
        for number, line in enumerate(text.splitlines(), 1):
            code = line.split("--", 1)[0]
            for match in _LUA_OPERATOR.finditer(code):
                yield Mutant(path, number, match.start(), match.group())
        return
    for token in tokenize.generate_tokens(io.StringIO(text).readline):
        if token.type == tokenize.OP and token.string in FLIP:
            yield Mutant(path, token.start[0], token.start[1], token.string)


def copy_repository(target: Path) -> None:
    """The files git tracks or would track (new ones too), as they are in the working tree."""
    tracked = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    for name in filter(None, tracked):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


def killed(copy: Path, tests: list[str]) -> bool:
    env = {**os.environ, "PYTHONPATH": str(copy / "src")}
    command = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests]
    try:
        return subprocess.run(command, cwd=copy, env=env, capture_output=True, timeout=900).returncode != 0
    except subprocess.TimeoutExpired:
        return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="./dev mutants", description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="*", help="default: every module of src/callguard/core")
    parser.add_argument(
        "--tests", default="-m 'not e2e' tests", help="pytest's arguments, one string (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    files = args.files or sorted(str(p.relative_to(ROOT)) for p in (ROOT / "src/callguard/core").glob("*.py"))
    survivors: list[Mutant] = []
    with tempfile.TemporaryDirectory(prefix="callguard-mutants-") as directory:
        copy = Path(directory)
        copy_repository(copy)
        for name in files:
            path = copy / name
            original = path.read_text()
            for mutant in mutants(name, original):
                started = time.monotonic()
                path.write_text(mutant.apply(original))
                try:
                    dead = killed(copy, shlex.split(args.tests))
                finally:
                    path.write_text(original)
                line = original.splitlines()[mutant.line - 1].strip()
                print(f"{'killed  ' if dead else 'SURVIVED'} {mutant} ({time.monotonic() - started:.0f} s) | {line}")
                if not dead:
                    survivors.append(mutant)
    print(f"{len(survivors)} mutant(s) survived" + "".join(f"\n  {m}" for m in survivors))
    return 0


if __name__ == "__main__":
    sys.exit(main())
