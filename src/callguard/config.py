"""Configuration: environment variables, overridden by matching CLI flags.

Bad configuration stops the program at start with one line that names the
setting and what is wrong, never with a traceback.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from callguard.core.numbers import is_known_region

KAFKA_SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
PROCESSING_GUARANTEES = ("at_least_once", "exactly_once")
IDEMPOTENCE = ("auto", "true", "false")
COMPRESSIONS = ("none", "gzip", "lz4", "zstd")


class ConfigError(Exception):
    """A setting with a bad value; the message is one line for the user."""


@dataclass(frozen=True, slots=True)
class Settings:
    #: Kafka bootstrap servers, ``kafka://host:port[;host:port…]``.
    broker: str = "kafka://127.0.0.1:9092"
    #: ``redis://``, ``rediss://`` (TLS) or ``unix://`` URL of the cache, or
    #: ``redis+cluster://HOST:PORT[,HOST:PORT…]`` (``rediss+cluster://``) for a Redis Cluster.
    redis_url: str = "redis://127.0.0.1:6379/0"
    #: A replica of ``redis_url`` that answers the workers' batch lookups (reads
    #: only; writes and the record of allowed calls stay on the primary).
    redis_replica_url: str = ""
    #: Where a Redis Cluster's batch lookups go: ``primaries``, or ``replicas``
    #: (each slot's replicas while every replica is linked to its primary; Redis 7+).
    redis_cluster_reads: str = "primaries"
    #: Port of the worker's web server (``/health``, ``/ready``, ``/metrics``, ``POST /v1/check``).
    web_port: int = 6066
    #: Address the web server listens on (``127.0.0.1``: this machine only).
    web_host: str = "0.0.0.0"
    #: Policy file (TOML) the worker decides by; empty: the Italian policy shipped with callguard.
    policy: str = ""
    #: Overrides the policy's ``opposition_register.max_age_days`` when set (DPR 26/2022 practice: 15).
    register_max_age_days: int | None = None
    #: Region for numbers written without a country code.
    default_region: str = "IT"
    #: Seconds a Redis round trip may take before the batch is denied ``lookup_unavailable``.
    redis_timeout: float = 1.0
    #: Most intents decided together (one Redis round trip each batch).
    batch_size: int = 500
    #: Seconds the opt-out and outcome agents wait for a batch to fill (intents
    #: are decided as each fetch brings them, in batches of what is waiting).
    batch_wait: float = 0.01
    #: Longest a fetch of the worker's consumer waits for data. Apache Kafka
    #: answers as soon as data arrives; a broker that always waits the full
    #: time (Tansu) adds up to this much to every decision's latency.
    fetch_max_wait_ms: int = 50
    #: Seconds ``POST /v1/check`` waits for a decision before answering 504 (dialer integration).
    check_timeout: float = 2.0
    #: Partitions given to topics the worker creates.
    topic_partitions: int = 6
    #: Replication factor of topics the worker creates (3 on a production cluster).
    topic_replicas: int = 1
    #: Seconds without heartbeat before the group gives a dead worker's partitions away.
    session_timeout: float = 6.0
    #: Static group membership (Kafka group.instance.id), e.g. the pod name of a
    #: StatefulSet: a restarted worker gets its partitions back without a rebalance.
    instance_id: str = ""
    #: Compression of what the worker writes (decisions, audit records, dead
    #: letters): ``none``, ``gzip``, ``lz4`` or ``zstd`` (lz4 and zstd need the cramjam package).
    compression: str = "none"
    #: ``at_least_once``, or ``exactly_once``: a batch's decisions, audit records,
    #: dead letters and input offsets commit in one Kafka transaction (Apache Kafka;
    #: consumers of the output topics read with isolation level read_committed).
    processing_guarantee: str = "at_least_once"
    #: Idempotent producer (Kafka ``enable.idempotence``): a batch the client
    #: sends again after a broker failure is written once, so the audit chain
    #: holds. ``auto``: on where the broker grants it (Apache Kafka), off with a
    #: warning where it does not (Tansu); ``true``: refuse to start without it.
    producer_idempotence: str = "auto"
    #: Kafka consumer group (Faust app id) of the workers.
    app_id: str = "callguard"
    #: Seconds between the worker's lag and register samples for ``/metrics`` (operations).
    metrics_interval: float = 10.0
    #: ``text`` or ``json`` (one JSON object per log line).
    log_format: str = "text"
    #: Kafka security: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL. Credentials
    #: come from the environment only (no CLI flags: a command line is visible
    #: to every user of the machine) and are never printed.
    kafka_security_protocol: str = "PLAINTEXT"
    #: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (SASL protocols).
    kafka_sasl_mechanism: str = ""
    kafka_sasl_username: str = ""
    kafka_sasl_password: str = field(default="", repr=False)
    #: TLS: CA bundle to trust (default: the system's), client certificate and key for mutual TLS.
    kafka_ca_file: str = ""
    kafka_cert_file: str = ""
    kafka_key_file: str = ""
    log_level: str = "info"
    #: PostgreSQL DSN of the durable audit store (``callguard audit sink`` / ``search``).
    audit_dsn: str = ""


#: Setting name -> environment variable.
ENV_VARS: dict[str, str] = {f.name: "CALLGUARD_" + f.name.upper() for f in fields(Settings)}
ENV_VARS["broker"] = "CALLGUARD_BROKER"


def _convert(name: str, raw: Any) -> Any:
    kind = {f.name: f.type for f in fields(Settings)}[name]
    if kind in ("int", "int | None"):
        try:
            return int(raw)
        except (TypeError, ValueError):
            raise ConfigError(f"{ENV_VARS[name]}: expected a whole number, got {raw!r}") from None
    if kind == "float":
        try:
            return float(raw)
        except (TypeError, ValueError):
            raise ConfigError(f"{ENV_VARS[name]}: expected a number, got {raw!r}") from None
    return str(raw)


def load_settings(overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Defaults, then ``CALLGUARD_*`` variables, then non-``None`` overrides (CLI flags)."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for name, var in ENV_VARS.items():
        if env.get(var, "") != "":
            values[name] = _convert(name, env[var])
    for name, value in (overrides or {}).items():
        if value is not None:
            values[name] = _convert(name, value)
    settings = replace(Settings(), **values)
    validate(settings)
    return settings


def broker_hosts(broker: str) -> list[str]:
    """``kafka://a:9092;b:9092`` -> ``["a:9092", "b:9092"]`` (for aiokafka)."""
    return [part.split("://", 1)[-1] for part in broker.replace(",", ";").split(";") if part]


