"""Tell a broker that refuses callguard's TLS or SASL login from one that does not answer.

aiokafka reports both the same way: a bootstrap that fails with "Unable to
bootstrap from [...]", the cause only in a log line, and Faust retries it for
ever. A refused login does not get better by retrying, so every command that
talks to Kafka with TLS or SASL first opens one connection itself, as its
clients would, and stops with one line that says what the broker refused:
an untrusted certificate, a failed TLS handshake, or a SASL login (the
username is named, the password never).
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

from aiokafka.conn import create_conn
from aiokafka.errors import SaslAuthenticationFailed, TopicAuthorizationFailedError, UnsupportedSaslMechanismError
from aiokafka.protocol.metadata import MetadataRequest

from callguard.config import ConfigError, Settings, broker_hosts, kafka_security


class KafkaAccessDenied(ConfigError):
    """The broker refused the configured TLS or SASL settings; one line for the user."""


async def access_problem(hosts: list[str], security: dict[str, Any], timeout: float = 10.0) -> str | None:
    """Connect to the bootstrap ``hosts`` with aiokafka's ``security`` options
    (``config.kafka_security``) until one accepts. Returns one line saying
    why the broker refused the connection (certificate, TLS handshake, SASL
    login), or None when one accepted it or none answered (an unreachable
    broker is the caller's to wait for or report)."""
    if not security:
        return None
    mechanism = security.get("sasl_mechanism")
    user = security.get("sasl_plain_username")
    for hostport in hosts:
        host, _, port = hostport.rpartition(":")
        try:
            conn = await asyncio.wait_for(
                create_conn(
                    host,
                    int(port),
                    ssl_context=security.get("ssl_context"),
                    security_protocol=security.get("security_protocol", "PLAINTEXT"),
                    sasl_mechanism=mechanism or "PLAIN",
                    sasl_plain_username=user,
                    sasl_plain_password=security.get("sasl_plain_password"),
                    request_timeout_ms=int(timeout * 1000),
                ),
                timeout,
            )
        except ssl.SSLCertVerificationError as exc:
            return (
                f"the Kafka broker at {hostport} presented a TLS certificate that is not trusted "
                f"({exc.verify_message}): CALLGUARD_KAFKA_CA_FILE must name the CA that signed it"
            )
        except ssl.SSLError as exc:
            return f"the TLS handshake with the Kafka broker at {hostport} failed ({exc.reason or exc}): is it a TLS listener?"
        except SaslAuthenticationFailed:
            return (
                f"the Kafka broker at {hostport} refused the SASL {mechanism} login of user {user!r}: "
                "wrong username or password (CALLGUARD_KAFKA_SASL_USERNAME, CALLGUARD_KAFKA_SASL_PASSWORD)"
            )
        except UnsupportedSaslMechanismError:
            return (
                f"the Kafka broker at {hostport} does not offer SASL {mechanism} on this listener "
                "(CALLGUARD_KAFKA_SASL_MECHANISM)"
            )
        except (OSError, TimeoutError, ValueError):
            continue  # not answering: try the next one
        else:
            conn.close()
            return None
    return None


async def check_kafka_access(settings: Settings, timeout: float = 10.0) -> None:
    """Raise :class:`KafkaAccessDenied` when the broker refuses the configured
    TLS or SASL settings (nothing to check for PLAINTEXT)."""
    problem = await access_problem(broker_hosts(settings.broker), kafka_security(settings), timeout)
    if problem is not None:
        raise KafkaAccessDenied(problem)


async def refuse_hidden_topic(client: Any, topic: str, security: dict[str, Any]) -> None:
    """Raise ``TopicAuthorizationFailedError`` naming the user when the broker
    refuses to describe ``topic`` to this client (aiokafka's ``AIOKafkaClient``).

    A full metadata request leaves out the topics a principal may not
    describe, so a reader without the ACL would take the topic for empty; a
    request that names the topic says why it is missing."""
    response = await client.send(client.get_random_node(), MetadataRequest([topic], allow_auto_topic_creation=False))
    if any(entry[0] == TopicAuthorizationFailedError.errno for entry in response.topics):
        raise TopicAuthorizationFailedError(f"the broker's ACLs do not let {who(security)} read {topic}")


def who(security: dict[str, Any]) -> str:
    """The principal in a refusal's message: the SASL user, never its password."""
    user = security.get("sasl_plain_username")
    return f"user {user!r}" if user else "this client"
