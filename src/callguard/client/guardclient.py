"""The dialer's side of the contract: publish an intent, await its decision.

Dialers should not hand-write a Kafka producer, a correlation table and
timeouts, so this module does it once::

    async with GuardClient(broker="kafka://kafka-1:9092") as guard:
        result = await guard.check(callee="+39 347 555 5555", operator_id="op-1", client_id="acme")
        if result.allowed:
            dial()

One producer and one consumer serve any number of concurrent checks. The
consumer has no consumer group: it is assigned every partition of
``callguard.decisions`` and positioned at the end *before* the first intent is
sent, so no decision for this client's intents can be missed; pending checks
wait on futures keyed by ``intent_id``. Decisions for other clients' intents
are skipped by their Kafka key without being decoded.

A check that gets no decision in time returns :class:`CheckTimeout`, which is
never an allow: the caller must treat it as a deny (the intent may still be
decided later, and that decision is in the audit trail).

:class:`SyncGuardClient` runs the same client on a background event loop for
dialers that are not asyncio.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import uuid
from collections.abc import Coroutine, Mapping
from concurrent.futures import Future as ThreadFuture
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from types import MappingProxyType, TracebackType
from typing import Any, Literal, TypeAlias, TypeVar, get_args

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError, TopicAuthorizationFailedError

from callguard.config import broker_hosts
from callguard.core.numbers import normalise
from callguard.core.schema import (
    ALL_CLIENTS,
    CONSENTS_TOPIC,
    DECISIONS_TOPIC,
    INTENTS_TOPIC,
    OPTOUTS_TOPIC,
    OUTCOMES_TOPIC,
    CallOutcome,
    dumps,
    rfc3339,
)

_OUTCOMES = frozenset(CallOutcome)

log = logging.getLogger("callguard.client")

#: Seconds a check waits for its decision unless told otherwise.
DEFAULT_TIMEOUT = 2.0

#: ``ebr_transaction`` and ``ebr_inquiry``: the US pack's established business relationship
#: (``granted_at``: the last purchase or transaction, or the inquiry; 16 CFR 310.2(q)).
ConsentBasis: TypeAlias = Literal["consent", "contract", "request", "ebr_transaction", "ebr_inquiry"]
#: What ``callguard.consents`` accepts as ``basis``.
CONSENT_BASES: tuple[str, ...] = get_args(ConsentBasis)

T = TypeVar("T")


class GuardError(Exception):
    """The client could not do what was asked (never a decision)."""


class GuardUnavailable(GuardError):
    """The broker, or the ``callguard.decisions`` topic, was not there at start."""


class GuardClosed(GuardError):
    """The client was closed (or not started) while a check needed it."""


@dataclass(frozen=True, slots=True)
class GuardDecision:
    """A decision read from ``callguard.decisions`` for one of our intents."""

    intent_id: str
    decision: Literal["allow", "deny"]
    reasons: tuple[str, ...]
    retryable: bool
    callee: str | None
    versions: Mapping[str, str | None]
    decided_at: str
    #: The message exactly as published (carries any field added to the contract later).
    message: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def allowed(self) -> bool:
        """True only for an ``allow``: the one result that permits dialling."""
        return self.decision == "allow"

    @property
    def not_before(self) -> str | None:
        """On a deny that time alone lifts (calling hours, frequency cap,
        silent-call block): the earliest RFC 3339 time worth asking again."""
        value = self.message.get("not_before")
        return value if isinstance(value, str) else None

    @property
    def policy(self) -> str | None:
        """The version of the policy pack that decided (``versions.policy``):
        under a policy set, the pack of the callee's country."""
        value = self.versions.get("policy")
        return value if isinstance(value, str) else None

    @property
    def registers(self) -> Mapping[str, str | None]:
        """The US pack: each named do-not-call register checked and the as-of
        day of its list (``versions["register:us-dnc"]``), by register name."""
        return {k.partition(":")[2]: v for k, v in self.versions.items() if k.startswith("register:")}

    @property
    def requires_operator(self) -> bool:
        """True on an allow that follows a silent or abandoned call to this
        callee: place the call with an operator ready (no predictive dialling)."""
        return self.message.get("requires_operator") is True

    @classmethod
    def from_message(cls, message: Mapping[str, Any]) -> GuardDecision:
        # anything but an explicit "allow" is a deny: fail closed on surprises
        return cls(
            intent_id=str(message["intent_id"]),
            decision="allow" if message.get("decision") == "allow" else "deny",
            reasons=tuple(message.get("reasons") or ()),
            retryable=bool(message.get("retryable", False)),
            callee=message.get("callee"),
            versions=MappingProxyType(dict(message.get("versions") or {})),
            decided_at=str(message.get("decided_at", "")),
            message=MappingProxyType(dict(message)),
        )


