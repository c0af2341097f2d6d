"""``callguard audit report`` end to end: intents decided by a real worker on the
session's broker and Redis, copied by a real sink into the session's
PostgreSQL, the report written by the command as a user runs it, then opened
in headless Chromium (Debian's ``chromium``): the page's text, a screenshot
and a PDF. The browser checks skip, saying why, where Chromium is absent
(``./dev test`` installs it as root).

Numbers of this module: +39 351 702 00NN; intent ids ``rp-``; clients ``rp-…`` (the
audit store is the session's: other modules count their own clients' decisions in it).
"""

from __future__ import annotations

import re
import shutil
import stat
import struct
import subprocess
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import asyncpg
import orjson
import pytest

from callguard.dev.embedded import Server, free_port
from tests.auditstore.sink import Sink, wait_stored
from tests.conftest import Worker, cli, decide_intents, load_all, operators_csv, today, write_csv
from tests.page_text import text_of

pytestmark = pytest.mark.e2e

CALLEE = "+393517020001"
WRITTEN = "0039 351 702 0001"  # any form a dialer writes finds it
OTHER = "+393517020002"  # another person in the same partitions: never in the report


@pytest.fixture(scope="module")
def store_env(env: dict[str, str], postgres: Server) -> dict[str, str]:
    return {**env, "CALLGUARD_AUDIT_DSN": postgres.url}


