"""``POST /v1/check`` on the worker's web server, for dialers that do not speak Kafka.

The endpoint is a thin front for :class:`callguard.client.GuardClient`: it
publishes the intent to ``callguard.intents`` and waits for its decision on
``callguard.decisions``, exactly like any Kafka dialer, so every HTTP check
is decided by the same agents and leaves the same audit record; nothing
bypasses the evidence. The client starts at the first check (it reads every
decision of the group) and is stopped with the worker.

Every request carries ``Authorization: Bearer TOKEN`` (``callguard tokens
issue``); the token names the operator, and optionally the clients, it may
check for. A refused request publishes nothing and counts nothing.

Answers (always a JSON body):

- ``200``: the decision, as published on ``callguard.decisions``;
- ``401``: no token, or one that is unknown or revoked;
- ``403``: the intent's ``operator_id`` is not the token's, or its
  ``client_id`` not among the token's clients;
- ``429``: too many refused tokens from this address (``Retry-After``);
- ``400``: the body is not JSON, not an object, or breaks the intent contract
  (same validation as the worker: :func:`callguard.core.schema.parse_intent`);
  nothing was published;
- ``409``: an intent with this ``intent_id`` is already waiting here;
- ``413``: the body is over 64 KiB;
- ``503``: the worker is starting or stopping, or Redis cannot say whether
  the token is valid (retry);
- ``504``: no decision within ``CALLGUARD_CHECK_TIMEOUT``: never an allow,
  treat it as a deny (``"retryable": true``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import faust
import orjson
from faust.web import Request, Response, View
from mode import Service
from redis.exceptions import RedisError

from callguard.client import CheckTimeout, GuardClient, GuardClosed, GuardUnavailable
from callguard.config import Settings, kafka_security
from callguard.core.schema import MAX_MESSAGE_BYTES, MalformedIntent, dumps, parse_intent
from callguard.core.tokens import FailureLimiter, TokenGrant, authorize, bearer, token_hash
from callguard.storage.stores import Stores

log = logging.getLogger("callguard.checkapi")

CHECK_PATH = "/v1/check"
#: Prefix of the ``intent_id`` generated for a body without one.
GENERATED_PREFIX = "http-"


#: Seconds between two writes of one token's "last used" time by one worker.
USED_EVERY = 60.0
#: Seconds between two reads of the tokens' version: a revoked token is refused within this.
TOKENS_REFRESH = 1.0


class TokenGrants:
    """The issued tokens' grants, read from Redis again whenever their version
    changes (checked once a second). While Redis does not answer the last
    grants read stay in use: an intent checked then is denied
    ``lookup_unavailable`` anyway, so a stale grant can never get an allow."""

    def __init__(self, stores: Stores) -> None:
        self.stores = stores
        self.loaded = False
        self._version: str | None = None
        self._grants: dict[str, TokenGrant] = {}
        self._failing = False

    async def get(self, digest: str) -> TokenGrant | None:
        """The grant of a token's hash; one not read yet (issued less than a
        second ago) is asked of Redis directly."""
        grant = self._grants.get(digest)
        if grant is None:
            grant = await self.stores.token_grant(digest)
            if grant is not None:
                self._grants[digest] = grant
        return grant

    async def refresh(self) -> None:
        try:
            version = await self.stores.tokens_version()
            if not self.loaded or version != self._version:
                self._grants = await self.stores.token_grants()
                self._version, self.loaded = version, True
        except (RedisError, OSError, TimeoutError) as exc:
            if not self._failing:
                log.warning(
                    "cannot read the check tokens from Redis (%s): using the last ones read", type(exc).__name__
                )
            self._failing = True
        else:
            self._failing = False


def install_check_endpoint(
    app: faust.App, settings: Settings, stores: Stores, refused: Callable[[int], None]
) -> GuardClient:
    """Add ``POST /v1/check`` to ``app`` and a service that runs its client;
    ``refused(status)`` counts each refused request."""
    client = GuardClient(
        settings.broker,
        timeout=settings.check_timeout,
        default_region=settings.default_region,
        intent_prefix=GENERATED_PREFIX,
        client_id=f"{settings.app_id}-http-check",
        security=kafka_security(settings),
    )

    # The client reads every decision of the group (a little CPU each, see
    # DEVELOPERS.md): it starts at the first check, so that a worker nobody sends
    # checks to does not pay for the whole group's decision rate.
    state: dict[str, Any] = {"lock": None, "stopping": False}
    grants = TokenGrants(stores)
    limiter = FailureLimiter()
    used_at: dict[str, float] = {}  # token name -> when this worker last wrote its use

    async def ready() -> bool:
        if state["stopping"]:
            return False
        if state["lock"] is None:
            state["lock"] = asyncio.Lock()
        async with state["lock"]:
            if not state["stopping"]:
                try:
                    await client.start()  # returns at once when running
                except GuardUnavailable as exc:
                    log.warning("cannot start the /v1/check client: %s", exc)
                    return False
        return not state["stopping"]

    class CheckClient(Service):
        """Keeps the tokens fresh (once a second) and stops the endpoint's client with the worker."""

        @Service.task
        async def _refresh_tokens(self) -> None:
            while not self.should_stop:
                await grants.refresh()
                await self.sleep(TOKENS_REFRESH)

        async def on_stop(self) -> None:
            state["stopping"] = True
            await client.close()

    app.service(CheckClient)

    class Check(View):
        """``POST /v1/check``: one intent in, its decision out."""

        async def post(self, request: Request, **kwargs: Any) -> Response:
            address = str(getattr(request, "remote", None) or "?")
            wait = limiter.blocked_for(address)
            if wait > 0:
                refused(429)
                return self._error(
                    429,
                    "too many refused tokens from this address",
                    retryable=True,
                    headers={"Retry-After": str(max(1, round(wait)))},
                )
            token = bearer(request.headers.get("Authorization"))
            if not grants.loaded:
                refused(503)
                return self._error(503, "the check tokens are not loaded yet (Redis)", retryable=True)
            try:
                grant = None if token is None else await grants.get(token_hash(token))
            except (RedisError, OSError, TimeoutError):
                refused(503)
                return self._error(503, "cannot check the token now (Redis)", retryable=True)
            if grant is None:
                limiter.failed(address)
                refused(401)
                return self._error(401, authorize(None, None, None)[1], headers={"WWW-Authenticate": "Bearer"})
            declared = request.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > MAX_MESSAGE_BYTES:
                return self._error(413, f"body larger than {MAX_MESSAGE_BYTES} bytes")
            try:
                body = await request.read()
            except Exception:  # the web server refused the body (too large)
                return self._error(413, f"body larger than {MAX_MESSAGE_BYTES} bytes")
            if len(body) > MAX_MESSAGE_BYTES:
                return self._error(413, f"body larger than {MAX_MESSAGE_BYTES} bytes")
            try:
                intent = orjson.loads(body)
            except orjson.JSONDecodeError as exc:
                return self._error(400, f"not JSON: {exc}")
            if not isinstance(intent, dict):
                return self._error(400, "not a JSON object")
            if intent.get("intent_id") is None:
                intent["intent_id"] = client.new_intent_id()
            try:
                parse_intent(dumps(intent))  # the worker's own validation: a 400 here is a dead letter there
            except MalformedIntent as exc:
                return self._error(400, exc.error, intent_id=exc.intent_id)
            status, error = authorize(grant, intent.get("operator_id"), intent.get("client_id"))
            if status != 200:
                refused(status)
                return self._error(status, error, intent_id=intent.get("intent_id"))
            await mark_used(grant.name)
            intent_id = intent["intent_id"]
            if not await ready():
                return self._error(503, "the worker is starting or stopping", intent_id=intent_id, retryable=True)
            try:
                result = await client.submit(intent)
            except ValueError as exc:
                return self._error(409, str(exc), intent_id=intent_id)
            except GuardClosed:
                return self._error(503, "the worker is starting or stopping", intent_id=intent_id, retryable=True)
            if isinstance(result, CheckTimeout):
                return self._error(
                    504,
                    f"no decision within {result.waited:g}s: treat as a deny",
                    intent_id=intent_id,
                    retryable=True,
                )
            return self.bytes(dumps(dict(result.message)), content_type="application/json")

        def _error(
            self,
            status: int,
            error: str,
            intent_id: str | None = None,
            retryable: bool = False,
            headers: dict[str, str] | None = None,
        ) -> Response:
            body = {"error": error, "intent_id": intent_id, "retryable": retryable}
            return self.bytes(dumps(body), content_type="application/json", status=status, headers=headers)

    async def mark_used(name: str) -> None:
        """Record when a token was last used, at most once a minute per worker."""
        now = time.monotonic()
        if now - used_at.get(name, -USED_EVERY) < USED_EVERY:
            return
        used_at[name] = now
        with contextlib.suppress(RedisError, OSError, TimeoutError):  # a missed "last used" is no refusal
            await stores.token_used(name, datetime.now(UTC))

    app.page(CHECK_PATH)(Check)
    return client
