"""The README's first command: ``callguard demo`` starts its own broker,
Redis and worker, decides sample intents, shows a real-time opt-out and the
audit check, and stops everything it started."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from callguard.core.schema import Reason

pytestmark = pytest.mark.e2e  # the demo starts a broker, Redis and a worker


def test_the_demo_decides_every_intent_and_stops_what_it_started(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLGUARD_")}  # the demo's defaults only
    report = tmp_path / "report.html"
    argv = [sys.executable, "-m", "callguard", "demo", "--intents", "200", "--show", "5", "--report", str(report)]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    # every intent decided, plus the malformed one whose id could be read
    assert re.search(r"^published 200 intents \(\+2 malformed\)", out, re.M)
    assert re.search(r"^summary: 201 decisions ", out, re.M)
    counts = re.search(r"^  allow (\d+) +deny (\d+)$", out, re.M)
    assert counts is not None
    allowed, denied = map(int, counts.groups())
    assert allowed + denied == 201 and allowed > 0 and denied > 0
    summary = out[out.index("summary:") : out.index("the same kind of intent")]
    reasons = re.findall(r"^  ([a-z_]+) +\d+$", summary, re.M)
    assert reasons and set(reasons) <= {reason.value for reason in Reason}
    # US callees decided by the US pack next to Italian ones, Canadian ones by nobody
    assert {"national_dnc", "no_policy_for_country"} <= set(reasons)
    decided_by = re.search(r"^  decided by: (.+)$", summary, re.M)
    assert decided_by and "it/" in decided_by.group(1) and "us/" in decided_by.group(1)
    assert "policy us/2026-12-01" in out  # the US callee explained under the shipped US pack
    assert "after  the opt-out: deny ['internal_dnc']" in out
    assert re.search(r"callguard\.audit: \d+ records checked, intact", out)
    # the what-if, then the regulator's report on the number that gave a consent during the demo
    assert re.search(r"^  replayed \d[\d,]* of \d[\d,]* records under policy set demo/[\d-]+\+stricter: ", out, re.M)
    line = re.search(r"^  report: (\d+) decision\(s\) about \+39347\*{5}13 \((\d+) allowed, (\d+) denied\); "
                     r"hash chain: (\d+) intact -> (.+)$", out, re.M)  # fmt: skip
    assert line is not None, out[-3000:]
    decisions, allowed, denied, intact, path = line.groups()
    assert int(decisions) >= 2 and int(allowed) >= 1 and int(denied) >= 1 and intact == decisions
    assert path == str(report) and "CHAIN INTACT" in report.read_text()
    assert "demo-consent-after" in report.read_text()  # the real-time consent, then the call it allowed
    assert out.rstrip().endswith("stopped the worker, the sink, the broker, Redis and PostgreSQL.")
    # decisions are shown with their numbers masked
    shown = out[out.index("decisions as they arrive") : out.index("summary:")]
    assert re.search(r"\+39347\*{5}\d\d", shown)
    assert not re.search(r"\+?\d{9,}", shown)
