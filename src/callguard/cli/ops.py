"""``callguard lag`` and ``callguard status``: what an on-call engineer asks first.

Kept apart from :mod:`callguard.cli.main` (which only wires them in) so the
operations commands can grow without touching the loaders.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from typing import Any

import orjson
from aiokafka.errors import GroupAuthorizationFailedError, KafkaError
from redis.exceptions import RedisError

from callguard.config import ENV_VARS, Settings, broker_hosts, kafka_security, safe_url
from callguard.core.facts import Mandate
from callguard.core.policy import PolicySettings, check_campaign_silent_rate
from callguard.core.policyfile import PolicyError, policy_for
from callguard.core.schema import INTENTS_TOPIC
from callguard.kafka.access import who
from callguard.kafka.lag import LagProbe, format_table, overall, watch
from callguard.storage.factory import open_stores
from callguard.storage.stores import NO_CAMPAIGN
from callguard.worker.health import ROME, data_checks, read_data


def add_parsers(commands: Any, config_flags: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add ``lag`` to the ``callguard`` subcommands."""
    lag = commands.add_parser(
        "lag",
        help="consumer lag of the workers' group per partition, with a Burrow-style status",
        description="Per partition of callguard.intents: the group's committed offset, the end offset, the lag "
        "in intents and in seconds (age of the oldest intent not yet committed), and a status over a window "
        "of samples: OK, WARN (lag growing), STALL (offsets not moving, workers present), STOP (no workers).",
    )
    lag.add_argument("--group", help=f"consumer group [{ENV_VARS['app_id']}, default callguard]")
    lag.add_argument("--watch", action="store_true", help="keep sampling and printing until interrupted")
    lag.add_argument("--interval", type=float, default=1.0, help="seconds between samples (default 1)")
    lag.add_argument("--window", type=int, default=5, help="samples the status is judged over (default 5)")
    lag.add_argument("--samples", type=int, help="samples to take before exiting (default: --window)")
    lag.add_argument("--json", action="store_true", help="print one JSON object per sample instead of a table")
    config_flags(lag)


def _quiet_kafka() -> None:
    """The CLI reports a broker problem in one line of its own; aiokafka would add its own."""
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)


def _fail(message: str) -> int:
    print(f"callguard: {message}", file=sys.stderr)
    return 1


async def run_lag(args: argparse.Namespace, settings: Settings) -> int:
    group = args.group or settings.app_id
    if args.interval <= 0 or args.window < 1 or (args.samples is not None and args.samples < 1):
        print("callguard: --interval must be > 0, --window and --samples at least 1", file=sys.stderr)
        return 2
    _quiet_kafka()
    samples = None if args.watch else (args.samples or args.window)
    probe = LagProbe(broker_hosts(settings.broker), group, INTENTS_TOPIC, security=kafka_security(settings))
    last: tuple[Any, list[dict[str, Any]]] | None = None
    try:
        async for sample, rows in watch(probe, args.interval, args.window, samples):
            last = (sample, rows)
            if args.json:
                line = {
                    "group": group,
                    "at": datetime.fromtimestamp(sample.at, UTC).isoformat(),
                    "status": overall(rows),
                    "group_state": sample.group_state,
                    "members": sample.members,
                    "partitions": rows,
                }
                print(orjson.dumps(line).decode(), flush=True)
            elif args.watch:
                print(format_table(group, sample, rows) + "\n", flush=True)
        if last is not None and not args.json and not args.watch:
            print(format_table(group, *last))
    except GroupAuthorizationFailedError:
        return _fail(
            f"cannot read the lag of group {group}: the broker's ACLs do not let "
            f"{who(kafka_security(settings))} describe it (run `lag` with the workers' credentials)"
        )
    except (KafkaError, OSError) as exc:
        return _fail(f"cannot read the lag of group {group} from the broker at {settings.broker}: {exc}")
    finally:
        await probe.close()
    return 0


