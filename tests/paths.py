"""Where the tests find the repository's files, in one place, so a test can
move between the test packages without counting parent directories."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
"""The repository: ``deploy/``, ``examples/``, ``src/`` and the docs."""

POLICIES = ROOT / "tests" / "policies"
"""The test policies (``core.toml``, ``open-hours.toml``…)."""
