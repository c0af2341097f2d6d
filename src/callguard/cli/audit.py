"""``callguard audit sink`` and ``callguard audit search``: the durable audit store.

``search`` is read by a compliance officer answering a Garante complaint: each
decision with its reasons and the data it rested on (register result and its
as-of day, the consent or contract used, opt-outs), then one summary line
that also says how far the store is behind the topic. It prints numbers: it is
evidence, asked for by number. Logs never do.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import logging.config
import sys
from collections.abc import Callable
from datetime import date, datetime
from typing import Any

import orjson

from callguard.config import ENV_VARS, ConfigError, Settings, safe_url
from callguard.core.numbers import normalise

SINK_HELP = "copy callguard.audit into PostgreSQL (batched, idempotent on intent_id, restart-safe)"
SEARCH_HELP = "every decision about a number, why, and on which data (from the audit store, and the topic past it)"


def add_parsers(actions: Any, config_flags: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add ``sink``, ``search`` and ``report`` to ``callguard audit``."""
    sink = actions.add_parser("sink", help=SINK_HELP, description=SINK_HELP)
    sink.add_argument("--audit-dsn", help=f"PostgreSQL DSN, postgresql://USER@HOST:PORT/DB [{ENV_VARS['audit_dsn']}]")
    config_flags(sink)
    search = actions.add_parser("search", help=SEARCH_HELP, description=SEARCH_HELP)
    search.add_argument("--callee", required=True, help="the number, in any format the dialers use")
    search.add_argument("--since", help="only decisions from this day on (YYYY-MM-DD, Italian days)")
    search.add_argument("--client", help="only decisions for calls on behalf of this client")
    search.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    search.add_argument("--audit-dsn", help=f"PostgreSQL DSN [{ENV_VARS['audit_dsn']}]")
    config_flags(search)
    from callguard.cli.report import add_parser as add_report_parser

    add_report_parser(actions, config_flags)


def main_audit_store(args: argparse.Namespace, settings: Settings) -> int:
    if not settings.audit_dsn:
        raise ConfigError(f"{ENV_VARS['audit_dsn']} (or --audit-dsn) is required: the PostgreSQL of the audit store")
    if args.action == "sink":
        return run_sink_command(settings)
    since = None
    if args.since:
        try:
            since = date.fromisoformat(args.since)
        except ValueError:
            raise ConfigError(f"--since: expected YYYY-MM-DD, got {args.since!r}") from None
    return asyncio.run(_search(settings, args.callee, since, args.client, args.json))


def run_sink_command(settings: Settings) -> int:
    import asyncpg

    from callguard.auditstore.store import run_sink
    from callguard.kafka.topics import BrokerUnavailable
    from callguard.logs import logging_config

    logging.config.dictConfig(logging_config(settings.log_format, settings.log_level))
    try:
        asyncio.run(run_sink(settings))
    except BrokerUnavailable as exc:
        print(f"callguard: {exc}", file=sys.stderr)
        return 1
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        print(f"callguard: audit store at {safe_url(settings.audit_dsn)}: {exc}", file=sys.stderr)
        return 1
    return 0


async def _search(settings: Settings, number: str, since: date | None, client: str | None, as_json: bool) -> int:
    import asyncpg

    from callguard.auditstore.store import search

    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # a broker problem is reported in our own line
    callee = normalise(number, settings.default_region)
    try:
        result = await search(settings, number, callee, since, client)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        print(f"callguard: audit store at {safe_url(settings.audit_dsn)}: {exc}", file=sys.stderr)
        return 1
    searched = callee or number
    behind = None if result.lag is None else sum(p.behind for p in result.lag)
    if as_json:
        print(
            orjson.dumps(
                {
                    "callee": searched,
                    "input": number,
                    "since": None if since is None else since.isoformat(),
                    "client": client,
                    "decisions": [
                        {**d["record"], "audit_position": {"partition": d["partition"], "offset": d["offset"]},
                         "in_store": not d["pending"]}
                        for d in result.decisions
                    ],
                    "store_behind": behind,
                    "lag": None if result.lag is None else [
                        {"partition": p.partition, "end_offset": p.end, "committed_offset": p.committed,
                         "behind": p.behind} for p in result.lag
                    ],
                    "lag_error": result.lag_error,
                    "topic_scan_complete": result.scan_complete,
                },
                option=orjson.OPT_INDENT_2,
            ).decode()
        )  # fmt: skip
        return 0
    scope = "".join(
        [f" since {since}" if since else "", f" for client {client}" if client else ""]
    )  # fmt: skip
    note = "" if callee else " (not a valid number: matched as written)"
    print(f"Decisions about {searched}{note}{scope}, newest first (times in Europe/Rome)")
    for decision in result.decisions:
        print()
        print("\n".join(describe(decision)))
    print()
    print(summary(searched, result.decisions, result.lag, result.lag_error, scope, result.scan_complete))
    return 0