@dataclass(frozen=True, slots=True)
class CheckTimeout:
    """No decision arrived within ``waited`` seconds. Never an allow: treat it as a deny.

    The intent may still be decided later (that decision is in the audit
    trail); ask again with a new ``intent_id`` if the call is still wanted.
    """

    intent_id: str
    waited: float
    decision: Literal["timeout"] = "timeout"
    reasons: tuple[str, ...] = ()
    retryable: bool = True
    callee: None = None

    @property
    def allowed(self) -> Literal[False]:
        return False


#: What :meth:`GuardClient.check` returns; only ``result.allowed`` permits a call.
CheckResult: TypeAlias = GuardDecision | CheckTimeout


def _when(at: date | datetime | None) -> str:
    if at is None:
        return rfc3339(datetime.now(UTC))
    if isinstance(at, datetime):
        if at.tzinfo is None:
            raise ValueError("'at' must be timezone-aware")
        return rfc3339(at)
    return at.isoformat()


class GuardClient:
    """Async client: ``check`` intents, ``report_outcome`` of calls, ``opt_out`` callees.

    ``broker`` is ``kafka://host:port[;host:port…]`` (or plain ``host:port``);
    ``timeout`` bounds each check (send + decision); ``default_region``
    normalises numbers for the intent's key so that every written form of one
    callee lands on the same partition, in order; ``intent_prefix`` starts
    the ids the client generates. ``fetch_max_wait_ms`` is how long the
    broker may hold an empty fetch of decisions: Apache Kafka answers as soon
    as a decision arrives, but some Kafka-protocol brokers (the embedded
    Tansu) hold every fetch that long, which then adds to each round trip.
    """

    def __init__(
        self,
        broker: str = "kafka://127.0.0.1:9092",
        *,
        timeout: float = DEFAULT_TIMEOUT,
        default_region: str = "IT",
        intent_prefix: str = "",
        start_timeout: float = 30.0,
        client_id: str = "callguard-client",
        fetch_max_wait_ms: int = 100,
        security: dict[str, Any] | None = None,
    ) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.hosts = broker_hosts(broker)
        self.timeout = timeout
        self.region = default_region
        self.intent_prefix = intent_prefix
        self.start_timeout = start_timeout
        self.client_id = client_id
        self.fetch_max_wait_ms = fetch_max_wait_ms
        #: aiokafka TLS/SASL options (``callguard.config.kafka_security``)
        self.security = security or {}
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._reader: asyncio.Task[None] | None = None
        self._pending: dict[str, asyncio.Future[GuardDecision]] = {}
        self._running = False
        self._decisions_refused = ""  # why this client may not read decisions (then it cannot check)

    # --- lifecycle --------------------------------------------------------------

    async def start(self) -> GuardClient:
        """Connect, assign every partition of ``callguard.decisions`` and seek
        to its end; only then may intents be sent (no decision can be missed).
        Raises :class:`GuardUnavailable` when the broker or topic is missing.
        A principal the broker's ACLs do not let read the decisions (the
        consent source of ``deploy/kafka/acls.sh``) starts without a reader:
        it publishes consents, opt-outs and outcomes, and its checks raise
        :class:`GuardUnavailable` saying why."""
        if self._running:
            return self
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.hosts,
            client_id=self.client_id,
            acks="all",
            linger_ms=2,
            max_batch_size=256 * 1024,
            **self.security,
        )
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.hosts,
            client_id=self.client_id,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="latest",
            isolation_level="read_committed",  # workers deciding exactly once: only committed decisions
            fetch_max_wait_ms=self.fetch_max_wait_ms,
            max_partition_fetch_bytes=4 * 1024 * 1024,
            **self.security,
        )
        try:
            await self._producer.start()
            await self._consumer.start()
            partitions = await self._decision_partitions()
            if partitions is None:  # a principal that only publishes (a consent source): no reader
                await self._consumer.stop()
                self._consumer = None
                self._running = True
                return self
            assigned = [TopicPartition(DECISIONS_TOPIC, p) for p in sorted(partitions)]
            self._consumer.assign(assigned)
            await self._consumer.seek_to_end(*assigned)
            for tp in assigned:  # resolve every position now, before any intent is sent
                await self._consumer.position(tp)
        except (KafkaError, OSError) as exc:
            await self._stop_clients()
            from callguard.kafka.access import access_problem

            refused = await access_problem(self.hosts, self.security, timeout=min(self.start_timeout, 10.0))
            raise GuardUnavailable(refused or f"cannot reach the broker at {';'.join(self.hosts)}: {exc}") from None
        except BaseException:
            await self._stop_clients()
            raise
        self._reader = asyncio.create_task(self._read(), name="callguard-client-decisions")
        self._running = True
        return self

    async def _decision_partitions(self) -> set[int] | None:
        """Partitions of ``callguard.decisions`` from a full metadata fetch,
        which (unlike a metadata request for one topic) never auto-creates it;
        None when the broker's ACLs do not let this client read it (the reason
        is kept for :meth:`submit`)."""
        assert self._consumer is not None
        from callguard.kafka.access import refuse_hidden_topic

        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.start_timeout
        while True:
            cluster = await self._consumer._client.fetch_all_metadata()
            partitions = cluster.partitions_for_topic(DECISIONS_TOPIC)
            if partitions:
                return set(partitions)
            try:
                await refuse_hidden_topic(self._consumer._client, DECISIONS_TOPIC, self.security)
            except TopicAuthorizationFailedError as exc:
                self._decisions_refused = f"{exc}: this client may publish consents, opt-outs and outcomes only"
                return None
            if loop.time() > deadline:
                raise GuardUnavailable(
                    f"topic {DECISIONS_TOPIC} does not exist on {';'.join(self.hosts)}: start a callguard worker first"
                )
            await asyncio.sleep(0.5)

    async def close(self) -> None:
        """Stop reading, fail the checks still waiting with :class:`GuardClosed`
        and flush what was sent."""
        self._running = False
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
            self._reader = None
        for future in self._pending.values():
            if not future.done():
                future.set_exception(GuardClosed("the client was closed before the decision arrived"))
        await self._stop_clients()

    async def _stop_clients(self) -> None:
        for client in (self._producer, self._consumer):
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.stop()
        self._producer = self._consumer = None

    async def __aenter__(self) -> GuardClient:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # --- decisions ----------------------------------------------------------------

    async def _read(self) -> None:
        assert self._consumer is not None
        consumer = self._consumer
        while True:
            try:
                batches = await consumer.getmany(timeout_ms=500, max_records=10_000)
            except Exception as exc:  # transient (leader moved, broker restarting): keep reading
                log.warning("reading %s failed (%s); retrying", DECISIONS_TOPIC, exc)
                await asyncio.sleep(0.5)
                continue
            for records in batches.values():
                for record in records:
                    self._deliver(record.key, record.value)

    def _deliver(self, key: bytes | None, value: bytes | None) -> None:
        pending = self._pending
        if not pending or value is None:
            return
        if key is not None:  # the key is the intent_id: skip others' decisions undecoded
            future = pending.get(key.decode("utf-8", "replace"))
            if future is None:
                return
        try:
            message = orjson.loads(value)
            future = pending.get(message["intent_id"])
            if future is not None and not future.done():  # a duplicate (at-least-once) is ignored
                future.set_result(GuardDecision.from_message(message))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            log.warning("ignoring an unreadable decision: %s", exc)

    # --- the checks ----------------------------------------------------------------

    def new_intent_id(self) -> str:
        return f"{self.intent_prefix}{uuid.uuid4().hex}"

    def _key(self, callee: str) -> bytes:
        return (normalise(callee, self.region) or callee).encode()

    async def check(
        self,
        callee: str,
        operator_id: str,
        client_id: str,
        purpose: str = "marketing",
        caller_id: str | None = None,
        campaign_id: str | None = None,
        *,
        intent_id: str | None = None,
        requested_at: datetime | None = None,
        automated: bool = False,
        timeout: float | None = None,
    ) -> CheckResult:
        """Publish one intent and wait for its decision.

        ``purpose``: ``marketing`` (advertising, sales, commercial
        communication), ``survey`` (market research), ``statistical``
        (statistical surveys) or ``service``. ``automated``: the call is
        placed by an automated system without an operator (it then needs the
        callee's consent for this client).

        Returns a :class:`GuardDecision`, or a :class:`CheckTimeout` when
        nothing arrived within ``timeout`` (default: the client's). Only
        ``result.allowed`` permits the call. ``intent_id`` defaults to a
        fresh UUID; one you pass must be unique per call attempt.
        """
        intent: dict[str, Any] = {
            "intent_id": intent_id or self.new_intent_id(),
            "callee": callee,
            "operator_id": operator_id,
            "client_id": client_id,
            "purpose": purpose,
        }
        if caller_id is not None:
            intent["caller_id"] = caller_id
        if campaign_id is not None:
            intent["campaign_id"] = campaign_id
        if requested_at is not None:
            intent["requested_at"] = _when(requested_at)
        if automated:
            intent["automated"] = True
        return await self.submit(intent, timeout=timeout)

    async def submit(self, intent: Mapping[str, Any], *, timeout: float | None = None) -> CheckResult:
        """Publish an intent built by the caller (fields as in the contract,
        ``intent_id`` and ``callee`` required) and wait for its decision."""
        producer = self._producer
        if not self._running or producer is None:
            raise GuardClosed("the client is not started")
        if self._consumer is None:
            raise GuardUnavailable(self._decisions_refused)
        intent_id = intent["intent_id"]
        callee = intent["callee"]
        if not isinstance(intent_id, str) or not isinstance(callee, str):
            raise ValueError("intent_id and callee must be strings")
        if intent_id in self._pending:
            raise ValueError(f"intent {intent_id!r} is already being checked")
        wait = self.timeout if timeout is None else timeout
        future: asyncio.Future[GuardDecision] = asyncio.get_running_loop().create_future()
        self._pending[intent_id] = future
        try:
            async with asyncio.timeout(wait):
                acked = await producer.send(INTENTS_TOPIC, dumps(intent), key=self._key(callee))
                await acked  # on the broker: it will be decided (at least once)
                return await future
        except TimeoutError:
            log.info("no decision for intent %s within %.2fs: treated as a deny", intent_id, wait)
            return CheckTimeout(intent_id, wait)
        finally:
            self._pending.pop(intent_id, None)

    # --- the other inputs ----------------------------------------------------------

    async def report_outcome(self, intent_id: str, outcome: CallOutcome | str, at: datetime | None = None) -> None:
        """Publish what happened to a call to ``callguard.outcomes`` (key: ``intent_id``)."""
        if outcome not in _OUTCOMES:
            raise ValueError(f"outcome must be one of {', '.join(sorted(_OUTCOMES))}, got {outcome!r}")
        message = {"intent_id": intent_id, "outcome": outcome, "at": _when(at)}
        await self._publish(OUTCOMES_TOPIC, intent_id.encode(), message)

    async def record_consent(
        self,
        callee: str,
        client_id: str,
        basis: ConsentBasis = "consent",
        granted_at: date | datetime | None = None,
        ends_at: date | datetime | None = None,
    ) -> None:
        """Publish a consent, a contract or a call request (``basis``
        ``request``: the person asked this client for a call), or for a US
        callee an established business relationship (``ebr_transaction``,
        ``ebr_inquiry``), to ``callguard.consents``; it applies within about a second.
        ``granted_at`` defaults to now. A withdrawal is :meth:`opt_out`."""
        if basis not in CONSENT_BASES:
            raise ValueError(f"basis must be one of {', '.join(CONSENT_BASES)}, got {basis!r}")
        message: dict[str, Any] = {
            "callee": callee,
            "client_id": client_id,
            "basis": basis,
            "granted_at": _when(granted_at),
        }
        if ends_at is not None:
            message["ends_at"] = _when(ends_at)
        await self._publish(CONSENTS_TOPIC, self._key(callee), message)

    async def opt_out(self, callee: str, client_id: str = ALL_CLIENTS, at: date | datetime | None = None) -> None:
        """Publish an opt-out to ``callguard.optouts`` (``client_id`` ``*``: every
        client; ``at`` defaults to now). It applies within about a second."""
        await self._publish(
            OPTOUTS_TOPIC, self._key(callee), {"callee": callee, "client_id": client_id, "at": _when(at)}
        )

    async def _publish(self, topic: str, key: bytes, message: Mapping[str, Any]) -> None:
        producer = self._producer
        if not self._running or producer is None:
            raise GuardClosed("the client is not started")
        acked = await producer.send(topic, dumps(message), key=key)
        await acked


