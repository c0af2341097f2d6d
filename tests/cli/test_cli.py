"""The CLI as a user runs it: loaders against the session's real Redis, config errors."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pytest
import redis

from callguard.core.policy import most_recent_result
from callguard.storage.keys import OPERATORS_KEY, callee_key
from callguard.storage.register import read_results
from tests.conftest import cli, today, write_csv

pytestmark = pytest.mark.e2e


@pytest.fixture
def r(embedded) -> redis.Redis:
    return redis.Redis.from_url(embedded.redis_url, decode_responses=True)


def register_fields(r: redis.Redis, e164: str) -> dict[str, str]:
    """A number's stored results as the former one-field-per-number layout
    wrote them (``{last 2 digits}[:{client}]`` -> ``{as_of}|{o|c}|{registered_at}``),
    read back from the packed buckets."""
    suffix, fields = e164[-2:], {}
    for scope, res in read_results(r, e164).items():
        field = suffix if scope == "*" else f"{suffix}:{scope}"
        fields[field] = f"{res.as_of}|{'o' if res.opposed else 'c'}|{res.registered_at or ''}"
    return fields


def deciding(r: redis.Redis, e164: str, client: str) -> tuple[date, bool, str] | None:
    """(as_of, opposed, scope) of the stored result that decides for ``client``."""
    stored = tuple(res for scope, res in read_results(r, e164).items() if scope in ("*", client))
    result = most_recent_result(stored)
    return None if result is None else (result.as_of, result.opposed, result.client_id)


def test_register_load_reports_every_bad_line_and_writes_nothing(env, r, tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "bad.csv",
        "number,status,registered_at",
        [
            "+39 349 200 0001,clear,",
            "not-a-number,clear,",
            "+39 349 200 0002,maybe,",
            "+39 349 200 0003,opposed,01/02/2024",
        ],
    )
    result = cli(env, "register", "load", str(path), "--as-of", today())
    assert result.returncode == 1
    assert f"{path}:3: number is not a valid phone number" in result.stderr
    assert f"{path}:4: status must be 'opposed' or 'clear'" in result.stderr
    assert f"{path}:5: not an ISO date" in result.stderr
    assert "3 bad line(s); nothing was loaded" in result.stderr
    assert "Traceback" not in result.stderr
    assert "3492000001" not in result.stderr  # errors never echo numbers
    assert register_fields(r, "+393492000001") == {}


def test_register_loads_accumulate_and_the_most_recent_wins(env, r, tmp_path: Path) -> None:
    t = date.fromisoformat(today())
    opposed = write_csv(tmp_path / "a.csv", "number,status,registered_at", ["349 200 0010,opposed,2024-01-01"])
    clear = write_csv(tmp_path / "b.csv", "number,status", ["+393492000010,clear"])
    assert cli(env, "register", "load", str(opposed), "--as-of", str(t - timedelta(days=2))).returncode == 0
    assert cli(env, "register", "load", str(clear), "--as-of", str(t - timedelta(days=5))).returncode == 0
    assert register_fields(r, "+393492000010") == {"10": f"{t - timedelta(days=2)}|o|2024-01-01"}
    result = cli(env, "register", "load", str(clear), "--as-of", str(t), "--client", "acme")
    assert result.returncode == 0, result.stderr
    assert "for client acme" in result.stdout
    assert register_fields(r, "+393492000010") == {"10": f"{t - timedelta(days=2)}|o|2024-01-01", "10:acme": f"{t}|c|"}
    # Both scopes are kept; which one decides is the policy's rule (since
    # 27fcdb4 a '*' result may only deny): acme's own newer clear beats the
    # older '*' opposed, and the '*' opposed still counts for every other client.
    assert deciding(r, "+393492000010", "acme") == (t, False, "acme")
    assert deciding(r, "+393492000010", "beta") == (t - timedelta(days=2), True, "*")


def test_a_newer_clear_for_every_client_never_beats_an_older_own_opposed(env, r, tmp_path: Path) -> None:
    """Formerly the most recent result won across scopes; now a '*' clear is
    nobody's check (RPO_FAQ_CONTROLLERS), so it cannot beat a client's own
    older opposed result, and alone it decides for no client."""
    t = date.fromisoformat(today())
    opposed = write_csv(tmp_path / "a.csv", "number,status,registered_at", ["+393492000014,opposed,2024-01-01"])
    clear = write_csv(tmp_path / "b.csv", "number,status", ["+393492000014,clear"])
    load = ("register", "load")
    assert cli(env, *load, str(opposed), "--as-of", str(t - timedelta(days=3)), "--client", "acme").returncode == 0
    assert cli(env, *load, str(clear), "--as-of", str(t)).returncode == 0
    assert register_fields(r, "+393492000014") == {"14:acme": f"{t - timedelta(days=3)}|o|2024-01-01", "14": f"{t}|c|"}
    assert deciding(r, "+393492000014", "acme") == (t - timedelta(days=3), True, "acme")
    assert deciding(r, "+393492000014", "beta") is None  # not_checked for beta


def test_register_as_of_in_the_future_is_refused(env, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "f.csv", "number,status", ["+393492000011,clear"])
    result = cli(env, "register", "load", str(path), "--as-of", str(date.fromisoformat(today()) + timedelta(days=2)))
    assert result.returncode == 2 and "in the future" in result.stderr


def test_wrong_header_is_explained(env, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "h.csv", "phone,state", ["+393492000012,clear"])
    result = cli(env, "register", "load", str(path), "--as-of", today())
    assert result.returncode == 1
    assert (
        "missing column(s) number, status" in result.stderr
        and "expected number,status[,registered_at]" in result.stderr
    )


def test_operators_are_replaced_whole(env, r, tmp_path: Path) -> None:
    first = write_csv(
        tmp_path / "o1.csv", "operator_id,status,valid_from,valid_until",
        ["cli-a,active,2024-01-01,2030-01-01", "cli-b,revoked,2024-01-01,2030-01-01"],
    )  # fmt: skip
    second = write_csv(tmp_path / "o2.csv", "operator_id,status,valid_from,valid_until,caller_ids",
                       ["cli-c,active,2024-01-01,2030-01-01,+390844000001;+390612345678"])  # fmt: skip
    before = r.hgetall(OPERATORS_KEY)
    try:
        assert cli(env, "operators", "load", str(first)).returncode == 0
        assert set(r.hgetall(OPERATORS_KEY)) == {"cli-a", "cli-b"}
        result = cli(env, "operators", "load", str(second))
        assert result.returncode == 0 and "1 operators" in result.stdout
        # an Italian operator (no country in the file) is stored as before countries existed
        assert r.hgetall(OPERATORS_KEY) == {"cli-c": "active|2024-01-01|2030-01-01|+390844000001;+390612345678"}
        bad = write_csv(tmp_path / "o3.csv", "operator_id,status,valid_from,valid_until",
                        ["cli-d,active,2024-01-01,2023-01-01", "cli-d,active,2024-01-01,2030-01-01"])  # fmt: skip
        result = cli(env, "operators", "load", str(bad))
        assert result.returncode == 1 and "valid_until is before valid_from" in result.stderr
        assert "appears twice" in result.stderr
        assert set(r.hgetall(OPERATORS_KEY)) == {"cli-c"}
    finally:  # give the shared Redis its operators back
        r.delete(OPERATORS_KEY)
        if before:
            r.hset(OPERATORS_KEY, mapping=before)


def test_consents_upsert_and_refuse_blanket_consents(env, r, tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "c.csv", "callee,client_id,basis,granted_at,ends_at",
        ["+393492000020,acme,consent,2025-01-01T10:00:00,", "+393492000020,acme,contract,2024-01-01,2026-01-01"],
    )  # fmt: skip
    assert cli(env, "consents", "load", str(path)).returncode == 0
    stored = r.hgetall(callee_key("+393492000020"))
    # a datetime without offset is Italian local time, stored in UTC
    assert stored == {"consent:acme": "2025-01-01T09:00:00+00:00|", "contract:acme": "2024-01-01|2026-01-01"}
    blanket = write_csv(tmp_path / "b.csv", "callee,client_id,basis,granted_at", ["+393492000021,*,consent,2025-01-01"])
    result = cli(env, "consents", "load", str(blanket))
    assert result.returncode == 1 and "client_id '*'" in result.stderr


def test_optouts_keep_the_latest(env, r, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "o.csv", "callee,client_id,at",
                     ["+393492000030,*,2025-05-01", "+393492000030,*,2025-03-01", "+393492000030,acme,2025-04-01"])  # fmt: skip
    result = cli(env, "optouts", "load", str(path))
    assert result.returncode == 0, result.stderr
    assert r.hgetall(callee_key("+393492000030")) == {"optout:*": "2025-05-01", "optout:acme": "2025-04-01"}


def test_status_lists_loads(env) -> None:
    result = cli(env, "status")
    assert result.returncode == 0, result.stderr
    assert "operators:" in result.stdout


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("CALLGUARD_BROKER", "localhost:9092", "CALLGUARD_BROKER: expected kafka://HOST:PORT"),
        ("CALLGUARD_REDIS_URL", "http://x", "CALLGUARD_REDIS_URL: expected redis://"),
        ("CALLGUARD_WEB_PORT", "70000", "CALLGUARD_WEB_PORT: expected a port"),
        ("CALLGUARD_REGISTER_MAX_AGE_DAYS", "fifteen", "CALLGUARD_REGISTER_MAX_AGE_DAYS: expected a whole number"),
        ("CALLGUARD_DEFAULT_REGION", "ZZ", "CALLGUARD_DEFAULT_REGION: 'ZZ' is not an ISO 3166 region"),
        ("CALLGUARD_PRODUCER_IDEMPOTENCE", "yes", "CALLGUARD_PRODUCER_IDEMPOTENCE: expected one of auto, true, false"),
    ],
)
def test_bad_configuration_fails_at_start_with_one_line(env, variable, value, message) -> None:
    result = cli({**env, variable: value}, "worker")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"callguard: {message}"), result.stderr


def test_flags_override_the_environment(env) -> None:
    result = cli({**env, "CALLGUARD_WEB_PORT": "99999"}, "status", "--web-port", "8080")
    assert result.returncode == 0, result.stderr


def test_unreachable_redis_is_one_line(env, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "o.csv", "callee,client_id,at", ["+393492000040,*,2025-05-01"])
    result = cli(env, "optouts", "load", str(path), "--redis-url", "redis://:secret@127.0.0.1:1/0")
    assert result.returncode == 1
    assert result.stderr.startswith("callguard: cannot write to Redis at redis://:***@127.0.0.1:1/0")
    assert "secret" not in result.stderr and "Traceback" not in result.stderr


def test_kafka_security_settings_reach_every_client_without_printing_the_password(tmp_path: Path) -> None:
    from callguard.config import ConfigError, kafka_security, load_settings
    from callguard.worker.app import faust_credentials

    sasl = {
        "CALLGUARD_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "CALLGUARD_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "CALLGUARD_KAFKA_SASL_USERNAME": "callguard",
        "CALLGUARD_KAFKA_SASL_PASSWORD": "hunter2-secret",
    }
    settings = load_settings(environ=sasl)
    assert "hunter2" not in repr(settings)
    options = kafka_security(settings)
    assert options["security_protocol"] == "SASL_SSL" and options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert options["sasl_plain_password"] == "hunter2-secret" and options["ssl_context"] is not None
    credentials = faust_credentials(settings)
    assert credentials.username == "callguard" and credentials.mechanism.value == "SCRAM-SHA-512"
    assert kafka_security(load_settings(environ={})) == {} and faust_credentials(load_settings(environ={})) is None

    with pytest.raises(
        ConfigError, match="CALLGUARD_KAFKA_SASL_USERNAME and CALLGUARD_KAFKA_SASL_PASSWORD are required"
    ):
        load_settings(environ={**sasl, "CALLGUARD_KAFKA_SASL_PASSWORD": ""})
    with pytest.raises(ConfigError, match="CALLGUARD_KAFKA_SASL_MECHANISM"):
        load_settings(environ={**sasl, "CALLGUARD_KAFKA_SASL_MECHANISM": "GSSAPI"})
    with pytest.raises(ConfigError, match="CALLGUARD_KAFKA_CA_FILE: no such file"):
        load_settings(
            environ={"CALLGUARD_KAFKA_SECURITY_PROTOCOL": "SSL", "CALLGUARD_KAFKA_CA_FILE": str(tmp_path / "x")}
        )
    with pytest.raises(ConfigError, match="go together"):
        cert = tmp_path / "cert.pem"
        cert.write_text("x")
        load_settings(environ={"CALLGUARD_KAFKA_SECURITY_PROTOCOL": "SSL", "CALLGUARD_KAFKA_CERT_FILE": str(cert)})


def test_a_bad_kafka_security_setting_is_one_line_without_secrets(env) -> None:
    result = cli(
        {**env, "CALLGUARD_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "CALLGUARD_KAFKA_SASL_PASSWORD": "hunter2"},
        "worker",
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "hunter2" not in result.stderr
    assert "CALLGUARD_KAFKA_SASL_MECHANISM" in result.stderr


def test_processing_guarantee_and_compression_settings() -> None:
    from callguard.config import ConfigError, load_settings

    assert load_settings(environ={}).processing_guarantee == "at_least_once"
    assert load_settings(environ={"CALLGUARD_PROCESSING_GUARANTEE": "exactly_once"}).processing_guarantee == (
        "exactly_once"
    )
    with pytest.raises(ConfigError, match="CALLGUARD_PROCESSING_GUARANTEE: expected at_least_once or exactly_once"):
        load_settings(environ={"CALLGUARD_PROCESSING_GUARANTEE": "exactly-once"})
    assert load_settings(environ={}).compression == "none"
    assert load_settings(environ={"CALLGUARD_COMPRESSION": "gzip"}).compression == "gzip"
    with pytest.raises(ConfigError, match="CALLGUARD_COMPRESSION: expected one of none, gzip, lz4, zstd"):
        load_settings(environ={"CALLGUARD_COMPRESSION": "brotli"})