def validate(s: Settings) -> None:
    for host in broker_hosts(s.broker) or [""]:
        if not s.broker.startswith("kafka://") or ":" not in host or not host.rsplit(":", 1)[1].isdigit():
            raise ConfigError(f"CALLGUARD_BROKER: expected kafka://HOST:PORT[;HOST:PORT…], got {s.broker!r}")
    scheme = urlsplit(s.redis_url).scheme
    if scheme not in ("redis", "rediss", "unix", "redis+cluster", "rediss+cluster"):
        raise ConfigError(
            f"CALLGUARD_REDIS_URL: expected redis://, rediss://, unix:// or redis+cluster:// URL, got scheme {scheme!r}"
        )
    if s.redis_replica_url:
        replica_scheme = urlsplit(s.redis_replica_url).scheme
        if replica_scheme not in ("redis", "rediss", "unix"):
            raise ConfigError(
                f"CALLGUARD_REDIS_REPLICA_URL: expected a redis://, rediss:// or unix:// URL, got scheme {replica_scheme!r}"
            )
        if scheme.endswith("+cluster"):
            raise ConfigError(
                "CALLGUARD_REDIS_REPLICA_URL: a Redis Cluster reads from its own replicas;"
                " leave it unset and set CALLGUARD_REDIS_CLUSTER_READS=replicas"
            )
    if s.redis_cluster_reads not in ("primaries", "replicas"):
        raise ConfigError(
            f"CALLGUARD_REDIS_CLUSTER_READS: expected primaries or replicas, got {s.redis_cluster_reads!r}"
        )
    if s.redis_cluster_reads == "replicas" and not scheme.endswith("+cluster"):
        raise ConfigError(
            "CALLGUARD_REDIS_CLUSTER_READS=replicas needs a redis+cluster:// URL;"
            " for one Redis, name its replica in CALLGUARD_REDIS_REPLICA_URL"
        )
    if not 0 <= s.web_port <= 65535:
        raise ConfigError(f"CALLGUARD_WEB_PORT: expected a port 0-65535, got {s.web_port}")
    if s.policy and not os.path.isfile(s.policy):
        raise ConfigError(f"CALLGUARD_POLICY: no such file {s.policy!r}")
    if s.register_max_age_days is not None and not 1 <= s.register_max_age_days <= 366:
        raise ConfigError(f"CALLGUARD_REGISTER_MAX_AGE_DAYS: expected 1-366 days, got {s.register_max_age_days}")
    if not is_known_region(s.default_region):
        raise ConfigError(
            f"CALLGUARD_DEFAULT_REGION: {s.default_region!r} is not an ISO 3166 region libphonenumber knows"
        )
    if not 0 < s.redis_timeout <= 60:
        raise ConfigError(f"CALLGUARD_REDIS_TIMEOUT: expected 0-60 seconds, got {s.redis_timeout}")
    if not 1 <= s.batch_size <= 10_000:
        raise ConfigError(f"CALLGUARD_BATCH_SIZE: expected 1-10000, got {s.batch_size}")
    if not 1 <= s.fetch_max_wait_ms <= 1500:
        raise ConfigError(f"CALLGUARD_FETCH_MAX_WAIT_MS: expected 1-1500 milliseconds, got {s.fetch_max_wait_ms}")
    if not 0 <= s.batch_wait <= 5:
        raise ConfigError(f"CALLGUARD_BATCH_WAIT: expected 0-5 seconds, got {s.batch_wait}")
    if not 0 < s.check_timeout <= 60:
        raise ConfigError(f"CALLGUARD_CHECK_TIMEOUT: expected 0-60 seconds, got {s.check_timeout}")
    if not 1 <= s.topic_partitions <= 1000:
        raise ConfigError(f"CALLGUARD_TOPIC_PARTITIONS: expected 1-1000, got {s.topic_partitions}")
    if not 1 <= s.topic_replicas <= 10:
        raise ConfigError(f"CALLGUARD_TOPIC_REPLICAS: expected 1-10, got {s.topic_replicas}")
    if not 3 <= s.session_timeout <= 300:
        raise ConfigError(f"CALLGUARD_SESSION_TIMEOUT: expected 3-300 seconds, got {s.session_timeout}")
    if s.compression not in COMPRESSIONS:
        raise ConfigError(f"CALLGUARD_COMPRESSION: expected one of {', '.join(COMPRESSIONS)}, got {s.compression!r}")
    if s.compression in ("lz4", "zstd"):
        from aiokafka import codec

        if not (codec.has_lz4() if s.compression == "lz4" else codec.has_zstd()):
            raise ConfigError(f"CALLGUARD_COMPRESSION={s.compression} needs the cramjam package: pip install cramjam")
    if s.processing_guarantee not in PROCESSING_GUARANTEES:
        raise ConfigError(
            f"CALLGUARD_PROCESSING_GUARANTEE: expected {' or '.join(PROCESSING_GUARANTEES)}, got {s.processing_guarantee!r}"
        )
    if s.producer_idempotence not in IDEMPOTENCE:
        raise ConfigError(
            f"CALLGUARD_PRODUCER_IDEMPOTENCE: expected one of {', '.join(IDEMPOTENCE)}, got {s.producer_idempotence!r}"
        )
    if not s.app_id or any(c.isspace() for c in s.app_id):
        raise ConfigError(f"CALLGUARD_APP_ID: expected a name without spaces, got {s.app_id!r}")
    if not 0.2 <= s.metrics_interval <= 300:
        raise ConfigError(f"CALLGUARD_METRICS_INTERVAL: expected 0.2-300 seconds, got {s.metrics_interval}")
    if s.kafka_security_protocol not in KAFKA_SECURITY_PROTOCOLS:
        raise ConfigError(
            f"CALLGUARD_KAFKA_SECURITY_PROTOCOL: expected one of {', '.join(KAFKA_SECURITY_PROTOCOLS)}, "
            f"got {s.kafka_security_protocol!r}"
        )
    if s.kafka_security_protocol.startswith("SASL"):
        if s.kafka_sasl_mechanism not in SASL_MECHANISMS:
            raise ConfigError(
                f"CALLGUARD_KAFKA_SASL_MECHANISM: expected one of {', '.join(SASL_MECHANISMS)} "
                f"with {s.kafka_security_protocol}, got {s.kafka_sasl_mechanism!r}"
            )
        if not s.kafka_sasl_username or not s.kafka_sasl_password:
            raise ConfigError(
                f"CALLGUARD_KAFKA_SASL_USERNAME and CALLGUARD_KAFKA_SASL_PASSWORD are required with {s.kafka_security_protocol}"
            )
    for name in ("kafka_ca_file", "kafka_cert_file", "kafka_key_file"):
        path = getattr(s, name)
        if path and not os.path.isfile(path):
            raise ConfigError(f"{ENV_VARS[name]}: no such file {path!r}")
    if bool(s.kafka_cert_file) != bool(s.kafka_key_file):
        raise ConfigError("CALLGUARD_KAFKA_CERT_FILE and CALLGUARD_KAFKA_KEY_FILE go together (mutual TLS)")
    if s.log_format not in ("text", "json"):
        raise ConfigError(f"CALLGUARD_LOG_FORMAT: expected text or json, got {s.log_format!r}")
    if s.audit_dsn and urlsplit(s.audit_dsn).scheme not in ("postgres", "postgresql"):
        raise ConfigError("CALLGUARD_AUDIT_DSN: expected a postgresql:// URL")
    if s.log_level.lower() not in ("debug", "info", "warning", "error"):
        raise ConfigError(f"CALLGUARD_LOG_LEVEL: expected debug, info, warning or error, got {s.log_level!r}")


def safe_url(url: str) -> str:
    """A URL fit for messages: any password replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def kafka_security(s: Settings) -> dict[str, Any]:
    """aiokafka keyword arguments for TLS and SASL (none for PLAINTEXT): every
    Kafka client callguard makes takes these, so one setting secures them all."""
    protocol = s.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return {}
    options: dict[str, Any] = {"security_protocol": protocol}
    if protocol.endswith("SSL"):
        from aiokafka.helpers import create_ssl_context

        options["ssl_context"] = create_ssl_context(
            cafile=s.kafka_ca_file or None, certfile=s.kafka_cert_file or None, keyfile=s.kafka_key_file or None
        )
    if protocol.startswith("SASL"):
        options["sasl_mechanism"] = s.kafka_sasl_mechanism
        options["sasl_plain_username"] = s.kafka_sasl_username
        options["sasl_plain_password"] = s.kafka_sasl_password
    return options
