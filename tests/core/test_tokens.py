"""Unit tests of the check tokens: hashing, the Authorization header, who may
check what, and the limiter that slows down bad tokens (both sides of every
comparison)."""

from __future__ import annotations

import pytest

from callguard.core.tokens import TOKEN_PREFIX, FailureLimiter, TokenGrant, authorize, bearer, new_token, token_hash


def test_tokens_are_random_and_stored_as_a_hash():
    a, b = new_token(), new_token()
    assert a != b and a.startswith(TOKEN_PREFIX) and len(a) > 40
    assert token_hash(a) == token_hash(a) != token_hash(b)
    assert a not in token_hash(a)


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer cgk_abc", "cgk_abc"),
        ("bearer  cgk_abc ", "cgk_abc"),
        (None, None),
        ("", None),
        ("Basic dXNlcjpwYXNz", None),
        ("Bearer", None),
        ("Bearer a b", None),
    ],
)
def test_bearer_header(header, token):
    assert bearer(header) == token


GRANT = TokenGrant("dialer-1", "op-roma", ("acme", "beta"))


@pytest.mark.parametrize(
    ("grant", "operator", "client", "status"),
    [
        (None, "op-roma", "acme", 401),
        (GRANT, "op-roma", "acme", 200),
        (GRANT, "op-roma", "beta", 200),
        (GRANT, "op-milano", "acme", 403),
        (GRANT, "op-roma", "gamma", 403),
        (GRANT, None, "acme", 403),
        (TokenGrant("any", "op-roma"), "op-roma", "whoever", 200),
        (TokenGrant("any", "op-roma"), "op-milano", "whoever", 403),
    ],
)
def test_who_may_check_what(grant, operator, client, status):
    assert authorize(grant, operator, client)[0] == status


def test_a_grant_round_trips_through_json():
    grant = TokenGrant("dialer-1", "op-roma", ("acme",), "2026-11-30T10:00:00+00:00")
    assert TokenGrant.from_json(grant.to_json()) == grant


def test_the_limiter_blocks_an_address_after_limit_failures_within_the_window():
    now = [1000.0]
    limiter = FailureLimiter(limit=3, window=60.0, clock=lambda: now[0])
    for _ in range(2):
        limiter.failed("10.0.0.1")
    assert limiter.blocked_for("10.0.0.1") == 0  # 2 < 3
    limiter.failed("10.0.0.1")
    assert limiter.blocked_for("10.0.0.1") == pytest.approx(60.0)  # the 3rd: blocked
    assert limiter.blocked_for("10.0.0.2") == 0  # per address
    now[0] = 1059.999
    assert limiter.blocked_for("10.0.0.1") > 0  # the oldest failure is still inside the window
    now[0] = 1060.0
    assert limiter.blocked_for("10.0.0.1") == 0  # exactly 60 s later it has aged out
