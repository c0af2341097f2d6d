"""``callguard tokens issue|list|revoke``: who may call ``POST /v1/check``."""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from redis.exceptions import RedisError

from callguard.config import ConfigError, Settings, safe_url
from callguard.core.schema import ALL_CLIENTS, MAX_ID_LENGTH
from callguard.core.tokens import TokenGrant, new_token, token_hash
from callguard.storage.factory import open_stores


def add_parsers(commands: Any, config_flags: Callable[[argparse.ArgumentParser], None]) -> None:
    tokens = commands.add_parser("tokens", help="bearer tokens for POST /v1/check (issue, list, revoke)")
    actions = tokens.add_subparsers(dest="action", metavar="ACTION", required=True)
    issue = actions.add_parser("issue", help="print a new token once (only its hash is stored)")
    issue.add_argument("--operator-id", required=True, help="the call centre whose intents the token may check")
    issue.add_argument(
        "--client-id", action="append", default=[], help="a client the token may check for (repeat; none: any)"
    )
    issue.add_argument("--name", help="a name to list and revoke it by (default: the operator and 6 random letters)")
    config_flags(issue)
    listing = actions.add_parser("list", help="names, operators, clients, issued and last used (never a token)")
    config_flags(listing)
    revoke = actions.add_parser("revoke", help="revoke a token by its name: refused at the next request")
    revoke.add_argument("name")
    config_flags(revoke)


def main_tokens(args: argparse.Namespace, settings: Settings) -> int:
    return asyncio.run(_tokens(args, settings))


def _valid_id(value: str, what: str) -> str:
    if not 1 <= len(value) <= MAX_ID_LENGTH or value == ALL_CLIENTS:
        raise ConfigError(f"{what}: expected 1-{MAX_ID_LENGTH} characters, not '*'")
    return value


async def _tokens(args: argparse.Namespace, settings: Settings) -> int:
    stores = open_stores(settings.redis_url, timeout=max(settings.redis_timeout, 5.0))
    try:
        if args.action == "issue":
            operator = _valid_id(args.operator_id, "--operator-id")
            clients = tuple(dict.fromkeys(_valid_id(c, "--client-id") for c in args.client_id))
            name = _valid_id(args.name or f"{operator}-{secrets.token_hex(3)}", "--name")
            token = new_token()
            grant = TokenGrant(name, operator, clients, datetime.now(UTC).isoformat(timespec="seconds"))
            if not await stores.issue_token(grant, token_hash(token)):
                print(f"callguard: a token named {name!r} exists already (revoke it first)", file=sys.stderr)
                return 1
            scope = ", ".join(clients) if clients else "any client"
            print(f"token {name}: operator {operator}, {scope}", file=sys.stderr)
            print("shown once; send it as 'Authorization: Bearer TOKEN':", file=sys.stderr)
            print(token)
            return 0
        if args.action == "list":
            rows = await stores.tokens()
            if not rows:
                print("no tokens issued: POST /v1/check refuses every request (401)")
            for grant, used in rows:
                shown = ",".join(grant.clients) or "any client"
                print(
                    f"{grant.name}\toperator {grant.operator_id}\tclients {shown}\t"
                    f"issued {grant.issued_at}\tlast used {used or 'never'}"
                )
            return 0
        if not await stores.revoke_token(args.name):
            print(f"callguard: no token named {args.name!r}", file=sys.stderr)
            return 1
        print(f"token {args.name} revoked")
        return 0
    except (RedisError, OSError) as exc:
        print(f"callguard: cannot reach Redis at {safe_url(settings.redis_url)}: {exc}", file=sys.stderr)
        return 1
    finally:
        await stores.close()
