"""The Faust worker: two agents and its web pages, as thin as Faust allows.

- ``decide`` decides ``callguard.intents`` in batches through
  :class:`callguard.worker.guard.Guard`. Its records skip Faust's per-event path:
  Faust's consumer hands each fetched partition's records to a
  :class:`callguard.worker.batching.BatchSource`, and a batch is acked only after
  the guard returned, i.e. after every decision, audit record and dead
  letter of the batch was acknowledged by the broker (at-least-once).
- ``optouts`` consumes ``callguard.optouts`` and writes them to Redis, so an
  opt-out takes effect for the next intent within about a second.
- ``outcomes`` consumes ``callguard.outcomes``: silent and abandoned calls
  block the callee for the client (``recent_silent_call``) and every outcome
  counts towards its campaign's abandoned-call rate.

Pages: ``/health`` (liveness), ``/ready`` (readiness, says what is wrong),
``/metrics`` (Prometheus) and ``POST /v1/check`` (a synchronous check through
the same topics, ``checkapi.py``); a timer samples the group's lag and the
register's age and checkpoints the audit chains' heads every
``CALLGUARD_METRICS_INTERVAL`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import logging.config
import os
import tempfile
import urllib.parse
import weakref
from collections.abc import Awaitable
from dataclasses import replace
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaError,
)
from faust.web import Request, Response, View

from callguard.config import Settings, broker_hosts, kafka_security, safe_url
from callguard.core.audit import ChainHeads
from callguard.core.policy import PolicySettings
from callguard.core.policyfile import PolicyError, policy_for
from callguard.core.schema import (
    AUDIT_TOPIC,
    CONSENTS_TOPIC,
    INTENTS_TOPIC,
    OPTOUTS_TOPIC,
    OUTCOMES_TOPIC,
)
from callguard.kafka.auditlog import last_record
from callguard.kafka.lag import LagProbe
from callguard.kafka.publishing import BatchPublisher
from callguard.kafka.topics import ALL_TOPICS, BrokerUnavailable, ensure_topics, partition_count
from callguard.logs import logging_config
from callguard.storage.factory import open_stores
from callguard.worker.batching import BatchSource
from callguard.worker.batching import install as install_batching
from callguard.worker.guard import Guard, Raw
from callguard.worker.health import DAY, data_checks, safe_read_data, utcnow
from callguard.worker.metrics import CONTENT_TYPE, Metrics
from callguard.worker.transactions import Transactions

log = logging.getLogger("callguard.app")


async def _or_exit(work: Awaitable[Any]) -> None:
    """Run one batch; if it raises, stop the process at once.

    An exception escaping a Faust agent makes Faust ack the failed batch and
    the events buffered behind it, commit them, and restart the agent: those
    intents would get no decision. Exiting without a commit instead leaves
    them to be redelivered to the restarted (or another) worker. The guard
    handles bad input and Redis/broker faults itself; this is for bugs.
    """
    try:
        await work
    except Exception as exc:
        log.critical("batch failed with %s; exiting without committing its offsets", type(exc).__name__)
        logging.shutdown()
        os._exit(70)


def _raw(event: Any) -> Raw:
    message = event.message
    return Raw(message.value, message.topic, message.partition, message.offset, message.timestamp)


#: Each worker app's fetch wait, read where Faust builds the app's consumer.
_FETCH_MAX_WAIT_MS: weakref.WeakKeyDictionary[faust.App, int] = weakref.WeakKeyDictionary()


def _shorten_fetch_wait(app: faust.App, max_wait_ms: int) -> None:
    """Faust hard-codes ``fetch_max_wait_ms=1500`` for its consumer. Apache
    Kafka answers a waiting fetch as soon as data arrives, but not every
    Kafka-protocol broker does (Tansu holds its answer for part of the wait,
    which with Faust's wait showed in every decision: DEVELOPERS.md). A short
    wait bounds decision latency on any broker for a little idle CPU
    (``CALLGUARD_FETCH_MAX_WAIT_MS``). Patched at the one place Faust builds
    the consumer, for the apps registered here."""
    from faust.transport.drivers import aiokafka as faust_aiokafka

    _FETCH_MAX_WAIT_MS[app] = max_wait_ms
    thread = faust_aiokafka.AIOKafkaConsumerThread
    original = thread._create_worker_consumer
    if getattr(original, "_callguard_patched", False):
        return

    def create(self: Any, transport: Any) -> Any:
        consumer = original(self, transport)
        wait = _FETCH_MAX_WAIT_MS.get(self.app)
        if wait is not None:
            consumer._fetch_max_wait_ms = wait
        return consumer

    create._callguard_patched = True  # type: ignore[attr-defined]
    thread._create_worker_consumer = create  # type: ignore[method-assign]


def _faust_datadir(app_id: str) -> str:
    path = os.path.join(tempfile.gettempdir(), "callguard-faust", app_id)
    os.makedirs(path, exist_ok=True)
    return path


def faust_credentials(settings: Settings) -> Any:
    """The Kafka TLS/SASL settings as Faust credentials (None for PLAINTEXT)."""
    security = kafka_security(settings)
    if not security:
        return None
    if "sasl_mechanism" in security:
        return faust.SASLCredentials(
            username=security["sasl_plain_username"],
            password=security["sasl_plain_password"],
            ssl_context=security.get("ssl_context"),
            mechanism=security["sasl_mechanism"],
        )
    return faust.SSLCredentials(security["ssl_context"])


def _canonical_url(settings: Settings) -> str | None:
    """Faust's name for this worker in the group's assignments; by default
    ``http://{web_host}:{web_port}``. A static member (``CALLGUARD_INSTANCE_ID``)
    restarted within the session timeout is handed its previous assignment as
    stored by the group, and Faust's assignor asserts that the name in it is
    its own: with another web port the restarted worker's group coordinator
    died on that assertion and the worker never consumed again. Named by its
    instance id instead, a static member keeps its name across restarts
    (callguard routes nothing by this URL: it has no Faust tables)."""
    if not settings.instance_id:
        return None
    return "http://static-member/" + urllib.parse.quote(settings.instance_id, safe="")


def create_app(
    settings: Settings, audit_partitions: int | None = None, policy: PolicySettings | None = None
) -> faust.App:
    """Build the Faust app for ``settings`` (nothing connects until it starts);
    ``policy`` defaults to the file ``CALLGUARD_POLICY`` names."""
    return WorkerApp(settings, audit_partitions, policy).app


def _faust_app(settings: Settings) -> faust.App:
    return faust.App(
        settings.app_id,
        broker=settings.broker,
        store="memory://",
        # Faust makes a data directory even with in-memory tables: keep it out
        # of the working directory (nothing in it needs to survive a restart)
        datadir=_faust_datadir(settings.app_id),
        web_port=settings.web_port,
        web_host=settings.web_host,
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replicas,
        topic_allow_declare=True,
        topic_disable_leader=True,  # no leader-only tasks: spare the extra topic
        producer_acks=-1,  # and idempotent unless told otherwise: _idempotent_producer
        producer_linger=0.005,
        producer_compression_type=None if settings.compression == "none" else settings.compression,
        producer_max_batch_size=256 * 1024,
        consumer_auto_offset_reset="earliest",
        consumer_group_instance_id=settings.instance_id or None,
        canonical_url=_canonical_url(settings),
        broker_session_timeout=settings.session_timeout,
        broker_heartbeat_interval=max(settings.session_timeout / 10, 0.5),
        broker_rebalance_timeout=settings.session_timeout,
        broker_request_timeout=max(settings.session_timeout, 10.0) + 5.0,
        broker_commit_every=settings.batch_size,
        broker_commit_interval=1.0,
        stream_buffer_maxsize=max(4 * settings.batch_size, 4096),
        web_enabled=True,
        logging_config=None,
        broker_credentials=faust_credentials(settings),
    )


class WorkerApp:
    """The worker: its Faust app (``app``) and what the app's agents, pages and
    timers share: the guard, the stores, the metrics, the audit chain's tail
    reader, the lag probe and the last readiness. Faust registers the agents,
    pages, timers and signal handlers as functions; each one here hands over
    to a method."""

    def __init__(
        self, settings: Settings, audit_partitions: int | None = None, policy: PolicySettings | None = None
    ) -> None:
        self.settings = settings
        self.app = app = _faust_app(settings)
        _shorten_fetch_wait(app, settings.fetch_max_wait_ms)
        if settings.producer_idempotence != "false":
            _idempotent_producer(app)
        self.metrics = Metrics()
        self.stores = open_stores(
            settings.redis_url,
            settings.redis_timeout,
            settings.redis_replica_url or None,
            cluster_replicas=settings.redis_cluster_reads == "replicas",
        )
        self.policy = policy if policy is not None else policy_for(settings)
        partitions = audit_partitions or settings.topic_partitions

        # Faust's own aiokafka producer (acks=all), one record batch per partition and publish
        producer: Any = app.producer
        send: Any = BatchPublisher(lambda: producer._ensure_producer())
        self.transactions: Transactions | None = None
        if settings.processing_guarantee == "exactly_once":  # transactions.py: one transaction per partition's batch
            self.transactions = Transactions(
                broker_hosts(settings.broker),
                settings.app_id,
                handle=lambda raws: self.guard.handle_intents(raws),
                generation=lambda: int(app.consumer_generation_id),
                forget=lambda: self.guard.chain.forget(),
                options={
                    "acks": "all",
                    "linger_ms": 5,
                    "max_batch_size": 256 * 1024,
                    "compression_type": None if settings.compression == "none" else settings.compression,
                    **kafka_security(settings),
                },
                audit_partitions=partitions,
            )
            send = self.transactions.sender(send)

        self._tail_reader: AIOKafkaConsumer | None = None
        # one reader, one partition at a time (exactly_once decides partitions concurrently)
        self._tail_lock = asyncio.Lock()
        self.guard = Guard(
            self.stores,
            send,
            self.policy,
            settings.default_region,
            self.metrics,
            chain=ChainHeads(self.load_tail),
            audit_partitions=partitions,
        )
        app.callguard_guard = self.guard  # type: ignore[attr-defined]
        app.callguard_metrics = self.metrics  # type: ignore[attr-defined]
        self.probe = LagProbe(
            broker_hosts(settings.broker), settings.app_id, INTENTS_TOPIC, security=kafka_security(settings)
        )
        self._known_scopes: set[str] = set()  # register scopes with gauges
        self._was_ready: bool | None = None  # readiness at the last sample (logged when it changes)

        self.metrics.register_max_age.set(self.policy.register_max_age_days * DAY)
        self._install_agents()
        self._install_pages()
        self._install_timers()
        # dialer integration: POST /v1/check through the same topics
        from callguard.worker.checkapi import install_check_endpoint

        install_check_endpoint(
            app, settings, self.stores, lambda status: self.metrics.check_refusals.labels(str(status)).inc()
        )

    def _topic(self, name: str) -> faust.TopicT:
        return self.app.topic(
            name,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            partitions=self.settings.topic_partitions,
            replicas=self.settings.topic_replicas,
        )

    def _install_agents(self) -> None:
        app, settings, guard, transactions = self.app, self.settings, self.guard, self.transactions
        topics = {name: self._topic(name) for name in ALL_TOPICS}

        # Intents skip Faust's per-event path (batching.py): the consumer hands
        # each fetched partition's records to this source, the agent decides them
        # in batches and acks each batch once the broker acknowledged its output.
        intents = BatchSource(app, topics[INTENTS_TOPIC], max_buffered=max(4 * settings.batch_size, 4096))
        install_batching(app, [intents])

        @app.agent(topics[INTENTS_TOPIC], name="callguard.decide")
        async def decide(stream: Any) -> None:  # supervised by Faust; its records come from ``intents``, not the stream
            async for batch in intents.batches(settings.batch_size):
                await _or_exit(guard.handle_intents(batch.raws) if transactions is None else transactions.decide(batch))
                intents.done(batch)

        @app.agent(topics[OPTOUTS_TOPIC], name="callguard.optouts")
        async def optouts(stream: Any) -> None:
            async for events in stream.take_events(settings.batch_size, within=settings.batch_wait):
                await _or_exit(guard.handle_optouts([_raw(event) for event in events]))

        @app.agent(topics[CONSENTS_TOPIC], name="callguard.consents")
        async def consents(stream: Any) -> None:
            async for events in stream.take_events(settings.batch_size, within=settings.batch_wait):
                await _or_exit(guard.handle_consents([_raw(event) for event in events]))

        @app.agent(topics[OUTCOMES_TOPIC], name="callguard.outcomes")
        async def outcomes(stream: Any) -> None:
            async for events in stream.take_events(settings.batch_size, within=settings.batch_wait):
                await _or_exit(guard.handle_outcomes([_raw(event) for event in events]))

    def _install_pages(self) -> None:
        app = self.app

        @app.page("/health")
        async def health(web: View, request: Request) -> Response:
            """200 only when the intents agent is consuming and Redis answers."""
            body = await self.health()
            response: Response = web.json(body, status=200 if body["status"] == "ok" else 503)
            return response

        # operations: readiness and metrics

        @app.page("/ready")
        async def ready(web: View, request: Request) -> Response:
            """200 when the worker can decide well; 503 with the reasons otherwise."""
            ok, body = await self.readiness()
            response: Response = web.json(body, status=200 if ok else 503)
            return response

        @app.page("/metrics")
        async def metrics_page(web: View, request: Request) -> Response:
            """Prometheus text format."""
            response: Response = web.bytes(self.metrics.exposition(), headers={"Content-Type": CONTENT_TYPE})
            return response

    async def health(self) -> dict[str, Any]:
        """The ``/health`` body: ``status`` ``ok`` when the intents agent consumes and Redis answers."""
        app, stats = self.app, self.metrics.totals
        redis_ok = await self.stores.ping()
        assigned = self.assigned_partitions()
        agent_ok = (
            bool(app.agents)
            and not any(agent.crashed for agent in app.agents.values())
            and bool(assigned)
            and not app.rebalancing
        )
        return {
            "status": "ok" if redis_ok and agent_ok else "unavailable",
            "redis": "ok" if redis_ok else "unreachable",
            "consuming": agent_ok,
            "assigned_partitions": assigned,
            "decisions": stats.allowed + stats.denied,
            "lookup_errors": stats.lookup_errors,
        }

    def assigned_partitions(self) -> list[int]:
        return sorted(tp.partition for tp in self.app.consumer.assignment() if tp.topic == INTENTS_TOPIC)

    async def load_tail(self, partition: int) -> bytes | None:
        """The last audit record of a partition, to continue its hash chain."""
        async with self._tail_lock:
            if self._tail_reader is None:
                consumer = AIOKafkaConsumer(
                    bootstrap_servers=broker_hosts(self.settings.broker),
                    enable_auto_commit=False,
                    isolation_level="read_committed",  # never chain onto an aborted record (exactly_once)
                    **kafka_security(self.settings),
                )
                await consumer.start()
                self._tail_reader = consumer
            return await last_record(self._tail_reader, TopicPartition(AUDIT_TOPIC, partition))

    async def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Ready = partitions assigned and agents running, Redis answering,
        register not stale, policy (operators) loaded; the body says what is wrong."""
        app, stores, policy, metrics = self.app, self.stores, self.policy, self.metrics
        now = utcnow()
        assigned = self.assigned_partitions()
        agents_ok = bool(app.agents) and not any(agent.crashed for agent in app.agents.values())
        redis_ok = await stores.ping()
        data = await safe_read_data(stores) if redis_ok else None
        checks, problems = data_checks(data, policy.register_max_age_days, now)
        consuming = {"ok": agents_ok and bool(assigned), "assigned_partitions": assigned, "agents_running": agents_ok}
        if not assigned:
            problems.insert(
                0, f"consuming: no partition of {INTENTS_TOPIC} assigned (rebalancing, or more workers than partitions)"
            )
        if not agents_ok:
            problems.insert(0, "consuming: an agent crashed or none runs")
        if not redis_ok:
            problems.insert(0, "redis: not answering (intents are denied lookup_unavailable)")
        redis_check: dict[str, Any] = {"ok": redis_ok}
        if stores.replica_state is not None:  # informational: the primary answers when the replica cannot
            redis_check["replica"] = stores.replica_state
        checks = {"consuming": consuming, "redis": redis_check, **checks}
        ok = all(check["ok"] for check in checks.values())
        checks["policy"]["version"] = policy.version
        checks["policy"]["register_max_age_days"] = policy.register_max_age_days
        checks["policy"]["rules_enabled"] = [name for name, scope in policy.scopes.items() if scope.enabled]
        metrics.ready.set(1 if ok else 0)
        metrics.assigned.set(len(assigned))
        return ok, {"status": "ready" if ok else "not_ready", "problems": problems, "checks": checks}

    async def sample_once(self) -> None:
        """Lag of this worker's partitions, register ages, audit heads, readiness."""
        metrics, stores = self.metrics, self.stores
        assigned = self.assigned_partitions()
        try:
            lag = await self.probe.sample(only=assigned, describe=False) if assigned else None
            metrics.set_lag(
                (p.topic, p.partition, p.end, p.committed, p.lag, p.lag_seconds)
                for p in (lag.partitions if lag else ())
            )
        except Exception as exc:  # the broker may be between leaders; try again next time
            log.debug("lag sample failed: %s", exc)
            await self.probe.close()  # reconnect next time
        data = await safe_read_data(stores)
        if data is not None:
            now = utcnow()
            scopes = {s.scope for s in data.scopes}
            for scope_state in data.scopes:
                oldest, newest = scope_state.ages(now)
                metrics.register_age.labels(scope_state.scope).set(oldest)
                metrics.register_newest_age.labels(scope_state.scope).set(newest)
                metrics.register_numbers.labels(scope_state.scope).set(scope_state.numbers)
            for gone in self._known_scopes - scopes:
                for gauge in (metrics.register_age, metrics.register_newest_age, metrics.register_numbers):
                    with contextlib.suppress(KeyError):
                        gauge.remove(gone)
            self._known_scopes = scopes
        if self.guard.chain.acknowledged:
            await stores.save_audit_heads(self.guard.chain.acknowledged)
        ok, body = await self.readiness()
        if ok != self._was_ready:
            log.log(
                logging.INFO if ok else logging.WARNING,
                "worker %s%s",
                "ready" if ok else "not ready: ",
                "" if ok else "; ".join(body["problems"]),
                extra={"event": "ready" if ok else "not_ready"},
            )
            self._was_ready = ok

    async def close(self) -> None:
        """Before Faust shuts down: the probe, the tail reader, the transactional
        producers, and a last checkpoint of the audit chains' heads."""
        await self.probe.close()
        if self._tail_reader is not None:
            await self._tail_reader.stop()
        if self.transactions is not None:
            await self.transactions.close()
        with contextlib.suppress(Exception):
            await self.stores.save_audit_heads(self.guard.chain.acknowledged)

    def partitions_assigned(self, assigned: Any) -> None:
        partitions = sorted(tp.partition for tp in assigned if tp.topic == INTENTS_TOPIC)
        self.guard.chain.forget()  # another worker may have extended these chains meanwhile
        log.info(
            "partitions of %s assigned: %s",
            INTENTS_TOPIC,
            partitions,
            extra={"event": "partitions_assigned", "partitions": partitions},
        )

    def report(self) -> None:
        stats = self.metrics.totals
        log.info(
            "decided %d (allow %d, deny %d), dead letters %d, opt-outs %d, lookup errors %d",
            stats.allowed + stats.denied,
            stats.allowed,
            stats.denied,
            stats.deadletters,
            stats.optouts,
            stats.lookup_errors,
            extra={"event": "summary", "decisions": stats.decisions, "deadletters": stats.deadletters},
        )

    def _install_timers(self) -> None:
        """Lag and register sampling, the summary line, and the rebalance and shutdown hooks."""
        app = self.app

        @app.timer(interval=self.settings.metrics_interval)  # type: ignore[untyped-decorator]
        async def sample() -> None:
            """Lag of this worker's partitions, register ages, readiness: cheap
            requests every few seconds, never on the hot path."""
            try:
                await self.sample_once()
            except Exception:  # a timer that raises would stop the whole worker: never let it
                log.exception("sampling lag and register failed", extra={"event": "sample_failed"})

        @app.on_before_shutdown.connect
        async def close_probe(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
            await self.close()

        @app.on_partitions_assigned.connect
        async def on_assigned(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
            self.partitions_assigned(args[0] if args else kwargs.get("assigned", ()))

        @app.timer(interval=60.0)  # type: ignore[untyped-decorator]
        async def report() -> None:
            self.report()


def _idempotent_producer(app: faust.App) -> None:
    """Make Faust's producer idempotent (faust-streaming 0.15.3 asks for it only
    inside its own transactions, in ``Producer._settings_extra``). Without it,
    aiokafka sends a batch again when a broker fails before answering, the
    broker may write it twice, and the second copy breaks the audit chain: its
    first record points at the record before the first copy."""
    transport: Any = app.transport
    base = transport.Producer

    def _settings_extra(self: Any) -> dict[str, Any]:
        return {**base._settings_extra(self), "acks": "all", "enable_idempotence": True}

    transport.Producer = type("IdempotentProducer", (base,), {"_settings_extra": _settings_extra})


async def idempotence_refused(settings: Settings, timeout: float = 15.0) -> str | None:
    """Why the broker refuses an idempotent producer (InitProducerId), or None
    when it grants one; :class:`BrokerUnavailable` when it does not answer."""
    producer = AIOKafkaProducer(
        bootstrap_servers=broker_hosts(settings.broker),
        enable_idempotence=True,
        acks="all",
        **kafka_security(settings),
    )
    try:
        await asyncio.wait_for(producer.start(), timeout)
    except (KafkaConnectionError, TimeoutError) as exc:
        raise BrokerUnavailable(f"cannot reach the broker at {settings.broker}: {exc or 'timed out'}") from None
    except KafkaError as exc:
        return str(exc) or type(exc).__name__
    finally:
        with contextlib.suppress(Exception):
            await producer.stop()
    return None


#: The worker's first-generation threshold for Python's cyclic garbage collector (Python's default: 700).
GC_THRESHOLDS = (50_000, 20, 10)


def keep_gc_off_the_hot_path() -> None:
    """Keep Python's cyclic garbage collector from rescanning the worker's heap.

    Deciding an intent allocates about a hundred dicts, tuples and records
    that reference counting frees; with Python's default thresholds (700, 10,
    10) they still set off a young collection every few intents and a full one,
    over every object the worker holds (Faust, aiokafka, libphonenumber's
    metadata, caches), every few hundred: ``./dev bench throughput`` showed it
    in the worker's CPU per decision and its p99 latency (the figures are in
    DEVELOPERS.md). ``gc.freeze()`` moves what start-up built out of the
    collector's sight, and a higher first threshold collects cycles every
    50,000 allocations instead of 700: unreachable cycles are still freed, in
    fewer passes.
    """
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def run_worker(settings: Settings) -> int:
    """Create missing topics, then run the worker until SIGTERM/SIGINT."""
    config = logging_config(settings.log_format, settings.log_level)
    logging.config.dictConfig(config)
    log.info(
        "callguard worker starting: group %s, broker %s, redis %s%s, web port %d",
        settings.app_id,
        settings.broker,
        safe_url(settings.redis_url),
        f" (lookups on replica {safe_url(settings.redis_replica_url)})"
        if settings.redis_replica_url
        else " (lookups on the cluster's replicas)"
        if settings.redis_cluster_reads == "replicas"
        else "",
        settings.web_port,
        extra={"event": "worker_starting", "group": settings.app_id},
    )
    try:
        policy = policy_for(settings)
    except PolicyError as exc:
        log.critical("cannot use the policy: %s", exc, extra={"event": "policy_invalid"})
        return 2
    log.info(
        "deciding by policy %s", policy.version, extra={"event": "policy_loaded", "policy_version": policy.version}
    )
    created = asyncio.run(ensure_topics(settings))
    if created:
        log.info("created topics %s", ", ".join(created), extra={"event": "topics_created", "topics": created})
    if settings.producer_idempotence != "false":
        refused = asyncio.run(idempotence_refused(settings))
        if refused is not None and settings.producer_idempotence == "true":
            log.critical(
                "the broker refuses an idempotent producer (%s); CALLGUARD_PRODUCER_IDEMPOTENCE=true",
                refused,
                extra={"event": "idempotence_refused"},
            )
            return 2
        if refused is not None:
            log.warning(
                "the broker refuses an idempotent producer (%s): writing without one. A broker failure may "
                "then write a batch twice, which `callguard audit verify` reports as a broken chain",
                refused,
                extra={"event": "idempotence_refused"},
            )
            settings = replace(settings, producer_idempotence="false")
    app = create_app(settings, asyncio.run(partition_count(settings, AUDIT_TOPIC)), policy)
    worker = faust.Worker(
        app, loglevel=settings.log_level.upper(), quiet=True, redirect_stdouts=False, logging_config=config
    )
    keep_gc_off_the_hot_path()
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0
