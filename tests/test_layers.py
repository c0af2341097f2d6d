"""The functional core stays free of I/O: the modules that decide (the policy
and the US pack's rules, its facts, the contract, numbers, calendars, sources,
the policy file and the token checks, the replay's re-decision, the audit chain
and the regulator's report) import no Redis, Kafka, Faust or PostgreSQL client, so that the
decision is a pure function a test, a replay or a regulator can run anywhere.
Each module is imported alone in a fresh interpreter."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import pytest

import callguard.core

CORE = (
    *(f"callguard.core.{module.name}" for module in pkgutil.iter_modules(callguard.core.__path__)),
    "callguard.config",  # the settings every layer reads, the dialer's client included
)
SHELL_PACKAGES = ("redis", "aiokafka", "faust", "mode", "asyncpg", "hiredis")

PROBE = """
import importlib, sys
importlib.import_module({module!r})
print(",".join(sorted(name for name in {shell!r} if name in sys.modules)))
"""


@pytest.mark.parametrize("module", CORE)
def test_the_core_imports_no_io_client(module: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE.format(module=module, shell=SHELL_PACKAGES)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"{module} pulls in {result.stdout.strip()}"


def test_the_probe_sees_an_io_client() -> None:
    # the check itself can fail: a shell module does pull one in
    result = subprocess.run(
        [sys.executable, "-c", PROBE.format(module="callguard.storage.stores", shell=SHELL_PACKAGES)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "redis" in result.stdout.strip().split(",")
