"""Bearer tokens for ``POST /v1/check``: who may ask, for which operator and clients.

A token is shown once, when issued, and stored only as its SHA-256 hash, so
a copy of Redis does not hand out working tokens. The checks here are pure:
:func:`authorize` says what an HTTP answer a request with a token gets,
:class:`FailureLimiter` slows down an address that keeps presenting bad
tokens. Storage is :class:`callguard.storage.stores.Stores` (``cg:tokens``).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

__all__ = ["TOKEN_PREFIX", "FailureLimiter", "TokenGrant", "authorize", "bearer", "new_token", "token_hash"]

#: Tokens start with this, so that a leaked one is recognised by secret scanners.
TOKEN_PREFIX = "cgk_"


def new_token() -> str:
    """A new bearer token: 256 random bits."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """What is stored for a token (a lookup key: the tokens are random, so no salt is needed)."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class TokenGrant:
    """What a token lets its holder ask: one operator's checks, for some clients (none named: any)."""

    name: str
    operator_id: str
    clients: tuple[str, ...] = ()
    issued_at: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "operator_id": self.operator_id,
            "clients": list(self.clients),
            "issued_at": self.issued_at,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TokenGrant:
        return cls(
            str(data["name"]),
            str(data["operator_id"]),
            tuple(data.get("clients") or ()),
            str(data.get("issued_at", "")),
        )


def bearer(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer TOKEN`` header, or None."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        return None
    return token


def authorize(grant: TokenGrant | None, operator_id: Any, client_id: Any) -> tuple[int, str]:
    """(HTTP status, error) for a request whose token is ``grant`` (None:
    missing or unknown): 401 without a valid token, 403 when the intent's
    operator is not the token's or its client is not among the token's
    clients (when it names any), 200 when the request may go on."""
    if grant is None:
        return 401, "a valid bearer token is required (Authorization: Bearer TOKEN)"
    if operator_id != grant.operator_id:
        return 403, "this token may not check intents of that operator_id"
    if grant.clients and client_id not in grant.clients:
        return 403, "this token may not check intents of that client_id"
    return 200, ""


@dataclass
class FailureLimiter:
    """At most ``limit`` refused tokens per address in any ``window`` seconds;
    past that the address gets 429 until its oldest failure ages out."""

    limit: int = 10
    window: float = 60.0
    clock: Any = time.monotonic
    _failures: dict[str, deque[float]] = field(default_factory=dict)

    def blocked_for(self, address: str) -> float:
        """Seconds until ``address`` may try again (0: now)."""
        failures = self._failures.get(address)
        if not failures:
            return 0.0
        now = self.clock()
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        if not failures:
            del self._failures[address]
            return 0.0
        if len(failures) < self.limit:
            return 0.0
        return float(failures[0] + self.window - now)

    def failed(self, address: str) -> None:
        if len(self._failures) > 10_000:  # many addresses: forget the quiet ones first
            for quiet in [a for a, f in self._failures.items() if not f or f[-1] <= self.clock() - self.window]:
                del self._failures[quiet]
        self._failures.setdefault(address, deque()).append(self.clock())
