"""``callguard policy check|show`` and ``callguard explain``: the policy for people.

``policy check FILE`` is a pre-release gate for a compliance officer's edit
(every error, with its key, exit 1); ``policy show`` prints the policy a file
amounts to once merged with its base; ``explain`` decides one intent against
the live data without publishing or counting anything, and shows every rule
with its outcome and why.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from redis.exceptions import RedisError

from callguard.config import ENV_VARS, ConfigError, Settings, safe_url
from callguard.core.numbers import mask, normalise, normalise_caller_id
from callguard.core.policy import decide, silent_rate_days
from callguard.core.policyfile import PolicyError, describe, load_policy, policy_for
from callguard.core.schema import Intent, Purpose, parse_rfc3339
from callguard.core.sources import SOURCES
from callguard.storage.factory import open_stores
from callguard.storage.stores import LookupUnavailable, Query


def add_parsers(commands: Any, config_flags: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add ``policy`` and ``explain`` to the ``callguard`` subcommands."""
    policy = commands.add_parser("policy", help="check or show a policy file (rules and their parameters)")
    actions = policy.add_subparsers(dest="action", metavar="ACTION", required=True)
    actions.add_parser("sources", help="the legal sources the rules cite: act, article, where published, its words")
    check = actions.add_parser("check", help="validate a policy file; every error names its key (exit 1 if any)")
    check.add_argument("file", type=Path, help="the policy file (TOML)")
    diff = actions.add_parser(
        "diff", help="what changes from one policy file to another, rule by rule, in words (exit 0; 2 on a bad file)"
    )
    diff.add_argument("old", type=Path, help="the policy in force (TOML)")
    diff.add_argument("new", type=Path, help="the proposed policy (TOML)")
    show = actions.add_parser("show", help="print the policy a file amounts to, as JSON (default: the worker's)")
    show.add_argument("file", type=Path, nargs="?", help=f"the policy file [{ENV_VARS['policy']}, default: shipped it]")

    explain = commands.add_parser(
        "explain",
        help="decide one intent against the live data and show every rule's outcome (nothing is published or counted)",
    )
    explain.add_argument("--callee", required=True, help="the number to call")
    explain.add_argument("--operator-id", required=True)
    explain.add_argument("--client-id", required=True)
    explain.add_argument("--purpose", default="marketing", choices=[p.value for p in Purpose])
    explain.add_argument("--caller-id", help="the number shown to the callee")
    explain.add_argument("--campaign-id")
    explain.add_argument("--automated", action="store_true", help="placed by an automated system without an operator")
    explain.add_argument("--intent-id", default="explain", help="to check a frequency cap as a redelivery would")
    explain.add_argument("--at", help="decide as if at this RFC 3339 time (default: now)")
    explain.add_argument("--policy", type=Path, help=f"policy file [{ENV_VARS['policy']}, default: shipped it]")
    explain.add_argument(
        "--json", action="store_true", help="print the decision as its audit record (numbers in clear)"
    )
    config_flags(explain)


