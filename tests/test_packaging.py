"""What ``pip install callguard`` gives a dialer: the client and the contract,
without the worker's dependencies; the command line names the extra it needs.
The worker's packages are made unimportable in a fresh interpreter, as on a
plain install."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from typing import Any

from callguard.cli import WORKER_PACKAGES
from tests.paths import ROOT

#: Import name -> distribution, for the worker's packages.
DISTRIBUTIONS = {
    "faust": "faust-streaming",
    "mode": "mode-streaming",
    "redis": "redis",
    "hiredis": "hiredis",
    "asyncpg": "asyncpg",
    "prometheus_client": "prometheus-client",
    "uvloop": "uvloop",
}

WITHOUT_WORKER = f"""
import importlib.abc, sys
class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.partition(".")[0] in {sorted(WORKER_PACKAGES)!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
sys.meta_path.insert(0, Refuse())
"""


def _requirement_name(requirement: str) -> str:
    return requirement.split(";")[0].split("[")[0].split("=")[0].split(">")[0].split("<")[0].strip().lower()


def _project() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_a_plain_install_brings_none_of_the_workers_dependencies() -> None:
    project = _project()
    plain = {_requirement_name(requirement) for requirement in project["dependencies"]}
    worker = {_requirement_name(requirement) for requirement in project["optional-dependencies"]["worker"]}
    assert not plain & set(DISTRIBUTIONS.values()), plain
    assert worker >= {"faust-streaming", "redis", "asyncpg", "prometheus-client", "uvloop"}
    assert set(DISTRIBUTIONS) >= WORKER_PACKAGES


def test_faust_is_pinned_where_ci_installs_it() -> None:
    # callguard.worker.batching relies on faust-streaming 0.15.3's internals
    worker = _project()["optional-dependencies"]["worker"]
    assert "faust-streaming==0.15.3" in worker
    pins = (ROOT / "constraints.txt").read_text().split()
    assert "faust-streaming==0.15.3" in pins and "aiokafka==0.14.0" in pins
    assert "-c constraints.txt" in (ROOT / "dev").read_text()


def test_the_client_imports_and_builds_without_the_workers_packages() -> None:
    probe = WITHOUT_WORKER + (
        "from callguard.client import GuardClient, SyncGuardClient, CallOutcome, __all__\n"
        "import callguard.contract\n"
        "client = GuardClient(broker='kafka://127.0.0.1:1')\n"
        f"print(len(__all__), sorted(m for m in {sorted(WORKER_PACKAGES)!r} if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split(" ", 1)[1].strip() == "[]"


def test_the_command_names_the_extra_it_needs() -> None:
    probe = WITHOUT_WORKER + "from callguard.cli import main\nsys.exit(main(['status']))\n"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "callguard: the command line needs the worker's dependencies (redis is not installed): "
        "pip install 'callguard[worker]'"
    ]
