"""What a dialer runs: publish an intent, await its decision.

This package needs aiokafka, orjson and phonenumbers only (``pip install
callguard``); the worker's dependencies come with ``callguard[worker]``::

    from callguard.client import GuardClient

    async with GuardClient(broker="kafka://kafka-1:9092") as guard:
        result = await guard.check(callee="+39 347 555 5555", operator_id="op-1", client_id="acme")
"""

from callguard.client.guardclient import (
    CONSENT_BASES,
    DEFAULT_TIMEOUT,
    CheckResult,
    CheckTimeout,
    ConsentBasis,
    GuardClient,
    GuardClosed,
    GuardDecision,
    GuardError,
    GuardUnavailable,
    SyncGuardClient,
)
from callguard.core.schema import CallOutcome, Purpose

__all__ = [
    "CONSENT_BASES",
    "DEFAULT_TIMEOUT",
    "CallOutcome",
    "CheckResult",
    "CheckTimeout",
    "ConsentBasis",
    "GuardClient",
    "GuardClosed",
    "GuardDecision",
    "GuardError",
    "GuardUnavailable",
    "Purpose",
    "SyncGuardClient",
]