@pytest.fixture(scope="module")
def sink(store_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sink]:
    running = Sink(store_env, tmp_path_factory.mktemp("report-sink") / "sink.log").start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def loaded(env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> None:
    d = tmp_path_factory.mktemp("report-data")
    t = date.fromisoformat(today())
    load_all(
        env,
        ("operators", "load", str(operators_csv(d, ["rp-roma,active,2024-01-01,2030-12-31,"]))),
        ("register", "load", str(write_csv(d / "reg.csv", "number,status,registered_at",
                                           [f"{CALLEE},opposed,2024-02-01", f"{OTHER},clear,"])),
         "--as-of", str(t - timedelta(days=2))),
        ("consents", "load", str(write_csv(d / "consents.csv", "callee,client_id,basis,granted_at,ends_at",
                                           [f"{CALLEE},rp-acme,consent,2025-03-01,"]))),
        ("optouts", "load", str(write_csv(d / "optouts.csv", "callee,client_id,at", [f"{CALLEE},rp-gamma,2025-05-05"]))),
    )  # fmt: skip


def intent(intent_id: str, client: str, operator: str = "rp-roma", callee: str = CALLEE) -> dict[str, str]:
    return {"intent_id": intent_id, "callee": callee, "operator_id": operator, "client_id": client,
            "campaign_id": "winter"}  # fmt: skip


@pytest.fixture(scope="module")
def decided(store_env: dict[str, str], worker: Worker, loaded: None, sink: Sink) -> dict[str, dict[str, object]]:
    import asyncio

    intents = [
        intent("rp-consent", "rp-acme"),  # opposed, but a consent of the client after the registration: allow
        intent("rp-opposed", "rp-beta"),  # opposed: deny
        intent("rp-optout", "rp-gamma"),  # opposed and opted out from that client: deny, both reasons
        intent("rp-unknown-op", "rp-acme", operator="rp-nobody"),  # not on the certification list: deny
        *(intent(f"rp-other-{n}", "rp-acme", callee=OTHER) for n in range(4)),
    ]
    decisions = asyncio.run(decide_intents(store_env["CALLGUARD_BROKER"], intents))
    asyncio.run(wait_stored(store_env["CALLGUARD_AUDIT_DSN"], "rp-", len(intents), sink))
    return decisions


def report(env: dict[str, str], out: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return cli(env, "audit", "report", "--callee", WRITTEN, "--out", str(out), *argv)


def test_the_report_holds_every_decision_about_the_number_and_the_chain_holds(
    store_env: dict[str, str], decided: dict[str, dict[str, object]], tmp_path: Path
) -> None:
    out = tmp_path / "report.html"
    result = report(store_env, out)
    assert result.returncode == 0, result.stderr
    print(result.stdout)
    assert result.stdout.strip().endswith(f"-> {out}")
    assert "4 decision(s) about +39351*****01 (1 allowed, 3 denied); hash chain: 4 intact" in result.stdout
    assert CALLEE not in result.stdout + result.stderr  # the terminal gets the number masked
    assert stat.S_IMODE(out.stat().st_mode) == 0o600  # personal data: the owner's only
    html = out.read_text()
    text = text_of(html)
    for intent_id in ("rp-consent", "rp-opposed", "rp-optout", "rp-unknown-op"):
        assert intent_id in text
        assert decided[intent_id]["decision"] in ("allow", "deny")
    assert "rp-other" not in text and OTHER not in html  # nobody else's decision, nobody else's number
    assert re.search(r"decisions 4 calls allowed 1 calls denied 3", text)
    assert "ALLOWED consent" in text and "DENIED opposition_register" in text
    assert "DENIED opposition_register internal_dnc" in text and "DENIED operator_unknown" in text
    assert "consent given to rp-acme on 2025-03-01 used" in text
    assert "for rp-gamma on 2025-05-05" in text
    assert "rp-nobody: not on the certification list → denied" in text
    assert "CHAIN INTACT the chain holds for all 4 record(s) shown" in text
    assert "policy test-core" in text
    assert not re.search(r"https?://", html)

    # no broker: the store answers, and the report says what it could not read
    gone = {**store_env, "CALLGUARD_BROKER": f"kafka://127.0.0.1:{free_port()}"}
    result = report(gone, tmp_path / "no-broker.html")
    assert result.returncode == 0, result.stderr
    text = text_of((tmp_path / "no-broker.html").read_text())
    assert "callguard.audit could not be read, so decisions the audit store does not hold yet may be missing" in text
    assert "Read from the audit store (PostgreSQL) only" in text and "4 decision(s)" in result.stdout


def test_the_report_renders_in_chromium_prints_to_pdf_and_fetches_nothing(
    store_env: dict[str, str], decided: dict[str, dict[str, object]], tmp_path: Path
) -> None:
    browser = shutil.which("chromium")
    if browser is None:
        pytest.skip("Debian's chromium is not installed (./dev test installs it as root: apt-get install chromium)")
    out = tmp_path / "report.html"
    assert report(store_env, out).returncode == 0
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", f"--user-data-dir={tmp_path}/c"]
    dom = subprocess.run([*flags, "--dump-dom", out.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    text = text_of(dom.stdout)
    assert "Every call decision about a telephone number" in text and CALLEE in text
    assert "rp-consent" in text and "rp-unknown-op" in text
    assert "ALLOWED" in text and "DENIED opposition_register internal_dnc" in text
    assert "CHAIN INTACT the chain holds for all 4 record(s) shown" in text
    assert "<svg" in dom.stdout and 'class="mark deny"' in dom.stdout and 'class="mark allow"' in dom.stdout
    assert 'class="count">3</text>' in dom.stdout  # the three denies of one batch: one mark, counted

    png = tmp_path / "report.png"
    shot = subprocess.run(
        [*flags, f"--screenshot={png}", "--window-size=1100,1600", "--hide-scrollbars", out.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shot.returncode == 0 and png.exists(), shot.stderr[-2000:]
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (1100, 1600)
    # a blank or unstyled page compresses to a few KB; this one has a header band, cards, a chart, tables
    assert len(data) > 60_000, len(data)
    print(f"screenshot {png}: {len(data):,} bytes")

    pdf = tmp_path / "report.pdf"
    printed = subprocess.run(
        [*flags, f"--print-to-pdf={pdf}", "--no-pdf-header-footer", out.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert printed.returncode == 0 and pdf.exists(), printed.stderr[-2000:]
    body = pdf.read_bytes()
    pages = len(re.findall(rb"/Type\s*/Page\b", body))
    assert body.startswith(b"%PDF-") and pages >= 2, (len(body), pages)
    print(f"PDF {pdf}: {len(body):,} bytes, {pages} A4 pages")


def test_records_past_the_store_are_read_from_the_topic_and_their_chain_checked(
    store_env: dict[str, str], decided: dict[str, dict[str, object]], sink: Sink, tmp_path: Path
) -> None:
    import asyncio

    sink.stop()
    try:
        asyncio.run(decide_intents(store_env["CALLGUARD_BROKER"], [intent("rp-later", "rp-beta")]))
        out = tmp_path / "behind.html"
        result = report(store_env, out)
        assert result.returncode == 0, result.stderr
        text = text_of(out.read_text())
        assert "5 decision(s)" in result.stdout and "hash chain: 5 intact" in result.stdout
        assert "record(s) behind callguard.audit" in text
        assert "(read from the topic: not yet in the audit store)" in text
        assert text.count("(read from the topic: not yet in the audit store)") == 1
        since = report(store_env, tmp_path / "since.html", "--since", str(date.fromisoformat(today()) + timedelta(1)))
        assert since.returncode == 0 and "0 decision(s)" in since.stdout
    finally:
        sink.start()
    asyncio.run(wait_stored(store_env["CALLGUARD_AUDIT_DSN"], "rp-later", 1, sink))


def test_an_edited_record_in_the_store_is_caught_and_the_report_shows_the_chained_bytes(
    store_env: dict[str, str], decided: dict[str, dict[str, object]], tmp_path: Path
) -> None:
    import asyncio

    async def tamper(assignment: str, *args: object) -> tuple[object, object]:
        conn = await asyncpg.connect(store_env["CALLGUARD_AUDIT_DSN"])
        try:
            before = await conn.fetchrow("SELECT record::text, raw FROM callguard_audit WHERE intent_id = 'rp-opposed'")
            await conn.execute(f"UPDATE callguard_audit SET {assignment} WHERE intent_id = 'rp-opposed'", *args)
            return before["record"], before["raw"]
        finally:
            await conn.close()

    async def restore(record: object, raw: object) -> None:
        conn = await asyncpg.connect(store_env["CALLGUARD_AUDIT_DSN"])
        try:
            await conn.execute(
                "UPDATE callguard_audit SET record = $1::jsonb, raw = $2 WHERE intent_id = 'rp-opposed'", record, raw
            )
        finally:
            await conn.close()

    record, raw = asyncio.run(tamper("""record = jsonb_set(record, '{decision}', '"allow"')"""))
    try:
        # the queryable column edited: the report shows the record as the chain holds it
        out = tmp_path / "column.html"
        result = report(store_env, out)
        assert result.returncode == 0, result.stderr
        assert "DENIED opposition_register" in text_of(out.read_text())
        assert "(1 allowed, " in result.stdout  # the stored jsonb says allow: not what is shown or counted
        # the evidence itself edited: the chain breaks there, and the command says so (exit 1)
        edited = orjson.loads(bytes(raw))  # type: ignore[arg-type]
        edited["decision"], edited["reasons"] = "allow", []
        asyncio.run(tamper("raw = $1", orjson.dumps(edited)))
        out = tmp_path / "raw.html"
        result = report(store_env, out)
        assert result.returncode == 1, result.stderr
        assert "broken" in result.stdout
        text = text_of(out.read_text())
        assert "CHAIN BROKEN" in text
        assert "does not carry this record's hash: this record, or the one after it, was altered" in text
    finally:
        asyncio.run(restore(record, raw))  # the store is the session's: as it was for the modules after this one
