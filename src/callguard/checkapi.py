"""``POST /v1/check`` on the worker's web server, for dialers that do not speak Kafka.

The endpoint is a thin front for :class:`callguard.client.GuardClient`: it
publishes the intent to ``callguard.intents`` and waits for its decision on
``callguard.decisions``, exactly like any Kafka dialer, so every HTTP check
is decided by the same agents and leaves the same audit record; nothing
bypasses the evidence. The client starts at the first check (it reads every
decision of the group) and is stopped with the worker.

Answers (always a JSON body):

- ``200``: the decision, as published on ``callguard.decisions``;
- ``400``: the body is not JSON, not an object, or breaks the intent contract
  (same validation as the worker: :func:`callguard.schema.parse_intent`);
  nothing was published;
- ``409``: an intent with this ``intent_id`` is already waiting here;
- ``413``: the body is over 64 KiB;
- ``503``: the worker is starting or stopping (retry);
- ``504``: no decision within ``CALLGUARD_CHECK_TIMEOUT``: never an allow,
  treat it as a deny (``"retryable": true``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import faust
import orjson
from faust.web import Request, Response, View
from mode import Service

from callguard.client import CheckTimeout, GuardClient, GuardClosed, GuardUnavailable
from callguard.config import Settings, kafka_security
from callguard.schema import MAX_MESSAGE_BYTES, MalformedIntent, dumps, parse_intent

log = logging.getLogger("callguard.checkapi")

CHECK_PATH = "/v1/check"
#: Prefix of the ``intent_id`` generated for a body without one.
GENERATED_PREFIX = "http-"


def install_check_endpoint(app: faust.App, settings: Settings) -> GuardClient:
    """Add ``POST /v1/check`` to ``app`` and a service that runs its client."""
    client = GuardClient(
        settings.broker,
        timeout=settings.check_timeout,
        default_region=settings.default_region,
        intent_prefix=GENERATED_PREFIX,
        client_id=f"{settings.app_id}-http-check",
        security=kafka_security(settings),
    )

    # The client reads every decision of the group (about 2.5 us of CPU each,
    # measured): it starts at the first check, so that a worker nobody sends
    # checks to does not pay for the whole group's decision rate.
    state: dict[str, Any] = {"lock": None, "stopping": False}

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
        """Stops the endpoint's client with the worker."""

        async def on_stop(self) -> None:
            state["stopping"] = True
            await client.close()

    app.service(CheckClient)

    class Check(View):
        """``POST /v1/check``: one intent in, its decision out."""

        async def post(self, request: Request, **kwargs: Any) -> Response:
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

        def _error(self, status: int, error: str, intent_id: str | None = None, retryable: bool = False) -> Response:
            body = {"error": error, "intent_id": intent_id, "retryable": retryable}
            return self.bytes(dumps(body), content_type="application/json", status=status)

    app.page(CHECK_PATH)(Check)
    return client