class SyncGuardClient:
    """:class:`GuardClient` for dialers that are not asyncio: the client runs
    on its own event loop in a background thread; methods block. Safe to call
    from many threads at once (they share one producer and one consumer)."""

    def __init__(self, broker: str = "kafka://127.0.0.1:9092", **options: Any) -> None:
        self._client = GuardClient(broker, **options)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> SyncGuardClient:
        if self._loop is not None:
            return self
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="callguard-client", daemon=True)
        thread.start()
        self._loop, self._thread = loop, thread
        try:
            self._call(self._client.start())
        except BaseException:
            self._stop_loop()
            raise
        return self

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._loop is None:
            coro.close()
            raise GuardClosed("the client is not started")
        future: ThreadFuture[T] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result()

    def check(self, callee: str, operator_id: str, client_id: str, **fields: Any) -> CheckResult:
        """Blocking :meth:`GuardClient.check` (same arguments)."""
        return self._call(self._client.check(callee, operator_id, client_id, **fields))

    def report_outcome(self, intent_id: str, outcome: CallOutcome | str, at: datetime | None = None) -> None:
        self._call(self._client.report_outcome(intent_id, outcome, at))

    def opt_out(self, callee: str, client_id: str = ALL_CLIENTS, at: date | datetime | None = None) -> None:
        self._call(self._client.opt_out(callee, client_id, at))

    def record_consent(
        self,
        callee: str,
        client_id: str,
        basis: ConsentBasis = "consent",
        granted_at: date | datetime | None = None,
        ends_at: date | datetime | None = None,
    ) -> None:
        self._call(self._client.record_consent(callee, client_id, basis, granted_at, ends_at))

    def close(self) -> None:
        if self._loop is None:
            return
        try:
            self._call(self._client.close())
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        loop, thread = self._loop, self._thread
        self._loop = self._thread = None
        if loop is not None:
            loop.call_soon_threadsafe(loop.stop)
            if thread is not None:
                thread.join(10)
            loop.close()

    def __enter__(self) -> SyncGuardClient:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
