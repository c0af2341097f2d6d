"""The contract's topics on the broker: created with the configured partitions
before anyone subscribes, with the ACLs' refusals said in one line."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Sequence
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    KafkaError,
    TopicAlreadyExistsError,
    TopicAuthorizationFailedError,
    for_code,
)

from callguard.config import Settings, broker_hosts, kafka_security
from callguard.core.schema import (
    AUDIT_TOPIC,
    CONSENTS_TOPIC,
    DEADLETTER_TOPIC,
    DECISIONS_TOPIC,
    INTENTS_TOPIC,
    OPTOUTS_TOPIC,
    OUTCOMES_TOPIC,
)
from callguard.kafka.access import KafkaAccessDenied, refuse_hidden_topic, who
from callguard.retry import Backoff, retry

log = logging.getLogger("callguard.app")

#: Every topic of the contract; the worker creates the missing ones at start.
ALL_TOPICS = (
    INTENTS_TOPIC,
    DECISIONS_TOPIC,
    AUDIT_TOPIC,
    DEADLETTER_TOPIC,
    OPTOUTS_TOPIC,
    OUTCOMES_TOPIC,
    CONSENTS_TOPIC,
)


class BrokerUnavailable(Exception):
    """The broker did not answer at start."""


async def ensure_topics(settings: Settings, wait: float = 60.0, topics: Sequence[str] = ALL_TOPICS) -> list[str]:
    """Create every missing one of ``topics`` with the configured partitions and
    replicas, before any consumer subscribes (a subscription could otherwise
    make the broker auto-create an input topic with its own defaults).
    Returns the topics created; waits up to ``wait`` seconds for the broker.
    A topic the broker's ACLs hide or forbid to create raises
    :class:`KafkaAccessDenied` at once, naming it."""
    security = kafka_security(settings)
    deadline = time.monotonic() + wait

    async def attempt() -> list[str]:
        admin = AIOKafkaAdminClient(
            bootstrap_servers=broker_hosts(settings.broker), request_timeout_ms=10_000, **security
        )
        try:
            await admin.start()
            missing = [name for name in topics if name not in set(await admin.list_topics())]
            for name in missing:  # hidden from this user by the ACLs, rather than missing: say so
                await refuse_hidden_topic(admin._client, name, security)
            if missing:
                response = await admin.create_topics(
                    [NewTopic(name, settings.topic_partitions, settings.topic_replicas) for name in missing]
                )
                _raise_topic_errors(response.topic_errors, security)
            return missing
        except TopicAlreadyExistsError:  # another worker created it meanwhile
            return []
        except (TopicAuthorizationFailedError, ClusterAuthorizationFailedError) as exc:
            raise KafkaAccessDenied(str(exc).split(": ", 1)[-1]) from None
        finally:
            with contextlib.suppress(Exception):
                await admin.close()

    def failed(exc: Exception, delay: float) -> None:
        if time.monotonic() > deadline:
            raise BrokerUnavailable(f"cannot reach the broker at {settings.broker}: {exc}") from None
        log.warning("broker not answering (%s); retrying", exc)

    return await retry(attempt, failed, Backoff(1.0, 1.0), retry_on=(KafkaError,))


#: CreateTopics error codes that mean the ACLs refused it.
DENIED_CODES = (TopicAuthorizationFailedError.errno, ClusterAuthorizationFailedError.errno)


def _raise_topic_errors(topic_errors: Sequence[Any], security: dict[str, Any]) -> None:
    """Raise for a CreateTopics response's failures (another worker creating a
    topic meanwhile is none)."""
    refused = [entry[0] for entry in topic_errors if entry[1] in DENIED_CODES]
    if refused:
        raise TopicAuthorizationFailedError(
            f"the broker's ACLs do not let {who(security)} create {', '.join(refused)}: "
            "create the topics beforehand (deploy/kafka/topics.sh)"
        )
    for entry in topic_errors:
        if entry[1] not in (0, TopicAlreadyExistsError.errno):
            said = entry[2] if len(entry) > 2 and entry[2] else ""
            raise BrokerUnavailable(
                f"the broker would not create {entry[0]}: {for_code(entry[1]).__name__} {said}".strip()
            )


async def partition_count(settings: Settings, topic: str) -> int:
    """How many partitions ``topic`` has (it may predate our settings)."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=broker_hosts(settings.broker), request_timeout_ms=10_000, **kafka_security(settings)
    )
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
        return len(described[0]["partitions"]) or settings.topic_partitions
    finally:
        await admin.close()