async def _lag_summary(settings: Settings) -> str:
    probe = LagProbe(
        broker_hosts(settings.broker),
        settings.app_id,
        INTENTS_TOPIC,
        request_timeout=5.0,
        security=kafka_security(settings),
    )
    try:
        last = None
        async for item in watch(probe, 0.5, 3, 3):
            last = item
        assert last is not None
        sample, rows = last
        total = sum(row["lag"] for row in rows)
        oldest = max((row["lag_seconds"] or 0.0 for row in rows), default=0.0)
        members = "unknown" if sample.members is None else str(sample.members)
        return (
            f"workers: group {settings.app_id}, {members} members (state {sample.group_state}); "
            f"lag {total:,} intents on {len(rows)} partitions, oldest waiting {oldest:.1f}s, status {overall(rows)}"
        )
    except (KafkaError, OSError, TimeoutError) as exc:
        return f"workers: cannot reach the broker at {settings.broker} ({type(exc).__name__})"
    finally:
        await probe.close()


def mandates_line(mandates: Sequence[Mandate], today: date) -> str:
    """How many mandates are held, for how many clients, and how many end within 30 days."""
    if not mandates:
        return "mandates: none loaded (marketing and survey intents are denied operator_not_mandated)"
    in_force = [m for m in mandates if m.valid_from <= today <= m.valid_until]
    ending = [m for m in in_force if (m.valid_until - today).days < 30]
    clients = len({m.client_id for m in mandates})
    return (
        f"mandates: {len(mandates):,} for {clients:,} clients, {len(in_force):,} in force today, "
        f"{len(ending):,} of them end within 30 days"
    )


def abandoned_rate(counts: dict[str, int]) -> float | None:
    """(silent + abandoned) / answered: the campaign silent-call rate the
    policy enforces (:func:`callguard.core.policy.check_campaign_silent_rate`).
    None before any answered call."""
    lost = counts.get("silent", 0) + counts.get("abandoned", 0)
    answered = counts.get("answered", 0)
    return lost / answered if answered else None


def abandoned_lines(outcomes: dict[str, dict[str, int]], policy: PolicySettings) -> list[str]:
    """One line per campaign: its outcomes over the policy's window, its rate,
    and whether the policy stops it (``campaign_silent_rate``)."""
    days = policy.silent_rate_window_days
    if not outcomes:
        return [f"outcomes: none reported in the last {days} days"]
    enforced = policy.scopes["campaign_silent_rate"].enabled
    lines = []
    for campaign, counts in sorted(outcomes.items()):
        rate = abandoned_rate(counts)
        over = check_campaign_silent_rate(counts, policy).outcome == "deny"
        shown = ", ".join(f"{name} {counts[name]:,}" for name in sorted(counts))
        verdict = (
            "no answered calls yet"
            if rate is None
            else f"abandoned rate {rate:.1%} (limit {policy.abandoned_rate_limit:.0%})"
        )
        if over:
            verdict += " OVER THE LIMIT" + (
                ": STOPPED, its intents are denied campaign_silent_rate" if enforced else ""
            )
        name = "(no campaign_id)" if campaign == NO_CAMPAIGN else campaign
        lines.append(f"campaign {name}, last {days} days: {shown}; {verdict}")
    return lines


def named_register_lines(named: dict[str, dict[str, str]], policy: PolicySettings, now: datetime) -> list[str]:
    """One line per named register the policy reads (the US pack's do-not-call
    lists): what its lists cover, their as-of days and ages (in the deciding
    pack's days); a register nobody loaded says so."""
    expected: dict[str, int] = {}
    tz = policy.timezone
    for pack in policy.packs():
        for rule in pack.us.registers:
            expected[rule.name] = rule.stale_after_days
            tz = pack.timezone
    today = now.astimezone(tz).date()
    lines: list[str] = []
    for name in sorted(expected.keys() | named.keys()):
        cover = {unit: value for unit, value in named.get(name, {}).items() if not unit.startswith("#")}
        if not cover:
            lines.append(f"register {name}: nothing loaded: its callees are denied not_checked")
            continue
        days = sorted(date.fromisoformat(value.split("|")[1]) for value in cover.values())
        units = "every number" if set(cover) == {"*"} else f"{len(cover):,} area code(s)"
        oldest = (today - days[0]).days
        limit = expected.get(name)
        stale = (
            f"; older than {limit} days: its callees there are denied register_stale"
            if limit and oldest > limit
            else ""
        )
        lines.append(
            f"register {name}: lists of {units}, as of {days[-1]} to {days[0]} ({oldest} days old at most){stale}"
        )
    return lines


