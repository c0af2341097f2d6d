"""The ``callguard`` command, one module per command group (:mod:`callguard.cli.main`
wires them in).

``pip install callguard`` installs what a dialer's client needs; the command's
work (Redis, the worker, the audit store) needs ``callguard[worker]``, and
without it the command says so in one line instead of a traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

__all__ = ["WORKER_PACKAGES", "main"]

#: What ``callguard[worker]`` adds to a plain install (import names).
WORKER_PACKAGES = frozenset({"faust", "mode", "redis", "hiredis", "asyncpg", "prometheus_client", "uvloop"})


def main(argv: Sequence[str] | None = None) -> int:
    try:
        from callguard.cli.main import main as run
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").partition(".")[0]
        if missing not in WORKER_PACKAGES:
            raise
        print(
            f"callguard: the command line needs the worker's dependencies ({missing} is not installed): "
            "pip install 'callguard[worker]'",
            file=sys.stderr,
        )
        return 2
    return run(argv)
