"""Deployment files, checked statically (no Docker engine runs here)."""

from __future__ import annotations

import json
import shutil
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from callguard.config import ENV_VARS
from callguard.dev.embedded import (
    KAFKA_SETTINGS,
    SIP_CONFIG,
    check_kamailio_config,
    kafka_version,
    kamailio_binary,
    kamailio_defines,
    kamailio_unavailable,
)
from tests.paths import ROOT


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


#: KAFKA_SETTINGS that only the tests' brokers take: faster group joins with 3 s
#: sessions and a faster restart after a kill -9 (see callguard.dev.embedded)
TEST_ONLY_KAFKA_SETTINGS = {"group.min.session.timeout.ms", "broker.session.timeout.ms", "broker.heartbeat.interval.ms"}


def test_compose_deploys_the_kafka_version_and_settings_the_tests_run_on() -> None:
    kafka = compose()["services"]["kafka"]
    assert kafka["image"] == f"apache/kafka:{kafka_version()}"
    # the apache/kafka image reads KAFKA_FOO_BAR as foo.bar
    deployed = {key.removeprefix("KAFKA_").lower().replace("_", "."): str(v) for key, v in kafka["environment"].items()}
    for key, value in KAFKA_SETTINGS.items():
        if key not in TEST_ONLY_KAFKA_SETTINGS:
            assert deployed.get(key) == value, key
    data = next(volume.split(":", 1)[1] for volume in kafka["volumes"] if volume.startswith("kafka-data:"))
    assert deployed["log.dirs"] == data


def test_the_kafka_pom_pins_one_4x_version() -> None:
    assert kafka_version() == kafka_version(ROOT / "deploy" / "kafka" / "pom.xml")
    assert kafka_version().split(".")[0] == "4" and "$" not in kafka_version() and "SNAPSHOT" not in kafka_version()
    pom = (ROOT / "deploy" / "kafka" / "pom.xml").read_text()
    assert "<version>${kafka.version}</version>" in pom and "[" not in pom.split("<dependencies>", 1)[1]


def test_dockerfile_runs_the_worker_with_a_health_check() -> None:
    text = (ROOT / "deploy" / "Dockerfile").read_text()
    assert 'CMD ["worker"]' in text and "/health" in text and "USER callguard" in text


# --- operations: the monitoring stack and Kubernetes manifests -------------

DEPLOY = ROOT / "deploy"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool not installed (Debian: apt-get install prometheus); rules checked structurally only",
)


def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_file_matches_the_compose_specification() -> None:
    # the compose-spec schema as vendored by check-jsonschema (read as a file: importing
    # check_jsonschema would import its CLI, which needs a newer click than Faust allows)
    vendored = "check_jsonschema/builtin_schemas/vendor/compose-spec.json"
    schema = json.loads(Path(str(metadata.distribution("check-jsonschema").locate_file(vendored))).read_text())
    jsonschema.validators.validator_for(schema)(schema).validate(compose())


def test_compose_runs_prometheus_and_grafana_on_the_deploy_files() -> None:
    services = compose()["services"]
    assert services["prometheus"]["image"].startswith("prom/prometheus:")
    assert services["grafana"]["image"].startswith("grafana/grafana:")
    for name in ("prometheus", "grafana"):
        for volume in services[name]["volumes"]:
            source = volume.split(":", 1)[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), volume
    prometheus = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    targets = prometheus["scrape_configs"][0]["static_configs"][0]["targets"]
    port = services["worker-1"]["environment"]["CALLGUARD_WEB_PORT"]
    assert sorted(targets) == [f"worker-1:{port}", f"worker-2:{port}"]
    assert prometheus["scrape_configs"][0]["metrics_path"] == "/metrics"


def alert_rules() -> list[dict[str, Any]]:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    return [rule for group in rules["groups"] for rule in group["rules"]]


def test_every_alert_is_complete_and_documented() -> None:
    readme = (DEPLOY / "README.md").read_text()
    names = {rule["alert"] for rule in alert_rules()}
    assert {"CallguardLagGrowing", "CallguardRegisterNearExpiry", "CallguardLookupUnavailable",
            "CallguardDeadLetters", "CallguardNoDecisions"} <= names  # fmt: skip
    for rule in alert_rules():
        assert rule["expr"] and rule["for"] and rule["labels"]["severity"] in ("page", "warning"), rule["alert"]
        assert rule["annotations"]["summary"] and "deploy/README.md#" in rule["annotations"]["description"]
        anchor = rule["annotations"]["description"].split("#", 1)[1].rstrip(".")
        assert f"### {anchor.lower()}" in readme.lower(), (
            f"{rule['alert']}: no section '### {anchor}' in deploy/README.md"
        )


