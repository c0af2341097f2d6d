"""A minimal dialer: check every number of a CSV through callguard and print the decisions.

    python examples/check_csv.py numbers.csv --broker kafka://kafka-1:9092 --operator op-roma --client acme \
        --caller-id "+39 0844 000001"
    python examples/check_csv.py numbers.csv --http https://callguard.example/v1/check --operator op-roma \
        --client acme     # over HTTP, with the bearer token in CALLGUARD_TOKEN (or --token)
    python examples/check_csv.py examples/numbers.csv --embedded     # everything on this machine, sample data
    python examples/check_csv.py examples/numbers.csv --embedded --http   # the same over POST /v1/check

The CSV has a ``callee`` column and, optionally, ``operator_id``, ``client_id``,
``purpose`` and ``caller_id`` (an empty cell takes the flag's value). Every number is
checked concurrently through one :class:`callguard.client.GuardClient`; the
table masks numbers, as anything a dialer prints or logs should. Only an
``ALLOW`` permits the call: a ``TIMEOUT`` is treated as a deny.

``--http URL`` checks through a worker's ``POST /v1/check`` instead of Kafka,
presenting a bearer token (``callguard tokens issue``): a token names one
operator, so a row of another operator is refused (``REFUSED``, not called).

``--embedded`` starts a throw-away broker, Redis and ``callguard worker`` with
the package's sample data (as ``callguard demo`` does; needs
``pip install 'callguard[embedded]'``) and stops them at the end; like the
demo, that worker decides by the Italian policy with calling hours open
around the clock (``sample/demo-policy.toml``). With ``--http`` it issues a
token for each operator of the CSV, as an operator's administrator would.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from callguard.client import CheckResult, CheckTimeout, GuardClient, GuardDecision
from callguard.core.numbers import mask


@dataclass(frozen=True, slots=True)
class Refused:
    """``POST /v1/check`` refused the request (a bad token, another operator's
    row, a bad intent): nothing was decided, and the number is not called."""

    intent_id: str
    status: int
    error: str
    decision: str = "refused"
    allowed: bool = False
    callee: None = None

    @property
    def reasons(self) -> tuple[str, ...]:
        return (f"HTTP {self.status}: {self.error}",)


Result = CheckResult | Refused


def read_rows(path: Path, operator: str, client: str, purpose: str, caller_id: str) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or "callee" not in reader.fieldnames:
            raise SystemExit(f"{path}: the header needs a 'callee' column")
        return [
            {
                "callee": row["callee"],
                "operator_id": row.get("operator_id") or operator,
                "client_id": row.get("client_id") or client,
                "purpose": row.get("purpose") or purpose,
                "caller_id": row.get("caller_id") or caller_id,
            }
            for row in reader
        ]


async def check_all(
    broker: str, rows: list[dict[str, str]], timeout: float, concurrency: int
) -> tuple[list[CheckResult], float]:
    limit = asyncio.Semaphore(concurrency)
    async with GuardClient(broker, timeout=timeout, intent_prefix="csv-") as guard:

        async def one(row: dict[str, str]) -> CheckResult:
            async with limit:
                return await guard.check(
                    row["callee"], row["operator_id"], row["client_id"], row["purpose"], row["caller_id"] or None
                )

        started = time.perf_counter()
        results = await asyncio.gather(*(one(row) for row in rows))
        return list(results), time.perf_counter() - started


def post_check(url: str, token: str, row: Mapping[str, str], timeout: float) -> Result:
    """One ``POST /v1/check`` with the bearer token; a 504 is a timeout (never an allow)."""
    request = urllib.request.Request(
        url,
        data=json.dumps(dict(row)).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout + 5) as response:
            return GuardDecision.from_message(json.loads(response.read()))
    except urllib.error.HTTPError as exc:
        body = json.loads(exc.read() or b"{}")
        if exc.code == 504:
            return CheckTimeout(body.get("intent_id") or "-", timeout)
        return Refused(body.get("intent_id") or "-", exc.code, body.get("error", exc.reason))


async def check_all_http(
    url: str, tokens: Mapping[str, str], rows: list[dict[str, str]], timeout: float, concurrency: int
) -> tuple[list[Result], float]:
    """Every row through ``POST /v1/check``, ``concurrency`` requests at a time
    (each in a thread: the standard library's HTTP client blocks)."""
    limit = asyncio.Semaphore(min(concurrency, 32))

    async def one(row: dict[str, str]) -> Result:
        async with limit:
            token = tokens.get(row["operator_id"]) or tokens.get("*", "")
            return await asyncio.to_thread(post_check, url, token, row, timeout)

    started = time.perf_counter()
    results = await asyncio.gather(*(one(row) for row in rows))
    return list(results), time.perf_counter() - started


def print_table(rows: list[dict[str, str]], results: list[Result], elapsed: float) -> None:
    print(f"{'#':>4}  {'callee':<16} {'client':<8} {'decision':<9} {'reasons':<34} intent_id")
    for index, (row, result) in enumerate(zip(rows, results, strict=True), start=1):
        shown = mask(result.callee) if result.callee else mask(row["callee"].strip())
        if isinstance(result, CheckTimeout):
            verdict, reasons = "TIMEOUT", f"no decision in {result.waited:g}s: not called"
        else:
            verdict, reasons = result.decision.upper(), ",".join(result.reasons) or "-"
        print(f"{index:>4}  {shown:<16} {row['client_id']:<8} {verdict:<9} {reasons:<34} {result.intent_id}")
    verdicts = Counter("allow" if r.allowed else r.decision for r in results)
    refused = f", {verdicts['refused']} refused (not called)" if verdicts["refused"] else ""
    print(
        f"\n{len(results)} checked in {elapsed:.2f}s: {verdicts['allow']} allowed, {verdicts['deny']} denied, "
        f"{verdicts['timeout']} timed out (not called){refused}"
    )


@dataclass
class Stack:
    broker: str
    check_url: str
    env: dict[str, str]

    def issue_token(self, operator: str) -> str:
        """``callguard tokens issue`` for ``operator``: the token is printed once."""
        issued = subprocess.run(
            [sys.executable, "-m", "callguard", "tokens", "issue", "--operator-id", operator,
             "--name", f"check-csv-{operator}"],
            env=self.env, check=True, capture_output=True, text=True,
        )  # fmt: skip
        return issued.stdout.strip()


@contextlib.contextmanager
def embedded_stack() -> Iterator[Stack]:
    """Broker, Redis, the sample data and a worker, for trying the example anywhere."""
    from callguard.dev.demo import sample_path
    from callguard.dev.embedded import Embedded, EmbeddedError, free_port, wait_healthy

    today = datetime.now(ZoneInfo("Europe/Rome")).date()
    with Embedded() as servers:
        port = free_port()
        env = {**os.environ, "CALLGUARD_BROKER": servers.broker_url, "CALLGUARD_REDIS_URL": servers.redis_url,
               "CALLGUARD_WEB_PORT": str(port), "CALLGUARD_POLICY": str(sample_path("demo-policy.toml"))}  # fmt: skip
        for argv in (
            ["operators", "load", str(sample_path("operators.csv"))],
            ["mandates", "load", str(sample_path("mandates.csv"))],
            # each client consults the register for itself, as in the demo
            [
                "register",
                "load",
                str(sample_path("register.csv")),
                "--as-of",
                str(today - timedelta(days=2)),
                "--client",
                "acme",
            ],
            [
                "register",
                "load",
                str(sample_path("register.csv")),
                "--as-of",
                str(today - timedelta(days=1)),
                "--client",
                "beta",
            ],
            ["directory", "load", str(sample_path("directory.csv")), "--as-of", str(today - timedelta(days=1))],
            ["register", "load", str(sample_path("register_beta.csv")), "--as-of", str(today), "--client", "beta"],
            ["register", "load", str(sample_path("register_old.csv")), "--as-of", str(today - timedelta(days=40))],
            ["consents", "load", str(sample_path("consents.csv"))],
            ["optouts", "load", str(sample_path("optouts.csv"))],
        ):
            subprocess.run([sys.executable, "-m", "callguard", *argv], env=env, check=True, capture_output=True)
        log = (servers.workdir / "worker.log").open("wb")
        worker = subprocess.Popen([sys.executable, "-m", "callguard", "worker"], env=env, stdout=log, stderr=log)
        try:
            try:
                wait_healthy(port, worker)
            except EmbeddedError as exc:
                raise SystemExit(
                    f"the embedded worker did not start ({exc}); see {servers.workdir / 'worker.log'}"
                ) from None
            print(f"embedded broker {servers.broker_url}, Redis and a worker with the sample data\n", flush=True)
            yield Stack(servers.broker_url, f"http://127.0.0.1:{port}/v1/check", env)
        finally:
            worker.terminate()
            worker.wait(30)
            log.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("csv", type=Path, help="CSV with a callee column")
    parser.add_argument("--broker", default=os.environ.get("CALLGUARD_BROKER", "kafka://127.0.0.1:9092"))
    parser.add_argument("--operator", default="op-roma", help="operator_id for rows without one")
    parser.add_argument("--client", default="acme", help="client_id for rows without one")
    parser.add_argument("--purpose", default="marketing", choices=("marketing", "survey", "service"))
    parser.add_argument(
        "--caller-id", default="+39 0844 000001", help="number shown to the callee, for rows without one"
    )
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for each decision")
    parser.add_argument("--concurrency", type=int, default=500, help="checks in flight at once")
    parser.add_argument("--embedded", action="store_true", help="run against a throw-away local stack")
    parser.add_argument(
        "--http",
        nargs="?",
        const="",
        metavar="URL",
        help="check through POST /v1/check at URL (with --embedded: its own)",
    )
    parser.add_argument("--token", default=os.environ.get("CALLGUARD_TOKEN", ""), help="bearer token for --http")
    args = parser.parse_args()
    rows = read_rows(args.csv, args.operator, args.client, args.purpose, args.caller_id)
    if args.http is not None and not args.embedded and not (args.http and args.token):
        parser.error("--http needs the check URL and a token (--token or CALLGUARD_TOKEN)")
    results: list[Result]
    with embedded_stack() if args.embedded else contextlib.nullcontext() as stack:
        if args.http is None:
            checked = asyncio.run(
                check_all(stack.broker if stack else args.broker, rows, args.timeout, args.concurrency)
            )
            results, elapsed = list(checked[0]), checked[1]
        else:
            url = args.http or (stack.check_url if stack else "")
            if stack is not None and not args.token:
                tokens = {
                    operator: stack.issue_token(operator) for operator in sorted({r["operator_id"] for r in rows})
                }
            else:
                tokens = {"*": args.token}
            results, elapsed = asyncio.run(check_all_http(url, tokens, rows, args.timeout, args.concurrency))
    print_table(rows, results, elapsed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