def main_policy(args: argparse.Namespace, settings: Settings) -> int:
    if args.action == "sources":
        for source in SOURCES.values():
            print(f"{source.key}: {source.citation()}{'' if source.verified else ' [primary text not read]'}")
            print(f"  \u00ab{source.quote}\u00bb")
            if source.reading:
                print(f"  callguard reads it: {source.reading}")
            print(f"  {source.url}")
        return 0
    if args.action == "diff":
        return _diff(args.old, args.new)
    if args.action == "check":
        try:
            policy = load_policy(args.file)
        except PolicyError as exc:
            for error in exc.errors:
                print(f"{exc.source}: {error}", file=sys.stderr)
            print(f"{exc.source}: {len(exc.errors)} error(s)", file=sys.stderr)
            return 1
        if policy.jurisdictions is not None:
            print(f"{args.file}: ok, {policy.label()}")
        for pack in policy.packs():
            on = [name for name, scope in pack.scopes.items() if scope.enabled]
            off = [name for name, scope in pack.scopes.items() if not scope.enabled]
            where = f"{args.file}: ok, version" if policy.jurisdictions is None else "  pack"
            print(f"{where} {pack.version}; rules on: {', '.join(on)}")
            if off:
                print(f"{'' if policy.jurisdictions is None else '  '}rules switched off: {', '.join(off)}")
        return 0
    try:
        policy = load_policy(args.file) if args.file else policy_for(settings)
    except PolicyError as exc:
        print(f"callguard: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(orjson.dumps(describe(policy), option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0


def _diff(old_path: Path, new_path: Path) -> int:
    from callguard.core.policydiff import diff_policies

    try:
        old, new = load_policy(old_path), load_policy(new_path)
    except PolicyError as exc:
        print(f"callguard: invalid policy file {exc}", file=sys.stderr)
        return 2
    changes = diff_policies(old, new)
    print(f"policy {old.label()} ({old_path}) -> {new.label()} ({new_path})")
    for change in changes:
        print(f"  {change}")
    if not changes:
        print(
            "no differences: the two files decide alike"
            + (" (only the version differs)" if old.label() != new.label() else "")
        )
    else:
        print(f"{len(changes)} change(s)")
    return 0


def main_explain(args: argparse.Namespace, settings: Settings) -> int:
    return asyncio.run(_explain(args, settings))


async def _explain(args: argparse.Namespace, settings: Settings) -> int:
    try:
        policy = load_policy(args.policy) if args.policy else policy_for(settings)
    except PolicyError as exc:
        print(f"callguard: {exc}", file=sys.stderr)
        return 1
    try:
        now = parse_rfc3339(args.at) if args.at else datetime.now(UTC)
    except ValueError:
        raise ConfigError(f"--at {args.at!r}: expected an RFC 3339 time like 2026-11-27T19:59:59+01:00") from None
    intent = Intent(
        args.intent_id,
        args.callee,
        args.operator_id,
        args.client_id,
        Purpose(args.purpose),
        args.caller_id,
        args.campaign_id,
        automated=args.automated,
    )
    callee = normalise(intent.callee, settings.default_region)
    stores = open_stores(settings.redis_url, timeout=max(settings.redis_timeout, 5.0))
    try:
        registers = policy.named_registers(callee, intent.purpose)
        query = Query(callee, intent.client_id, intent.operator_id, intent.campaign_id, registers)
        (facts,) = await stores.lookup([query], silent_rate_days(now, policy))
    except (LookupUnavailable, RedisError, OSError) as exc:
        print(f"callguard: cannot read Redis at {safe_url(settings.redis_url)}: {exc}", file=sys.stderr)
        return 1
    finally:
        await stores.close()
    decision = decide(
        intent, callee, facts, now, policy, normalise_caller_id(intent.caller_id, settings.default_region)
    )
    if args.json:
        record = decision.to_audit(intent, {"explain": True})
        sys.stdout.write(orjson.dumps(record, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    pack = policy.pack_for(callee, intent.purpose) or policy
    local = now.astimezone(pack.timezone)
    print(
        f"intent: callee {mask(callee or intent.callee)}, operator {intent.operator_id}, client {intent.client_id}, "
        f"purpose {intent.purpose.value}, caller ID {mask(intent.caller_id)}"
    )
    under = "" if policy.jurisdictions is None else f" (of {policy.label()})"
    print(
        f"policy {decision.versions['policy']}{under}, at {local:%A %Y-%m-%d %H:%M:%S %Z}{'' if args.at else ' (now)'}"
    )
    verdict = "ALLOW" if decision.allow else "DENY"
    print(f"decision: {verdict}" + (f" ({', '.join(decision.reasons)})" if decision.reasons else ""))
    if decision.requires_operator:
        print("  requires_operator: place this call with an operator ready (it follows a silent call)")
    for rule in decision.rules:
        reasons = f" [{', '.join(rule.reasons)}]" if rule.reasons else ""
        detail = {k: v for k, v in rule.detail.items() if k not in ("callee", "caller_id")}
        shown = orjson.dumps(detail).decode() if detail else ""
        print(f"  {rule.outcome:<15} {rule.rule:<20}{reasons} {shown}".rstrip())
    print("(nothing was published or counted: what the worker would decide at that time with the data stored now)")
    return 0
