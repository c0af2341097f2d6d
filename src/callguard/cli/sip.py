"""``callguard sip call|callee``: try the SIP edge (``deploy/sip/``) as a dialer and as a carrier would."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from callguard.client.sip import SipMessage, UserAgent, parse_address
from callguard.core.numbers import mask

#: The headers a dialer sets for the proxy, by flag.
DIALER_HEADERS = (
    ("client", "X-Callguard-Client"),
    ("campaign", "X-Callguard-Campaign"),
    ("purpose", "X-Callguard-Purpose"),
    ("intent_id", "X-Callguard-Intent"),
)


def add_parsers(commands: Any) -> None:
    sip = commands.add_parser("sip", help="try the SIP edge: place a call through the proxy, or stand in for a carrier")
    actions = sip.add_subparsers(dest="action", metavar="ACTION", required=True)
    call = actions.add_parser("call", help="send one INVITE through the proxy and print its answer")
    call.add_argument("callee", help="the number to call, as the Request-URI's user part (e.g. +393471234567)")
    call.add_argument("--proxy", default="127.0.0.1:5060", help="the proxy, HOST:PORT (default 127.0.0.1:5060)")
    call.add_argument("--bind", default="127.0.0.1:0", help="the address to send from, HOST:PORT (default any port)")
    call.add_argument("--caller-id", default="+390844000001", help="the number shown (P-Asserted-Identity and From)")
    call.add_argument("--client", help="X-Callguard-Client: the client the call is made for")
    call.add_argument("--campaign", help="X-Callguard-Campaign")
    call.add_argument(
        "--purpose", choices=("marketing", "survey", "statistical", "service"), help="X-Callguard-Purpose"
    )
    call.add_argument("--intent-id", help="X-Callguard-Intent: the intent_id to use (default: callguard makes one)")
    call.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for a final answer (default 10)")
    callee = actions.add_parser("callee", help="a stand-in carrier: answer every INVITE and print what reached it")
    callee.add_argument("--listen", default="127.0.0.1:5080", help="HOST:PORT to listen on (default 127.0.0.1:5080)")
    callee.add_argument("--answer", type=int, default=200, help="the status every INVITE gets (default 200)")


def main_sip(args: argparse.Namespace) -> int:
    try:
        if args.action == "call":
            proxy, bind = parse_address(args.proxy), parse_address(args.bind, default_port=0, any_port=True)
            if args.timeout <= 0:
                raise ValueError("--timeout must be above 0")
            return asyncio.run(_call(args, proxy, bind))
        listen = parse_address(args.listen)
        if not 200 <= args.answer <= 699:
            raise ValueError("--answer must be a final SIP status, 200-699")
        return asyncio.run(_callee(listen, args.answer))
    except ValueError as exc:
        print(f"callguard: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"callguard: cannot use that address: {exc.strerror or exc}", file=sys.stderr)
        return 2


async def _call(args: argparse.Namespace, proxy: tuple[str, int], bind: tuple[str, int]) -> int:
    headers = [(name, str(getattr(args, flag))) for flag, name in DIALER_HEADERS if getattr(args, flag)]
    agent = await UserAgent.listen(*bind)
    try:
        result = await agent.call(proxy, args.callee, caller=args.caller_id, headers=headers, timeout=args.timeout)
    finally:
        agent.close()
    where = f"{proxy[0]}:{proxy[1]}"
    if result.final is None:
        print(f"INVITE {mask(args.callee)} via {where}: no final answer within {args.timeout:g} s")
        return 1
    print(
        f"INVITE {mask(args.callee)} via {where}: {result.status} {result.reason} ({result.setup_seconds * 1000:.0f} ms)"
    )
    for name, value in result.final.headers:
        if name.lower().startswith("x-callguard-") or name.lower() == "retry-after":
            print(f"  {name}: {value}")
    if result.answered:
        print("  the call was relayed and answered (then hung up)")
    return 0 if result.answered else 1


async def _callee(listen: tuple[str, int], answer: int) -> int:
    def show(invite: SipMessage) -> None:
        number = invite.uri.split(":", 1)[-1].split("@", 1)[0]
        intent = invite.header("X-Callguard-Intent") or "-"
        print(f"INVITE {mask(number)} X-Callguard-Intent: {intent} -> {answer}", flush=True)

    agent = await UserAgent.listen(*listen, answer=answer, on_invite=show)
    print(f"callee on udp:{listen[0]}:{listen[1]}, answering {answer} (Ctrl-C stops)", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        agent.close()
    return 0
