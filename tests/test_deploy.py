"""Deployment files, checked statically (no Docker engine runs here)."""

from __future__ import annotations

from pathlib import Path

import yaml

from callguard.config import ENV_VARS

ROOT = Path(__file__).resolve().parent.parent


def test_compose_file_runs_kafka_redis_and_two_workers() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"kafka", "redis", "worker-1", "worker-2"} <= set(services)
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    for name in ("worker-1", "worker-2"):
        worker = services[name]
        assert (ROOT / worker["build"]["dockerfile"]).is_file()
        assert set(worker["environment"]) <= set(ENV_VARS.values())
        assert worker["environment"]["CALLGUARD_BROKER"].startswith("kafka://kafka:")


def test_dockerfile_runs_the_worker_with_a_health_check() -> None:
    text = (ROOT / "deploy" / "Dockerfile").read_text()
    assert 'CMD ["worker"]' in text and "/health" in text and "USER callguard" in text