@needs_promtool
def test_promtool_accepts_the_rules_and_their_unit_tests() -> None:
    assert PROMTOOL is not None
    for argv in (
        ["check", "rules", "alerts.yml"],
        ["test", "rules", "alerts_test.yml"],
        ["check", "config", "--syntax-only", "prometheus.yml"],
    ):
        result = subprocess.run([PROMTOOL, *argv], cwd=DEPLOY / "prometheus", capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr


def test_grafana_dashboard_is_provisioned_from_prometheus() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "callguard.json").read_text())
    datasources = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text())
    uid = datasources["datasources"][0]["uid"]
    assert dashboard["uid"] == "callguard" and len(dashboard["panels"]) >= 10
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == uid and panel["targets"], panel["title"]
    provider = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "dashboards" / "callguard.yml").read_text())
    mounted = {v.split(":")[1]: v.split(":")[0] for v in compose()["services"]["grafana"]["volumes"]}
    assert mounted[provider["providers"][0]["options"]["path"]] == "./deploy/grafana/dashboards"


def manifests() -> dict[str, dict[str, Any]]:
    docs = {}
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            docs[doc["kind"]] = doc
    return docs


def test_kubernetes_manifests_fit_together() -> None:
    docs = manifests()
    assert {"ConfigMap", "Deployment", "Service", "ServiceMonitor", "Kustomization"} <= set(docs)
    kustomization = docs["Kustomization"]
    assert sorted(kustomization["resources"]) == sorted(
        p.name for p in (DEPLOY / "k8s").glob("*.yaml") if p.name != "kustomization.yaml"
    )
    config = docs["ConfigMap"]
    assert set(config["data"]) <= set(ENV_VARS.values())
    assert all(isinstance(v, str) for v in config["data"].values())
    deployment = docs["Deployment"]
    pod = deployment["spec"]["template"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    container = pod["spec"]["containers"][0]
    assert container["envFrom"][0]["configMapRef"]["name"] == config["metadata"]["name"]
    port = {p["name"]: p["containerPort"] for p in container["ports"]}["http"]
    assert str(port) == config["data"]["CALLGUARD_WEB_PORT"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    service = docs["Service"]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    monitor = docs["ServiceMonitor"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0] == {
        "port": service["spec"]["ports"][0]["name"],
        "path": "/metrics",
        "interval": "15s",
    }


# --- durable audit store ------------------------------------------------------


def test_compose_file_runs_the_audit_sink_into_postgres() -> None:
    services = compose()["services"]
    sink = services["audit-sink"]
    assert sink["command"] == ["audit", "sink"] and "postgres" in sink["depends_on"]
    assert set(sink["environment"]) <= set(ENV_VARS.values())
    assert sink["environment"]["CALLGUARD_AUDIT_DSN"].startswith("postgresql://")
    assert services["postgres"]["image"].startswith("postgres:")


# --- the SIP edge ------------------------------------------------------------


SIP = ROOT / "deploy" / "sip"


def test_the_shipped_sip_proxy_config_is_valid_as_is_and_with_defines(tmp_path: Path) -> None:
    if kamailio_binary() is None:
        pytest.skip(
            "kamailio is not installed (Debian: apt-get install kamailio kamailio-utils-modules kamailio-json-modules)"
        )
    checked = check_kamailio_config(SIP_CONFIG)  # the defaults and deploy/sip/dialers.list
    if "could not find module" in checked.stderr:
        pytest.skip(f"a module of the SIP config is missing: {kamailio_unavailable()}")
    assert checked.returncode == 0 and "config file ok" in checked.stdout + checked.stderr, checked.stderr[-2000:]
    assert SIP_CONFIG == SIP / "kamailio.cfg"
    dialers = tmp_path / "dialers.list"
    dialers.write_text("1 127.0.0.1 32 0 operator=op;token=cgk_x\n")
    defines = kamailio_defines(15060, ("127.0.0.1", 15080), "http://127.0.0.1:16066/v1/check", dialers)
    checked = check_kamailio_config(SIP_CONFIG, *defines)
    assert checked.returncode == 0, checked.stderr[-2000:]
    assert "udp: 127.0.0.1 [127.0.0.1]:15060" in checked.stdout + checked.stderr
    # the settings in a file of one's own that includes the shipped one (Debian's service takes no -A)
    own = tmp_path / "edge.cfg"
    own.write_text(f'#!KAMAILIO\n#!define LISTEN udp:127.0.0.1:15061\n#!define DIALERS_FILE "{dialers}"\n'
                   f'include_file "{SIP_CONFIG}"\n')  # fmt: skip
    checked = check_kamailio_config(own)
    assert checked.returncode == 0 and "udp: 127.0.0.1 [127.0.0.1]:15061" in checked.stdout + checked.stderr
    # the check can fail: the same file without its JSON module is refused
    broken = tmp_path / "kamailio.cfg"
    broken.write_text(SIP_CONFIG.read_text().replace('loadmodule "json.so"\n', ""))
    assert check_kamailio_config(broken, *defines).returncode != 0


def test_the_sample_dialers_file_names_an_operator_and_a_token_per_dialer() -> None:
    lines = [
        line.split()
        for line in (SIP / "dialers.list").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines
    for group, address, netmask, port, tag in lines:
        assert (group, netmask, port) == ("1", "32", "0") and address.count(".") == 3
        params = dict(item.split("=", 1) for item in tag.split(";"))
        assert {"operator", "token"} <= params.keys() <= {"operator", "token", "client", "campaign"}