async def run_status(settings: Settings, lag: bool = True) -> int:
    """Print what the guard holds and whether it could decide well right now."""
    _quiet_kafka()
    try:
        policy = policy_for(settings)
    except PolicyError as exc:
        return _fail(f"cannot use the policy: {exc}")
    now = datetime.now(UTC)
    today = now.astimezone(ROME).date()
    stores = open_stores(settings.redis_url, timeout=max(settings.redis_timeout, 5.0))
    try:
        data = await read_data(stores)
        outcomes = await stores.outcome_counts(policy.silent_rate_window_days, today)
        directory = await stores.directory_state()
        mandates = await stores.mandates()
        named = await stores.named_registers(
            dict.fromkeys(rule.name for pack in policy.packs() for rule in pack.us.registers)
        )
    except (RedisError, OSError) as exc:
        return _fail(f"cannot reach Redis at {safe_url(settings.redis_url)}: {exc}")
    finally:
        await stores.close()
    max_age = policy.register_max_age_days
    if policy.jurisdictions is not None:
        print(f"policy: {policy.label()}")
    print(f"policy: {policy.version}, register results usable for {max_age} days")
    for pack in policy.packs():
        enabled = [name for name, scope in pack.scopes.items() if scope.enabled]
        disabled = [name for name, scope in pack.scopes.items() if not scope.enabled]
        label = "rules" if len(policy.packs()) == 1 else f"rules of {pack.version}"
        print(f"{label}: {', '.join(enabled)}" + (f" (switched off: {', '.join(disabled)})" if disabled else ""))
    print(f"operators: {data.operators:,} (version {data.operators_version or 'none loaded'})")
    print(mandates_line(mandates, today))
    if not data.scopes:
        print("register: no results loaded: every marketing or survey intent is denied not_checked")
    for scope in data.scopes:
        who = "every client" if scope.scope == "*" else f"client {scope.scope}"
        oldest_days, newest_days = (today - scope.oldest).days, (today - scope.newest).days
        stale = " (older than the maximum: those numbers are denied register_stale)"
        print(
            f"register for {who}: {scope.numbers:,} numbers{' (estimated from loads)' if scope.estimated else ''}, "
            f"newest as of {scope.newest} ({newest_days} days old), oldest still in use as of {scope.oldest} "
            f"({oldest_days} days old){stale if oldest_days > max_age else ''}"
        )
    for line in named_register_lines(named, policy, now):
        print(line)
    for entry in data.loads:
        age = (today - datetime.fromisoformat(entry["as_of"]).date()).days
        print(
            f"register load: as of {entry['as_of']} ({age} days old), client {entry['client_id']}, "
            f"{entry['rows']:,} results, {entry['opposed']:,} opposed, file {entry['file']}"
        )
    c = data.counters
    print(
        f"consents: {c['consents']:,}, contracts: {c['contracts']:,}, call requests: {c['requests']:,}, "
        f"opt-outs: {c['optouts']:,}"
    )
    if directory is None:
        print("directory: no public-directory extract loaded: numbers without a consent are denied consent_required")
    else:
        as_of, rows = directory
        age = (today - as_of).days
        old = " (too old: it counts as none)" if age >= policy.directory_max_age_days else ""
        print(f"directory: extract as of {as_of} ({age} days old{old}), {rows:,} numbers listed")
    for line in abandoned_lines(outcomes, policy):
        print(line)
    _, problems = data_checks(data, max_age, now)
    if lag:
        print(await _lag_summary(settings))
    print("data: ok" if not problems else "data: NOT OK: " + "; ".join(problems))
    return 0


def main_lag(args: argparse.Namespace, settings: Settings) -> int:
    return asyncio.run(run_lag(args, settings))
