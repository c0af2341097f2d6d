"""callguard.client.sip, the small SIP user agent the SIP edge's tests, bench and
``callguard sip`` use: parsing, and a call between two agents on loopback (no
proxy, no server started)."""

from __future__ import annotations

import asyncio

import pytest

from callguard.client.sip import SipError, SipMessage, UserAgent, host_port, parse, parse_address, tag_of, uri_in
from tests.conftest import cli


def test_a_message_survives_encoding_and_parsing() -> None:
    message = SipMessage("INVITE sip:+393471234567@10.0.0.1:5060 SIP/2.0",
                         [("Via", "SIP/2.0/UDP 10.0.0.2:5062;branch=z9hG4bKx"), ("i", "abc@h"), ("CSeq", "1 INVITE"),
                          ("Content-Length", "99")], b"v=0\r\n")  # fmt: skip
    parsed = parse(message.encode())
    assert (parsed.method, parsed.uri, parsed.status, parsed.body) == ("INVITE", message.uri, 0, b"v=0\r\n")
    assert parsed.header("call-id") == "abc@h" and parsed.header("Content-Length") == "5"  # compact form, recounted
    answer = parse(b"SIP/2.0 603 Decline\r\nCSeq: 1 INVITE\r\nX-Callguard-Reasons: a,b\r\n\r\n")
    assert (answer.status, answer.reason, answer.method, answer.header("x-callguard-reasons")) == (
        603, "Decline", "INVITE", "a,b"
    )  # fmt: skip


@pytest.mark.parametrize(
    "datagram", [b"hello", b"GET / HTTP/1.1\r\n\r\n", b"SIP/2.0 200 OK\r\nno colon here\r\n\r\n", b"\xff\xfe\r\n\r\n"]
)
def test_what_is_not_sip_is_refused(datagram: bytes) -> None:
    with pytest.raises(SipError):
        parse(datagram)


def test_header_helpers() -> None:
    assert tag_of("<sip:a@b>;tag=xyz;foo=1") == "xyz" and tag_of("<sip:a@b>") is None
    assert uri_in('"Bob" <sip:bob@h:5070;lr>;x=1') == "sip:bob@h:5070;lr" and uri_in("sip:a@b;x") == "sip:a@b"
    assert host_port("sip:bob@10.0.0.1:5070;lr") == ("10.0.0.1", 5070) and host_port("sip:h") == ("h", 5060)
    assert parse_address("h:5061") == ("h", 5061) and parse_address("h") == ("h", 5060)
    assert parse_address("h:0", any_port=True) == ("h", 0)
    for bad in ("h:0", "h:65536", "h:x", ":5060"):
        with pytest.raises(ValueError):
            parse_address(bad)


async def test_a_call_between_two_agents_is_answered_acked_and_hung_up() -> None:
    callee = await UserAgent.listen(answer=200, ring=True)
    caller = await UserAgent.listen()
    try:
        result = await caller.call(callee.address, "+393471234567", headers=[("X-Test", "1")], timeout=5)
        assert (result.status, result.provisional, result.answered) == (200, [180], True)
        await asyncio.sleep(0.2)
        assert [r.method for r in callee.requests] == ["INVITE", "ACK", "BYE"]
        assert callee.invites[0].header("X-Test") == "1" and callee.invites[0].uri.startswith("sip:+393471234567@")
        busy = await UserAgent.listen(answer=486)
        try:
            refused = await caller.call(busy.address, "+393471234567", timeout=5)
            assert (refused.status, refused.reason, refused.answered) == (486, "Busy Here", False)
        finally:
            busy.close()
    finally:
        callee.close()
        caller.close()


async def test_an_unanswered_invite_is_sent_again_and_given_up_at_the_timeout() -> None:
    silent = await UserAgent.listen()  # answers nothing
    caller = await UserAgent.listen()
    try:
        result = await caller.call(silent.address, "+393471234567", timeout=1.7)
        assert (result.status, result.final) == (0, None) and 1.7 <= result.setup_seconds < 2.5
        # timer A: sent at 0, again at 0.5 s and 1.5 s (RFC 3261 17.1.1.2); recorded once
        assert len(silent.invites) == 1 and len(silent.requests) == 3
    finally:
        silent.close()
        caller.close()


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["call", "+393471234567", "--proxy", "h:99999"], "expected a port 1-65535 in 'h:99999'"),
        (["call", "+393471234567", "--timeout", "0"], "--timeout must be above 0"),
        (["callee", "--answer", "100"], "--answer must be a final SIP status, 200-699"),
    ],
)
def test_sip_commands_refuse_bad_input_in_one_line(argv: list[str], error: str) -> None:
    result = cli({}, "sip", *argv)
    assert (result.returncode, result.stderr) == (2, f"callguard: {error}\n")
