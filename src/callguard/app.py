"""The Faust worker: two agents and a health page, as thin as Faust allows.

- ``decide`` consumes ``callguard.intents`` in batches and hands them to
  :class:`callguard.guard.Guard`; Faust acks a batch's events only after the
  guard returned, i.e. after every decision, audit record and dead letter of
  the batch was acknowledged by the broker (at-least-once).
- ``optouts`` consumes ``callguard.optouts`` and writes them to Redis, so an
  opt-out takes effect for the next intent within about a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import faust
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from faust.web import Request, Response, View

from callguard.config import Settings, broker_hosts
from callguard.guard import Guard, Raw
from callguard.metrics import Stats
from callguard.policy import PolicySettings
from callguard.schema import (
    AUDIT_TOPIC,
    DEADLETTER_TOPIC,
    DECISIONS_TOPIC,
    INTENTS_TOPIC,
    OPTOUTS_TOPIC,
    OUTCOMES_TOPIC,
)
from callguard.stores import Stores

log = logging.getLogger("callguard.app")

#: Every topic of the contract; the worker creates the missing ones at start
#: (``callguard.outcomes`` only to give it the configured partitions: dialers publish there).
ALL_TOPICS = (INTENTS_TOPIC, DECISIONS_TOPIC, AUDIT_TOPIC, DEADLETTER_TOPIC, OPTOUTS_TOPIC, OUTCOMES_TOPIC)


def _raw(event: Any) -> Raw:
    message = event.message
    return Raw(message.value, message.topic, message.partition, message.offset, message.timestamp)


def create_app(settings: Settings) -> faust.App:
    """Build the Faust app for ``settings`` (nothing connects until it starts)."""
    app = faust.App(
        settings.app_id,
        broker=settings.broker,
        store="memory://",
        web_port=settings.web_port,
        web_host="0.0.0.0",
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replicas,
        topic_allow_declare=True,
        # Kafka producers are not idempotent by default in Faust; keep acks=all
        producer_acks=-1,
        producer_linger=0.005,
        producer_max_batch_size=256 * 1024,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=settings.session_timeout,
        broker_heartbeat_interval=max(settings.session_timeout / 10, 0.5),
        broker_rebalance_timeout=settings.session_timeout,
        broker_commit_every=settings.batch_size,
        broker_commit_interval=1.0,
        stream_buffer_maxsize=max(4 * settings.batch_size, 4096),
        web_enabled=True,
        logging_config=None,
    )
    stats = Stats()
    stores = Stores.from_url(settings.redis_url, timeout=settings.redis_timeout)
    policy = PolicySettings(register_max_age_days=settings.register_max_age_days)

    async def send(topic: str, key: bytes | None, value: bytes) -> Any:
        return await app.producer.send(topic, key, value, partition=None, timestamp=None, headers=None)

    guard = Guard(stores, send, policy, settings.default_region, stats)
    app.callguard_guard = guard  # type: ignore[attr-defined]

    def topic(name: str) -> faust.TopicT:
        return app.topic(
            name,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            partitions=settings.topic_partitions,
            replicas=settings.topic_replicas,
        )

    topics = {name: topic(name) for name in ALL_TOPICS}

    @app.agent(topics[INTENTS_TOPIC], name="callguard.decide")
    async def decide(stream: Any) -> None:  # faust.StreamT lacks take_events in its stubs
        async for events in stream.take_events(settings.batch_size, within=settings.batch_wait):
            await guard.handle_intents([_raw(event) for event in events])

    @app.agent(topics[OPTOUTS_TOPIC], name="callguard.optouts")
    async def optouts(stream: Any) -> None:
        async for events in stream.take_events(settings.batch_size, within=settings.batch_wait):
            await guard.handle_optouts([_raw(event) for event in events])

    @app.page("/health")
    async def health(web: View, request: Request) -> Response:
        """200 only when the intents agent is consuming and Redis answers."""
        redis_ok = await stores.ping()
        assigned = sorted(tp.partition for tp in app.consumer.assignment() if tp.topic == INTENTS_TOPIC)
        agent_ok = bool(app.agents) and not any(agent.crashed for agent in app.agents.values()) and bool(assigned)
        body = {
            "status": "ok" if redis_ok and agent_ok else "unavailable",
            "redis": "ok" if redis_ok else "unreachable",
            "consuming": agent_ok,
            "assigned_partitions": assigned,
            "decisions": stats.allowed + stats.denied,
            "lookup_errors": stats.lookup_errors,
        }
        response: Response = web.json(body, status=200 if body["status"] == "ok" else 503)
        return response

    @app.timer(interval=60.0)  # type: ignore[untyped-decorator]
    async def report() -> None:
        log.info(
            "decided %d (allow %d, deny %d), dead letters %d, opt-outs %d, lookup errors %d",
            stats.allowed + stats.denied,
            stats.allowed,
            stats.denied,
            stats.deadletters,
            stats.optouts,
            stats.lookup_errors,
        )

    # --- dialer integration (issue 7): POST /v1/check through the same topics ---
    from callguard.checkapi import install_check_endpoint

    install_check_endpoint(app, settings)

    return app


class BrokerUnavailable(Exception):
    """The broker did not answer at start."""


async def ensure_topics(settings: Settings, wait: float = 60.0) -> list[str]:
    """Create every missing callguard topic with the configured partitions and
    replicas, before any consumer subscribes (a subscription could otherwise
    make the broker auto-create an input topic with its own defaults).
    Returns the topics created; waits up to ``wait`` seconds for the broker."""
    deadline = time.monotonic() + wait
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=broker_hosts(settings.broker), request_timeout_ms=10_000)
        try:
            await admin.start()
            missing = [name for name in ALL_TOPICS if name not in set(await admin.list_topics())]
            if missing:
                await admin.create_topics(
                    [NewTopic(name, settings.topic_partitions, settings.topic_replicas) for name in missing]
                )
            return missing
        except TopicAlreadyExistsError:  # another worker created it meanwhile
            return []
        except KafkaError as exc:
            if time.monotonic() > deadline:
                raise BrokerUnavailable(f"cannot reach the broker at {settings.broker}: {exc}") from None
            log.warning("broker not answering (%s); retrying", exc)
            await asyncio.sleep(1.0)
        finally:
            with contextlib.suppress(Exception):
                await admin.close()


def run_worker(settings: Settings) -> int:
    """Create missing topics, then run the worker until SIGTERM/SIGINT."""
    logging.basicConfig(
        format="[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s", level=settings.log_level.upper()
    )
    created = asyncio.run(ensure_topics(settings))
    if created:
        log.info("created topics %s", ", ".join(created))
    app = create_app(settings)
    worker = faust.Worker(app, loglevel=settings.log_level.upper(), quiet=True, redirect_stdouts=False)
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0
