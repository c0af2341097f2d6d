"""``callguard`` command line: the worker, the data loaders, status and the demo.

Exit codes: 0 success, 1 the work failed (bad lines, Redis unreachable),
2 bad usage or configuration. Errors are one line each, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from redis.exceptions import RedisError

from callguard import __version__
from callguard.config import ENV_VARS, ConfigError, Settings, load_settings, safe_url
from callguard.core.audit import Stored
from callguard.core.facts import BASES
from callguard.core.rows import parse_date
from callguard.core.schema import ALL_CLIENTS, MAX_ID_LENGTH
from callguard.storage.factory import open_stores
from callguard.storage.loaders import (
    LoadError,
    Progress,
    parse_consents,
    parse_directory,
    parse_mandates,
    parse_named_register,
    parse_operators,
    parse_optouts,
    parse_reassigned,
    parse_register,
)
from callguard.storage.register import DIRECTORY_SCOPE, NAMED_PREFIX, RegisterError, RegisterRows, cpu_count
from callguard.storage.stores import COUNTERS

#: The bases the consents loader always reports (the US pack's appear when loaded).
PLAIN_BASES = ("consent", "contract", "request")

ROME = ZoneInfo("Europe/Rome")


def _config_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("configuration (each also read from its environment variable)")
    group.add_argument("--broker", help=f"Kafka bootstrap, kafka://HOST:PORT [{ENV_VARS['broker']}]")
    group.add_argument("--redis-url", help=f"Redis URL [{ENV_VARS['redis_url']}]")
    group.add_argument("--web-port", help=f"worker web port for /health [{ENV_VARS['web_port']}]")
    group.add_argument(
        "--register-max-age-days", help=f"days a register result stays valid [{ENV_VARS['register_max_age_days']}]"
    )
    group.add_argument(
        "--default-region", help=f"region of numbers without country code [{ENV_VARS['default_region']}]"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="callguard", description="Real-time guard for outbound calls.")
    parser.add_argument("--version", action="version", version=f"callguard {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    worker = commands.add_parser("worker", help="run the Faust worker that decides intents")
    _config_flags(worker)

    demo = commands.add_parser("demo", help="run callguard on an embedded broker and Redis with sample data")
    demo.add_argument("--intents", type=int, default=2000, help="how many sample intents to publish (default 2000)")
    demo.add_argument("--show", type=int, default=25, help="how many decisions to print as they arrive (default 25)")
    demo.add_argument(
        "--report",
        type=Path,
        help="where the demo writes its regulator's report (default: callguard-demo-report.html in the temp directory)",
    )

    status = commands.add_parser("status", help="what data the guard holds: operators, register loads")
    _config_flags(status)

    # operations: callguard lag
    from callguard.cli.ops import add_parsers as add_ops_parsers

    add_ops_parsers(commands, _config_flags)
    # Italian calling rules: callguard policy check|show, callguard explain
    from callguard.cli.policy import add_parsers as add_policy_parsers

    add_policy_parsers(commands, _config_flags)
    from callguard.cli.replay import add_parsers as add_replay_parsers

    add_replay_parsers(commands, _config_flags)
    from callguard.cli.tokens import add_parsers as add_token_parsers

    add_token_parsers(commands, _config_flags)
    # the SIP edge: callguard sip call|callee
    from callguard.cli.sip import add_parsers as add_sip_parsers

    add_sip_parsers(commands)

    audit = commands.add_parser("audit", help="the tamper-evident audit trail")
    audit_actions = audit.add_subparsers(dest="action", metavar="ACTION", required=True)
    verify = audit_actions.add_parser(
        "verify", help="check the hash chain of every callguard.audit partition and the worker's checkpoints"
    )
    verify.add_argument("--no-checkpoints", action="store_true", help="do not read the head checkpoints from Redis")
    verify.add_argument("--file", type=Path, help="verify an export of `callguard audit export` instead of the topic")
    _config_flags(verify)
    export = audit_actions.add_parser(
        "export", help="write every audit record, byte for byte, to a JSON-lines file that `verify --file` checks"
    )
    export.add_argument("file", type=Path, help="the file to write (one JSON object per record)")
    _config_flags(export)
    # durable audit store: callguard audit sink / search
    from callguard.cli.audit import add_parsers as add_audit_store_parsers

    add_audit_store_parsers(audit_actions, _config_flags)

    for kind, text in (
        ("register", "opposition-register check results"),
        ("directory", "the public-directory extract: numbers in the public telephone directories (replaced whole)"),
        ("operators", "the certification list of call-centre operators (replaced whole)"),
        ("mandates", "which call centres may call for which client, and when (replaced whole)"),
        ("consents", "consents and contracts (upsert)"),
        ("optouts", "internal do-not-call entries (added)"),
        ("reassigned", "when numbers were permanently disconnected (47 CFR 64.1200(m); the latest day is kept)"),
    ):
        group = commands.add_parser(kind, help=f"load {text}")
        sub = group.add_subparsers(dest="action", metavar="ACTION", required=True)
        load = sub.add_parser("load", help=f"load {text} from a CSV file")
        load.add_argument("file", type=Path, help="CSV file with a header line")
        if kind == "register":
            load.add_argument("--as-of", required=True, help="day of the consultation, YYYY-MM-DD")
            load.add_argument(
                "--client",
                default=ALL_CLIENTS,
                help="the client that consulted the register (default '*': a result for every client, which may "
                "only deny: an opposed '*' result counts for every client, a clear one for none). Per client, the "
                "most recent of its own results and the opposed '*' results decides; on the same day opposed wins",
            )
            load.add_argument(
                "--register",
                metavar="NAME",
                help="load a register of its own name instead of the Italian RPO result, e.g. us-dnc (the US "
                "National Do Not Call Registry) or us-fl-dnc: the numbers on it, a CSV with the header 'number' "
                "or the FTC's flat file ('AAA,NNNNNNN' lines). It replaces the register's list for the area codes "
                "the file covers",
            )
            load.add_argument(
                "--cover",
                choices=("area-codes", "all"),
                default="area-codes",
                help="with --register: what the file is the whole list of: the area codes its numbers have "
                "(default; other area codes keep their earlier list, or none: not_checked), or every number (all: "
                "a state's list of its residents, whatever their area codes)",
            )
        if kind == "directory":
            load.add_argument("--as-of", required=True, help="day of the extract, YYYY-MM-DD")
        _config_flags(load)
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {
        name: getattr(args, name, None)
        for name in ("broker", "redis_url", "web_port", "register_max_age_days", "default_region", "audit_dsn")
    }
    return load_settings(overrides)


def _fail(message: str, code: int = 1) -> int:
    print(f"callguard: {message}", file=sys.stderr)
    return code


async def _load(args: argparse.Namespace, settings: Settings) -> int:
    tz = ROME  # the policy's day boundaries (policies/it.toml: timezone)
    now = datetime.now(UTC)
    kind = args.command
    if kind in ("register", "directory"):
        as_of = parse_date(args.as_of)
        if as_of > now.astimezone(tz).date():
            raise ConfigError(f"--as-of {as_of} is in the future")
    if kind == "register" and args.register is not None:
        from callguard.core.policyfile import REGISTER_NAME

        if not REGISTER_NAME.fullmatch(args.register):
            raise ConfigError("--register: a name of lower-case letters, digits and '-', like us-dnc (at most 40)")
        if args.client != ALL_CLIENTS:
            raise ConfigError(
                "--register and --client do not go together: a named register is one list for every client"
            )
        parsed = parse_named_register(args.file)
    elif kind == "register":
        if args.cover != "area-codes":
            raise ConfigError("--cover goes with --register")
        bad = args.client == DIRECTORY_SCOPE or args.client.startswith(NAMED_PREFIX)
        if not 1 <= len(args.client) <= MAX_ID_LENGTH or "|" in args.client or bad:
            raise ConfigError(
                f"--client must be 1-{MAX_ID_LENGTH} characters without '|', not {DIRECTORY_SCOPE} "
                f"and not starting with {NAMED_PREFIX}"
            )
        parsed = parse_register(args.file, settings.default_region)
    elif kind == "directory":
        parsed = parse_directory(args.file, settings.default_region)
    elif kind == "operators":
        parsed = parse_operators(args.file, settings.default_region)
    elif kind == "mandates":
        parsed = parse_mandates(args.file)
    elif kind == "consents":
        parsed = parse_consents(args.file, settings.default_region, tz)
    elif kind == "reassigned":
        parsed = parse_reassigned(args.file)
    else:
        parsed = parse_optouts(args.file, settings.default_region, tz)

    stores = open_stores(settings.redis_url, timeout=max(settings.redis_timeout, 10.0))
    try:
        if kind == "register" and args.register is not None:
            rows = parsed.rows
            assert isinstance(rows, RegisterRows)
            named = await stores.load_named_register(
                rows,
                args.register,
                as_of,
                everything=args.cover == "all",
                entry={
                    "as_of": as_of.isoformat(),
                    "register": args.register,
                    "cover": args.cover,
                    "rows": len(rows),
                    "file": args.file.name,
                    "sha256": parsed.sha256,
                    "loaded_at": now.isoformat(),
                },
                progress=Progress("register: written").tick,
                workers=min(cpu_count(), 8) if len(rows) > 500_000 else 1,
                waiting=lambda: print("register: another register load is running; waiting for it", file=sys.stderr),
                grace=2 * settings.redis_timeout + 1,
            )
            where = "every number" if args.cover == "all" else f"{len(named.covered):,} area code(s)"
            print(
                f"register {args.register}: loaded {len(rows):,} numbers as of {as_of}; "
                f"the list of {where} was replaced"
            )
        elif kind == "register":
            rows = parsed.rows
            assert isinstance(rows, RegisterRows)
            entry: dict[str, Any] = {
                "as_of": as_of.isoformat(),
                "client_id": args.client,
                "rows": len(rows),
                "opposed": rows.opposed,
                "applied": None,  # filled in by the load's commit
                "file": args.file.name,
                "sha256": parsed.sha256,
                "loaded_at": now.isoformat(),
            }
            # one process merges about 400 000 numbers a second: more for large loads
            workers = min(cpu_count(), 8) if len(rows) > 500_000 else 1
            loaded = await stores.load_register(
                rows,
                as_of,
                args.client,
                entry=entry,
                progress=Progress("register: written").tick,
                workers=workers,
                waiting=lambda: print("register: another register load is running; waiting for it", file=sys.stderr),
                grace=2 * settings.redis_timeout + 1,  # Redis Cluster: the workers' lookups in flight
            )
            written = loaded.applied
            scope = "every client" if args.client == ALL_CLIENTS else f"client {args.client}"
            print(
                f"register: loaded {len(rows):,} results as of {as_of} for {scope} "
                f"({rows.opposed:,} opposed; {written:,} newer than what was stored)"
            )
        elif kind == "directory":
            rows = parsed.rows
            assert isinstance(rows, RegisterRows)
            listing = {
                "as_of": as_of.isoformat(),
                "rows": len(rows),
                "file": args.file.name,
                "sha256": parsed.sha256,
                "loaded_at": now.isoformat(),
            }
            await stores.load_directory(
                rows,
                as_of,
                entry=listing,
                progress=Progress("directory: written").tick,
                workers=min(cpu_count(), 8) if len(rows) > 500_000 else 1,
                waiting=lambda: print("directory: another register load is running; waiting for it", file=sys.stderr),
                grace=2 * settings.redis_timeout + 1,
            )
            print(f"directory: replaced the public-directory extract with {len(rows):,} numbers as of {as_of}")
        elif kind == "operators":
            version = f"{now:%Y%m%dT%H%M%SZ}-{parsed.sha256[:12]}"
            assert isinstance(parsed.rows, list)
            await stores.replace_operators(parsed.rows, version)
            print(f"operators: replaced the certification list with {len(parsed.rows):,} operators (version {version})")
        elif kind == "mandates":
            version = f"{now:%Y%m%dT%H%M%SZ}-{parsed.sha256[:12]}"
            assert isinstance(parsed.rows, list)
            await stores.replace_mandates(parsed.rows, version)
            clients = len({m.client_id for m in parsed.rows})
            print(
                f"mandates: replaced the list with {len(parsed.rows):,} mandates of {clients:,} clients (version {version})"
            )
        elif kind == "consents":
            assert isinstance(parsed.rows, list)
            await stores.upsert_consents(parsed.rows)
            kinds = Counter(consent.basis for _, consent in parsed.rows)
            shown = ", ".join(
                f"{kinds[basis]:,} {COUNTERS[basis]}" for basis in BASES if kinds[basis] or basis in PLAIN_BASES
            )
            print(f"consents: upserted {len(parsed.rows):,} rows ({shown})")
        elif kind == "reassigned":
            assert isinstance(parsed.rows, list)
            added = await stores.add_disconnections(parsed.rows)
            print(
                f"reassigned: recorded {len(parsed.rows):,} permanent disconnections "
                f"({len(parsed.rows) - added:,} older than what was stored)"
            )
        else:
            assert isinstance(parsed.rows, list)
            added = await stores.add_optouts(parsed.rows)
            print(f"optouts: added {added:,} opt-outs ({len(parsed.rows) - added:,} older than what was stored)")
    except (RedisError, OSError) as exc:
        return _fail(f"cannot write to Redis at {safe_url(settings.redis_url)}: {exc}")
    except RegisterError as exc:
        return _fail(f"{kind}: {exc}; nothing was loaded")
    finally:
        await stores.close()
        if isinstance(parsed.rows, RegisterRows):
            parsed.rows.cleanup()
    return 0


async def _status(settings: Settings) -> int:
    from callguard.cli.ops import run_status

    return await run_status(settings)


async def _read_audit_topic(settings: Settings) -> tuple[list[int], list[Stored]]:
    """Every record of every audit partition, as stored (raises KafkaError, TimeoutError)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from callguard.config import broker_hosts, kafka_security
    from callguard.core.schema import AUDIT_TOPIC
    from callguard.kafka.access import refuse_hidden_topic
    from callguard.kafka.auditlog import read_partition

    consumer = AIOKafkaConsumer(
        bootstrap_servers=broker_hosts(settings.broker),
        enable_auto_commit=False,
        isolation_level="read_committed",  # records of aborted transactions are no part of the chain
        **kafka_security(settings),
    )
    records: list[Stored] = []
    try:
        await consumer.start()
        # a consumer's first metadata request names no topic; Apache Kafka then
        # answers with none (Tansu with all), so ask for every topic's
        await consumer._client.force_metadata_update()
        partitions = sorted(consumer.partitions_for_topic(AUDIT_TOPIC) or ())
        if not partitions:
            await refuse_hidden_topic(consumer._client, AUDIT_TOPIC, kafka_security(settings))
        for partition in partitions:
            records += [r async for r in read_partition(consumer, TopicPartition(AUDIT_TOPIC, partition))]
    finally:
        await consumer.stop()
    return partitions, records