def _rome(stamp: str) -> str:
    from callguard.auditstore.store import ROME

    moment = datetime.fromisoformat(stamp).astimezone(ROME)
    return moment.strftime("%Y-%m-%d %H:%M:%S") + f".{moment.microsecond // 1000:03d} {moment.tzname()}"


def _consent(c: dict[str, Any]) -> str:
    ends = f", ends {c['ends_at']}" if c.get("ends_at") else ""
    return f"{c.get('basis')} of client {c.get('client_id')} granted {c.get('granted_at')}{ends}"


def describe(decision: dict[str, Any]) -> list[str]:
    """The lines for one decision: what, why, and on which data."""
    record = decision["record"]
    intent = record.get("intent") or {}
    rules = {rule.get("rule"): rule for rule in record.get("rules") or ()}
    reasons = ", ".join(record.get("reasons") or ()) or "-"
    lines = [
        f"{_rome(record['decided_at'])}  {record['decision'].upper()}  reasons: {reasons}",
        f"  intent {record['intent_id']}, client {intent.get('client_id', '-')}, operator "
        f"{intent.get('operator_id', '-')}, campaign {intent.get('campaign_id') or '-'}, "
        f"purpose {intent.get('purpose', '-')}",
    ]
    if intent.get("script_id") or intent.get("list_source"):
        lines.append(f"  script {intent.get('script_id') or '-'}, number from list {intent.get('list_source') or '-'}")
    register = rules.get("opposition_register")
    if register is None:
        lines.append("  register: not evaluated")
    elif register.get("outcome") == "skipped":
        lines.append("  register: not applicable (purpose outside the register)")
    else:
        detail = register.get("detail") or {}
        result = detail.get("result")
        if not result:
            lines.append("  register: no consultation result for this number and client")
        else:
            registered = f", registered {result['registered_at']}" if result.get("registered_at") else ""
            lines.append(
                f"  register: {result.get('status')} as of {result.get('as_of')} (list of client "
                f"{result.get('client_id')}{registered}), {detail.get('age_days')} days old at the call "
                f"(max {detail.get('max_age_days')}) -> {register.get('outcome')}"
            )
    used = [c for rule in rules.values() for c in (rule.get("detail") or {}).get("exceptions") or ()]
    lines.append("  consent/contract used: " + ("; ".join(_consent(c) for c in used) if used else "none"))
    dnc = rules.get("internal_dnc")
    optouts = (dnc or {}).get("detail", {}).get("optouts") or []
    lines.append(
        "  opt-outs: "
        + ("; ".join(f"client {o.get('client_id')} at {o.get('at')}" for o in optouts) if optouts else "none")
    )
    operator = rules.get("operator_certified")
    if operator is not None and operator.get("outcome") != "pass":
        lines.append(f"  operator: {operator.get('outcome')} {operator.get('detail') or ''}")
    outcomes = ", ".join(f"{name} {rule.get('outcome')}" for name, rule in rules.items())
    lines.append(f"  rules: {outcomes or '-'}; policy {(record.get('versions') or {}).get('policy', '-')}")
    where = f"callguard.audit partition {decision['partition']} offset {decision['offset']}"
    lines.append(
        f"  evidence: {where}" + (" (read from the topic: not yet in the store)" if decision["pending"] else "")
    )
    return lines


def summary(
    searched: str,
    decisions: list[dict[str, Any]],
    lag: list[Any] | None,
    lag_error: str | None,
    scope: str,
    scan_complete: bool = True,
) -> str:
    """One line: how many decisions, which way, over which days, and how complete the answer is."""
    allow = sum(1 for d in decisions if d["record"]["decision"] == "allow")
    span = ""
    if decisions:
        span = f" from {_rome(decisions[-1]['record']['decided_at'])[:10]} to {_rome(decisions[0]['record']['decided_at'])[:10]}"
    head = f"{searched}{scope}: {len(decisions)} decision(s), {allow} allow, {len(decisions) - allow} deny{span}"
    if lag is None:
        return f"{head}; store only: could not read callguard.audit to measure the sink's lag ({lag_error})"
    behind = sum(p.behind for p in lag)
    if not behind:
        return f"{head}; the audit store is up to date with callguard.audit"
    pending = sum(1 for d in decisions if d["pending"])
    parts = ", ".join(f"partition {p.partition}: {p.behind}" for p in lag if p.behind)
    return (
        f"{head}; the audit store is {behind:,} record(s) behind callguard.audit ({parts}), "
        f"read from the topic instead: {pending} of the decisions above"
        + ("" if scan_complete else " (the topic past the store was too long to read whole: some may be missing)")
    )
