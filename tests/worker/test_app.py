"""The worker's Faust app as built, before it connects to anything."""

from __future__ import annotations

import asyncio

import pytest

from callguard.config import load_settings
from callguard.worker.app import create_app


@pytest.mark.parametrize(("setting", "idempotent"), [("auto", True), ("true", True), ("false", False)])
def test_the_workers_producer_is_idempotent_unless_told_otherwise(setting: str, idempotent: bool) -> None:
    """Faust (0.15.3) asks aiokafka for an idempotent producer only inside its
    own transactions: without callguard's subclass, a batch sent again after a
    broker failure could be written twice and break the audit chain (the
    broker-kill test in test_kafka_broker.py catches that only sometimes)."""
    app = create_app(load_settings(environ={"CALLGUARD_PRODUCER_IDEMPOTENCE": setting}), 6)

    async def built() -> bool:
        producer = app.producer._new_producer()  # the AIOKafkaProducer Faust starts (nothing connects yet)
        return producer._txn_manager is not None  # aiokafka's sequence numbers: idempotence

    assert asyncio.run(built()) is idempotent


def test_a_create_topics_answer_is_read_topic_by_topic() -> None:
    """Another worker creating a topic meanwhile is no failure; the ACLs' refusal
    names the user and the topics; any other refusal names the topic and says why."""
    from aiokafka.errors import TopicAuthorizationFailedError

    from callguard.kafka.topics import BrokerUnavailable, _raise_topic_errors

    sasl = {"sasl_plain_username": "callguard-dialer"}
    _raise_topic_errors([("callguard.audit", 0, None), ("callguard.intents", 36, "exists")], sasl)
    with pytest.raises(TopicAuthorizationFailedError, match=r"user 'callguard-dialer' create callguard\.audit"):
        _raise_topic_errors([("callguard.audit", 29, None), ("callguard.intents", 0, None)], sasl)
    with pytest.raises(BrokerUnavailable, match=r"^the broker would not create callguard.audit: .*Replication.* 3"):
        _raise_topic_errors([("callguard.audit", 38, "Replication factor: 3 larger than available brokers: 1.")], {})


def test_the_worker_registers_its_agents_pages_timers_and_hooks() -> None:
    """What the app class hands Faust: four agents, four pages, two timers, the
    shutdown and rebalance hooks, the batching consumer, and the guard."""
    from callguard.worker.guard import Guard

    app = create_app(load_settings(environ={}), 6)
    assert sorted(app.agents) == ["callguard.consents", "callguard.decide", "callguard.optouts", "callguard.outcomes"]
    assert sorted(app.web.views) == ["/health", "/metrics", "/ready", "/v1/check"]
    assert len(app._app_tasks) == 2  # the sampling and summary timers
    for signal in (app.on_before_shutdown, app.on_partitions_assigned):  # receivers are kept per app
        assert len(signal._filter_receivers[signal._create_id(app)]) == 1
    assert app.transport.Consumer.__name__ == "BatchingConsumer"
    assert isinstance(app.callguard_guard, Guard)


def test_each_worker_app_fetches_with_its_own_wait() -> None:
    """Faust builds its consumer with ``fetch_max_wait_ms=1500``; each app's
    consumer waits ``CALLGUARD_FETCH_MAX_WAIT_MS`` instead, two apps in one
    process each their own."""

    def consumer_wait(wait: str) -> int:
        app = create_app(load_settings(environ={"CALLGUARD_FETCH_MAX_WAIT_MS": wait}), 6)
        thread = app.consumer._thread  # Faust's consumer thread: builds the aiokafka consumer (nothing connects yet)
        return int(thread._create_worker_consumer(app.transport)._fetch_max_wait_ms)

    async def both() -> tuple[int, int]:
        return consumer_wait("120"), consumer_wait("7")

    assert asyncio.run(both()) == (120, 7)