def _read_audit_file(path: Path) -> tuple[list[int], list[Stored]]:
    records = []
    with path.open("rb") as handle:
        for number, line in enumerate(handle, 1):
            try:
                entry = orjson.loads(line)
                records.append(Stored(int(entry["partition"]), int(entry["offset"]), entry["value"].encode()))
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
                raise ConfigError(f"{path}:{number}: not a line of `callguard audit export`") from None
    records.sort(key=lambda r: (r.partition, r.offset))
    return sorted({r.partition for r in records}), records


async def _audit_export(settings: Settings, path: Path) -> int:
    from aiokafka.errors import KafkaError

    from callguard.core.schema import AUDIT_TOPIC

    try:
        partitions, records = await _read_audit_topic(settings)
    except (KafkaError, TimeoutError) as exc:
        return _fail(f"cannot read {AUDIT_TOPIC} from {settings.broker}: {exc}")
    with path.open("wb") as handle:
        for record in records:
            entry = {"partition": record.partition, "offset": record.offset, "value": record.value.decode()}
            handle.write(orjson.dumps(entry) + b"\n")
    print(f"{AUDIT_TOPIC}: exported {len(records):,} records of {len(partitions)} partitions to {path}")
    return 0


async def _audit_verify(settings: Settings, checkpoints: bool, file: Path | None = None) -> int:
    """Read every audit record back (from the topic or an export) and check each partition's chain."""
    from aiokafka.errors import KafkaError

    from callguard.core.audit import verify
    from callguard.core.schema import AUDIT_TOPIC

    heads: dict[int, tuple[int, str]] = {}
    if checkpoints:
        stores = open_stores(settings.redis_url, timeout=max(settings.redis_timeout, 5.0))
        try:
            heads = await stores.audit_heads()
        except (RedisError, OSError) as exc:
            print(f"callguard: no checkpoints (Redis at {safe_url(settings.redis_url)}: {exc})", file=sys.stderr)
        finally:
            await stores.close()
    if file is not None:
        partitions, records = _read_audit_file(file)
    else:
        try:
            partitions, records = await _read_audit_topic(settings)
        except (KafkaError, TimeoutError) as exc:
            return _fail(f"cannot read {AUDIT_TOPIC} from {settings.broker}: {exc}")
    if not partitions:
        return _fail(f"no audit records in {file or AUDIT_TOPIC}")
    report = verify(records, heads)
    for partition in partitions:
        count = report.records.get(partition, 0)
        start = report.first_offset.get(partition, 0)
        checkpoint = f", checkpoint at offset {heads[partition][0]}" if partition in heads else ""
        print(f"partition {partition}: {count:,} records from offset {start}{checkpoint}")
    for problem in report.problems:
        print(f"PROBLEM {problem}")
    verdict = "intact" if report.ok else f"{len(report.problems)} problem(s)"
    print(f"{file or AUDIT_TOPIC}: {sum(report.records.values()):,} records checked, {verdict}")
    return 0 if report.ok else 1


