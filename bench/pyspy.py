"""Profile a process with py-spy and summarise where its CPU time goes.

``profiled(pid, path)`` attaches ``py-spy record`` (raw collapsed stacks, no
idle frames, every thread) to a running process until it exits; ``summary``
prints the share of samples by package of the leaf frame (self time) and the
functions with the largest inclusive share. py-spy is not a dependency of
callguard: ``.venv/bin/pip install py-spy`` before using ``--profile``.

    .venv/bin/python bench/pyspy.py PROFILE.txt [--top 25]
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")


def profiled(pid: int, path: Path, rate: int = 200) -> subprocess.Popen[bytes]:
    """Start sampling ``pid``; py-spy writes ``path`` when the process exits."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        raise SystemExit("--profile needs py-spy: .venv/bin/pip install py-spy")
    argv = [spy, "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw", "--nonblocking", "-o", str(path)]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def package(file: str) -> str:
    """``callguard.worker.guard``, ``faust.transport.consumer``, ``asyncio.tasks``… for a frame's file
    (py-spy names files relative to their ``sys.path`` entry)."""
    file = file.replace("\\", "/")
    for marker in ("site-packages/", "/src/", "/lib/python3.11/"):
        if marker in file:
            file = file.split(marker, 1)[1]
    return file.removesuffix(".py").replace("/", ".") or "?"


def frames(stack: str) -> list[tuple[str, str]]:
    out = []
    for frame in stack.split(";"):
        match = FRAME.match(frame)
        if match:
            out.append((match["function"], package(match["file"])))
        else:
            out.append((frame, "?"))
    return out


def summary(path: Path, top: int = 25) -> str:
    leaf_packages: Counter[str] = Counter()
    leaf_functions: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        stack_frames = frames(stack)
        if stack_frames:
            leaf_packages[stack_frames[-1][1]] += count
            leaf_functions[f"{stack_frames[-1][1]}.{stack_frames[-1][0]}"] += count
        for name in {f"{package}.{function}" for function, package in stack_frames}:
            inclusive[name] += count
    if not total:
        return f"{path}: no samples"
    lines = [f"{path.name}: {total} samples", "  self time by package of the leaf frame:"]
    lines += [f"    {100 * n / total:5.1f} %  {name}" for name, n in leaf_packages.most_common(15)]
    lines.append("  self time by function:")
    lines += [f"    {100 * n / total:5.1f} %  {name}" for name, n in leaf_functions.most_common(top)]
    lines.append("  inclusive time by function:")
    lines += [f"    {100 * n / total:5.1f} %  {name}" for name, n in inclusive.most_common(top)]
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("profile", type=Path, nargs="+")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    for profile in args.profile:
        print(summary(profile, args.top))
