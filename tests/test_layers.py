"""The functional core stays free of I/O: the modules that decide (the policy
and the US pack's rules, its facts, the contract, numbers, calendars, sources,
the policy file and the token checks, the replay's re-decision, the audit chain
and the regulator's report) import no Redis, Kafka, Faust or PostgreSQL client, so that the
decision is a pure function a test, a replay or a regulator can run anywhere.
Each module is imported alone in a fresh interpreter."""

from __future__ import annotations

import os
import pkgutil
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import callguard.core
from tests.paths import ROOT

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


def test_the_layer_check_fails_on_a_wrong_import(tmp_path: Path) -> None:
    # a copy of the package where the core imports the worker: lint-imports must refuse it
    root = ROOT
    shutil.copytree(
        root / "src" / "callguard", tmp_path / "src" / "callguard", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(root / "pyproject.toml", tmp_path / "pyproject.toml")
    facts = tmp_path / "src" / "callguard" / "core" / "facts.py"
    facts.write_text(facts.read_text() + "\nimport callguard.worker.guard  # noqa: E402,F401\n")
    lint = [
        sys.executable,
        "-c",
        "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())",
    ]
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "src")}
    broken = subprocess.run(
        [*lint, "--no-cache", "--no-logo"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert "callguard.core is not allowed to import callguard.worker" in broken.stdout
    assert "callguard.core.facts -> callguard.worker.guard" in broken.stdout
    # and the tree as it is keeps every contract
    kept = subprocess.run([*lint, "--no-cache", "--no-logo"], cwd=root, capture_output=True, text=True, timeout=120)
    assert kept.returncode == 0, kept.stdout
