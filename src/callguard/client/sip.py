"""A small SIP user agent over UDP, to try and test callguard at the SIP edge.

``callguard sip call`` sends one INVITE through a SIP proxy (the Kamailio of
``deploy/sip/``) as a dialer would and prints the answer; ``callguard sip
callee`` is a stand-in carrier that answers every INVITE and prints what
reached it. The tests and ``bench/sip.py`` use the same classes.

It speaks just enough RFC 3261 for that, over UDP: an INVITE (retransmitted
at 0.5, 1, 2, 4 s until something answers, timer A), the ACK of its final
answer (the hop-by-hop ACK of a refusal; a new transaction through the
Record-Route set for a 2xx), and a BYE to end an answered call. No media is
sent (the SDP offers a port nobody listens on). Numbers are masked in
everything it prints.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import cast

#: RFC 3261 compact header names, expanded when parsing.
COMPACT = {
    "v": "via",
    "i": "call-id",
    "f": "from",
    "t": "to",
    "m": "contact",
    "l": "content-length",
    "c": "content-type",
}

SDP = (
    "v=0\r\no=callguard 1 1 IN IP4 {host}\r\ns=-\r\nc=IN IP4 {host}\r\nt=0 0\r\n"
    "m=audio 9 RTP/AVP 0 8\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
)


class SipError(ValueError):
    """A datagram that is not a SIP message."""


@dataclass
class SipMessage:
    """A parsed SIP request or response; header names kept as sent."""

    start_line: str
    headers: list[tuple[str, str]]
    body: bytes = b""

    @property
    def is_response(self) -> bool:
        return self.start_line.startswith("SIP/2.0 ")

    @property
    def status(self) -> int:
        """The status code of a response (0 for a request)."""
        return int(self.start_line.split(" ", 2)[1]) if self.is_response else 0

    @property
    def reason(self) -> str:
        parts = self.start_line.split(" ", 2)
        return parts[2] if self.is_response and len(parts) > 2 else ""

    @property
    def method(self) -> str:
        """The method of a request, or of the request a response answers (its CSeq)."""
        if self.is_response:
            return (self.header("CSeq") or " ").split()[-1]
        return self.start_line.split(" ", 1)[0]

    @property
    def uri(self) -> str:
        return "" if self.is_response else self.start_line.split(" ")[1]

    def all(self, name: str) -> list[str]:
        wanted = name.lower()
        return [value for key, value in self.headers if COMPACT.get(key.lower(), key.lower()) == wanted]

    def header(self, name: str) -> str | None:
        values = self.all(name)
        return values[0] if values else None

    def encode(self) -> bytes:
        lines = [self.start_line, *(f"{k}: {v}" for k, v in self.headers if k.lower() not in ("content-length", "l"))]
        lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + self.body


def parse(data: bytes) -> SipMessage:
    """One SIP message from one UDP datagram."""
    head, separator, body = data.partition(b"\r\n\r\n")
    if not separator:
        raise SipError("no end of headers")
    try:
        lines = head.decode("utf-8").split("\r\n")
    except UnicodeDecodeError as exc:
        raise SipError("headers are not UTF-8") from exc
    start = lines[0]
    if not (start.startswith("SIP/2.0 ") or start.endswith(" SIP/2.0")):
        raise SipError(f"not a SIP start line: {start[:40]!r}")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and headers:  # folded
            name, value = headers[-1]
            headers[-1] = (name, value + " " + line.strip())
            continue
        name, colon, value = line.partition(":")
        if not colon:
            raise SipError(f"not a header line: {line[:40]!r}")
        headers.append((name.strip(), value.strip()))
    return SipMessage(start, headers, body)


def tag_of(value: str | None) -> str | None:
    """The ``tag`` parameter of a From or To header."""
    for param in (value or "").split(";")[1:]:
        key, _, tag = param.partition("=")
        if key.strip().lower() == "tag":
            return tag.strip()
    return None


def uri_in(value: str) -> str:
    """The URI of a name-addr (``"x" <sip:a@b>;p`` -> ``sip:a@b``) or of a bare addr-spec."""
    if "<" in value:
        return value[value.index("<") + 1 : value.index(">")]
    return value.split(";", 1)[0].strip()


def host_port(uri: str, default_port: int = 5060) -> tuple[str, int]:
    """The host and port of a SIP URI."""
    rest = uri.split(":", 1)[1] if uri.startswith("sip:") else uri
    rest = rest.split(";", 1)[0].split("?", 1)[0]
    rest = rest.rsplit("@", 1)[-1]
    host, _, port = rest.partition(":")
    return host, int(port) if port else default_port


def _branch() -> str:
    return "z9hG4bK" + secrets.token_hex(8)


@dataclass
class CallResult:
    """What an INVITE got back."""

    status: int  #: the final status, 0 when nothing final came within the timeout
    reason: str
    final: SipMessage | None
    provisional: list[int]
    setup_seconds: float  #: from the INVITE sent to its final answer
    call_id: str

    @property
    def answered(self) -> bool:
        return 200 <= self.status < 300

    def header(self, name: str) -> str | None:
        return None if self.final is None else self.final.header(name)


@dataclass
class _Pending:
    """One client transaction waiting for its answers."""

    answers: asyncio.Queue[SipMessage] = field(default_factory=asyncio.Queue)


class UserAgent(asyncio.DatagramProtocol):
    """A UDP SIP endpoint. As a caller (:meth:`call`) it places calls through a
    proxy; as a callee (``answer=...``) it answers every INVITE it receives
    with that status and records it in :attr:`invites`."""

    def __init__(
        self, answer: int | None = None, ring: bool = False, on_invite: Callable[[SipMessage], None] | None = None
    ) -> None:
        self.answer = answer
        self.ring = ring
        self.on_invite = on_invite
        self.invites: list[SipMessage] = []
        self.requests: list[SipMessage] = []
        self.transport: asyncio.DatagramTransport | None = None
        self.address: tuple[str, int] = ("127.0.0.1", 0)
        self._pending: dict[tuple[str, str], _Pending] = {}
        self._seen: set[tuple[str | None, str | None]] = set()
        self._arrived = asyncio.Event()

    # --- lifecycle -----------------------------------------------------------------------

    @classmethod
    async def listen(
        cls,
        host: str = "127.0.0.1",
        port: int = 0,
        answer: int | None = None,
        ring: bool = False,
        on_invite: Callable[[SipMessage], None] | None = None,
    ) -> UserAgent:
        """A user agent bound to ``host:port`` (0: any free port)."""
        agent = cls(answer, ring, on_invite)
        await asyncio.get_running_loop().create_datagram_endpoint(lambda: agent, local_addr=(host, port))
        return agent

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)
        self.address = transport.get_extra_info("sockname")[:2]

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def send(self, message: SipMessage, to: tuple[str, int]) -> None:
        assert self.transport is not None, "not listening"
        self.transport.sendto(message.encode(), to)

    # --- receiving --------------------------------------------------------------------------

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            message = parse(data)
        except SipError:
            return
        if message.is_response:
            pending = self._pending.get((message.header("Call-ID") or "", message.method))
            if pending is not None:
                pending.answers.put_nowait(message)
            return
        self.requests.append(message)
        if message.method == "INVITE":
            key = (message.header("Call-ID"), message.header("Via"))
            if key not in self._seen:  # a retransmission is answered again below, recorded once
                self._seen.add(key)
                self.invites.append(message)
                if self.on_invite is not None:
                    self.on_invite(message)
            self._arrived.set()
            if self.answer is not None:
                if self.ring:
                    self.send(self._response(message, 180, "Ringing"), addr)
                self.send(self._response(message, self.answer, _REASONS.get(self.answer, "Answer")), addr)
        elif message.method in ("BYE", "CANCEL", "OPTIONS"):
            self.send(self._response(message, 200, "OK"), addr)

    async def wait_invites(self, count: int, timeout: float) -> list[SipMessage]:
        """The INVITEs received, once ``count`` arrived or ``timeout`` passed."""
        deadline = time.monotonic() + timeout
        while len(self.invites) < count and time.monotonic() < deadline:
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), deadline - time.monotonic())
        return list(self.invites)

    def _response(self, request: SipMessage, status: int, reason: str) -> SipMessage:
        headers = [
            (k, v) for k, v in request.headers if k.lower() in ("via", "v", "record-route", "call-id", "i", "cseq")
        ]
        to = request.header("To") or ""
        if tag_of(to) is None and status > 100:
            to += ";tag=" + self._to_tag(request)
        headers += [("From", request.header("From") or ""), ("To", to)]
        body = b""
        if request.method == "INVITE" and 200 <= status < 300:
            host, port = self.address
            headers += [("Contact", f"<sip:callee@{host}:{port}>"), ("Content-Type", "application/sdp")]
            body = SDP.format(host=host).encode()
        return SipMessage(f"SIP/2.0 {status} {reason}", headers, body)

    @staticmethod
    def _to_tag(request: SipMessage) -> str:
        # the same tag for every answer (and retransmission) of one INVITE
        return "cg" + format(abs(hash((request.header("Call-ID"), request.header("From")))) % 10**12, "012d")

    # --- calling ----------------------------------------------------------------------------

    async def call(
        self,
        proxy: tuple[str, int],
        callee: str,
        *,
        caller: str = "+390844000001",
        headers: Iterable[tuple[str, str]] = (),
        asserted: bool = True,
        timeout: float = 10.0,
        hangup: bool = True,
        in_dialog: bool = False,
        cancel_after: float | None = None,
    ) -> CallResult:
        """Send one INVITE for ``callee`` to ``proxy`` and wait for its final
        answer; ACK it, and with ``hangup`` end an answered call with a BYE.
        ``in_dialog`` sends it with a To tag and a Route to the proxy, as if it
        belonged to a call already set up (it does not). ``cancel_after``: hang
        up (CANCEL) when no final answer came within that many seconds."""
        host, port = self.address
        call_id = secrets.token_hex(12) + "@" + host
        from_ = f"<sip:{caller}@{host}>;tag={secrets.token_hex(5)}"
        to = f"<sip:{callee}@{proxy[0]}>" + (f";tag={secrets.token_hex(5)}" if in_dialog else "")
        via = f"SIP/2.0/UDP {host}:{port};branch={_branch()};rport"
        invite_headers = [
            ("Via", via),
            ("Max-Forwards", "70"),
            ("From", from_),
            ("To", to),
            ("Call-ID", call_id),
            ("CSeq", "1 INVITE"),
            ("Contact", f"<sip:dialer@{host}:{port}>"),
        ]
        if in_dialog:
            invite_headers.append(("Route", f"<sip:{proxy[0]}:{proxy[1]};lr>"))
        if asserted:
            invite_headers.append(("P-Asserted-Identity", f"<sip:{caller}@{host}>"))
        invite_headers += [*headers, ("Content-Type", "application/sdp")]
        invite = SipMessage(
            f"INVITE sip:{callee}@{proxy[0]}:{proxy[1]} SIP/2.0", invite_headers, SDP.format(host=host).encode()
        )
        pending = self._pending[(call_id, "INVITE")] = _Pending()
        provisional: list[int] = []
        final: SipMessage | None = None
        started = time.perf_counter()
        deadline = time.monotonic() + timeout
        cancel_at = None if cancel_after is None else time.monotonic() + cancel_after
        try:
            self.send(invite, proxy)
            interval, resend_at = 0.5, time.monotonic() + 0.5
            while final is None and time.monotonic() < deadline:
                wake = [deadline] + ([] if provisional else [resend_at]) + ([] if cancel_at is None else [cancel_at])
                try:
                    answer = await asyncio.wait_for(pending.answers.get(), max(min(wake) - time.monotonic(), 0.0))
                except TimeoutError:
                    if cancel_at is not None and time.monotonic() >= cancel_at:
                        # CANCEL: the INVITE's branch and headers, its own method (RFC 3261 9.1)
                        keep = [
                            (k, v) for k, v in invite_headers if k in ("Via", "Max-Forwards", "From", "To", "Call-ID")
                        ]
                        cancel = SipMessage(
                            invite.start_line.replace("INVITE", "CANCEL", 1), [*keep, ("CSeq", "1 CANCEL")]
                        )
                        self.send(cancel, proxy)
                        cancel_at = None
                    elif not provisional and time.monotonic() >= resend_at:  # timer A
                        self.send(invite, proxy)
                        interval = min(interval * 2, 4.0)
                        resend_at = time.monotonic() + interval
                    continue
                if answer.status < 200:
                    provisional.append(answer.status)
                else:
                    final = answer
            elapsed = time.perf_counter() - started
        finally:
            del self._pending[(call_id, "INVITE")]
        if final is None:
            return CallResult(0, "no final answer", None, provisional, time.perf_counter() - started, call_id)
        result = CallResult(final.status, final.reason, final, provisional, elapsed, call_id)
        if not result.answered:
            # the ACK of a refusal belongs to the INVITE's transaction: same branch, to the proxy
            ack = [("Via", via), ("Max-Forwards", "70"), ("From", from_), ("To", final.header("To") or to),
                   ("Call-ID", call_id), ("CSeq", "1 ACK")]  # fmt: skip
            self.send(SipMessage(invite.start_line.replace("INVITE", "ACK", 1), ack), proxy)
            return result
        await self._in_dialog("ACK", final, from_, call_id, proxy, wait=False)
        if hangup:
            await self._in_dialog("BYE", final, from_, call_id, proxy, wait=True, timeout=timeout)
        return result

    async def _in_dialog(
        self, method: str, answer: SipMessage, from_: str, call_id: str, proxy: tuple[str, int], *, wait: bool,
        timeout: float = 5.0,
    ) -> SipMessage | None:  # fmt: skip
        """A request within the dialog a 2xx set up: to its Contact, through its Record-Route set (reversed)."""
        host, port = self.address
        target = uri_in(answer.header("Contact") or f"<sip:{proxy[0]}:{proxy[1]}>")
        routes = [r.strip() for value in answer.all("Record-Route") for r in value.split(",")][::-1]
        cseq = "1 ACK" if method == "ACK" else f"2 {method}"
        headers = [
            ("Via", f"SIP/2.0/UDP {host}:{port};branch={_branch()};rport"),
            ("Max-Forwards", "70"),
            ("From", from_),
            ("To", answer.header("To") or ""),
            ("Call-ID", call_id),
            ("CSeq", cseq),
            *(("Route", r) for r in routes),
        ]
        next_hop = host_port(uri_in(routes[0])) if routes else host_port(target)
        if not wait:
            self.send(SipMessage(f"{method} {target} SIP/2.0", headers), next_hop)
            return None
        pending = self._pending[(call_id, method)] = _Pending()
        try:
            self.send(SipMessage(f"{method} {target} SIP/2.0", headers), next_hop)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                with contextlib.suppress(TimeoutError):
                    reply = await asyncio.wait_for(pending.answers.get(), deadline - time.monotonic())
                    if reply.status >= 200:
                        return reply
            return None
        finally:
            del self._pending[(call_id, method)]


_REASONS = {200: "OK", 180: "Ringing", 486: "Busy Here", 480: "Temporarily Unavailable", 603: "Decline"}


def parse_address(value: str, default_port: int = 5060, any_port: bool = False) -> tuple[str, int]:
    """``HOST[:PORT]`` -> ``(host, port)``; a clear :class:`ValueError` otherwise.
    ``any_port``: port 0 (any free one) is allowed too."""
    host, _, port = value.rpartition(":") if ":" in value else (value, "", "")
    if not host:
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    if not port:
        return host, default_port
    if not port.isdigit() or not (0 if any_port else 1) <= int(port) < 65536:
        raise ValueError(f"expected a port {'0' if any_port else '1'}-65535 in {value!r}")
    return host, int(port)