def _use_uvloop() -> None:
    """uvloop makes the worker faster (``./dev bench throughput``); it must be
    chosen before Faust is imported. Optional: the standard loop is used
    where uvloop is not installed."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return
    import mode.loop

    mode.loop.use("uvloop")


def _talks_to_kafka(args: argparse.Namespace) -> bool:
    if args.command in ("worker", "lag"):
        return True
    if args.command == "audit":
        return args.action != "verify" or args.file is None
    return False


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "demo":
            from callguard.dev.demo import run_demo

            return run_demo(intents=args.intents, show=args.show, report=args.report)
        if args.command == "sip":  # no broker or Redis: a SIP user agent
            from callguard.cli.sip import main_sip

            return main_sip(args)
        settings = _settings(args)
        if _talks_to_kafka(args):  # a refused TLS or SASL login: one line, at once (kafkaaccess.py)
            from callguard.kafka.access import check_kafka_access

            asyncio.run(check_kafka_access(settings))
        if args.command == "worker":
            _use_uvloop()
            from callguard.kafka.topics import BrokerUnavailable
            from callguard.worker.app import run_worker

            try:
                return run_worker(settings)
            except BrokerUnavailable as exc:
                return _fail(str(exc))
        if args.command == "status":
            return asyncio.run(_status(settings))
        if args.command == "audit" and args.action in ("sink", "search"):
            from callguard.cli.audit import main_audit_store

            return main_audit_store(args, settings)
        if args.command == "audit" and args.action == "report":
            from callguard.cli.report import main_report

            return main_report(args, settings)
        if args.command == "audit":
            if args.action == "export":
                return asyncio.run(_audit_export(settings, args.file))
            return asyncio.run(_audit_verify(settings, checkpoints=not args.no_checkpoints, file=args.file))
        if args.command == "policy":
            from callguard.cli.policy import main_policy

            return main_policy(args, settings)
        if args.command == "explain":
            from callguard.cli.policy import main_explain

            return main_explain(args, settings)
        if args.command == "replay":
            from callguard.cli.replay import main_replay

            return main_replay(args, settings)
        if args.command == "tokens":
            from callguard.cli.tokens import main_tokens

            return main_tokens(args, settings)
        if args.command == "lag":
            from callguard.cli.ops import main_lag

            return main_lag(args, settings)
        return asyncio.run(_load(args, settings))
    except ConfigError as exc:
        return _fail(str(exc), 2)
    except LoadError as exc:
        print(exc.report(), file=sys.stderr)
        return 1
    except ValueError as exc:  # e.g. a bad --as-of date
        return _fail(str(exc), 2)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
