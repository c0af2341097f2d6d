"""The intent contract and number handling, without any I/O."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callguard.core.numbers import MAX_INPUT_LENGTH, mask, normalise, normalise_caller_id
from callguard.core.schema import (
    MAX_ID_LENGTH,
    MAX_MESSAGE_BYTES,
    SILENT_OUTCOMES,
    CallOutcome,
    MalformedIntent,
    Purpose,
    parse_intent,
    parse_outcome,
)

BASE = {"intent_id": "i-1", "callee": "+39 347 555 5555", "operator_id": "op", "client_id": "acme"}


def test_minimal_intent_gets_defaults() -> None:
    intent = parse_intent(orjson.dumps(BASE))
    assert intent.purpose is Purpose.MARKETING and intent.caller_id is None and intent.requested_at is None


def test_optional_fields() -> None:
    raw = {
        **BASE,
        "purpose": "survey",
        "caller_id": "+390844000001",
        "campaign_id": "c",
        "requested_at": "2026-01-02T03:04:05Z",
    }
    intent = parse_intent(orjson.dumps(raw))
    assert intent.purpose is Purpose.SURVEY
    assert intent.requested_at == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.mark.parametrize("field", ["intent_id", "operator_id", "client_id"])
def test_ids_of_1_and_of_128_characters_are_valid(field) -> None:
    for length in (1, MAX_ID_LENGTH):
        assert getattr(parse_intent(orjson.dumps({**BASE, field: "x" * length})), field) == "x" * length


def test_an_optional_field_has_at_most_128_characters() -> None:
    assert parse_intent(orjson.dumps({**BASE, "campaign_id": "c" * MAX_ID_LENGTH})).campaign_id == "c" * MAX_ID_LENGTH
    with pytest.raises(MalformedIntent, match="'campaign_id' must be a string of at most 128 characters"):
        parse_intent(orjson.dumps({**BASE, "campaign_id": "c" * (MAX_ID_LENGTH + 1)}))


@pytest.mark.parametrize(("length", "kept"), [(0, False), (1, True), (MAX_ID_LENGTH, True), (MAX_ID_LENGTH + 1, False)])
def test_a_malformed_intent_keeps_an_id_of_1_to_128_characters(length, kept) -> None:
    intent_id = "i" * length
    for value in (
        orjson.dumps({**BASE, "intent_id": intent_id, "callee": 5}),  # a bad field
        orjson.dumps({**BASE, "intent_id": intent_id, "pad": "x" * 70_000}),  # too large
    ):
        with pytest.raises(MalformedIntent) as info:
            parse_intent(value)
        assert info.value.intent_id == (intent_id if kept else None)


def test_unknown_fields_are_ignored_for_forward_compatibility() -> None:
    assert parse_intent(orjson.dumps({**BASE, "future_field": 1})).intent_id == "i-1"


@pytest.mark.parametrize(
    ("change", "error", "readable_id"),
    [
        ({"intent_id": ""}, "field 'intent_id' must be 1-128 characters", None),
        ({"intent_id": "x" * 129}, "field 'intent_id' must be 1-128 characters", None),
        ({"intent_id": 5}, "field 'intent_id' must be a string", None),
        ({"callee": None}, "missing field 'callee'", "i-1"),
        ({"callee": 393475555555}, "field 'callee' must be a string", "i-1"),
        ({"operator_id": ""}, "field 'operator_id' must be 1-128 characters", "i-1"),
        ({"client_id": "*"}, "client_id '*' is reserved", "i-1"),
        ({"purpose": "sales"}, "field 'purpose' must be one of", "i-1"),
        ({"requested_at": "yesterday"}, "not an RFC 3339 timestamp", "i-1"),
        ({"requested_at": "2026-01-02T03:04:05"}, "not an RFC 3339 timestamp", "i-1"),
        ({"caller_id": 5}, "field 'caller_id' must be a string", "i-1"),
    ],
)
def test_contract_violations(change, error, readable_id) -> None:
    with pytest.raises(MalformedIntent) as info:
        parse_intent(orjson.dumps({**BASE, **change}))
    assert error in info.value.error
    assert info.value.intent_id == readable_id


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (None, "empty message"),
        (b"", "not JSON"),
        (b"{", "not JSON"),
        (b"[]", "not a JSON object"),
        (b"\xff", "not JSON"),
    ],
)
def test_not_an_object(value, error) -> None:
    with pytest.raises(MalformedIntent, match=error):
        parse_intent(value)


def test_a_message_of_65536_bytes_is_read_one_byte_more_is_refused() -> None:
    empty = len(orjson.dumps({**BASE, "pad": ""}))
    exact = orjson.dumps({**BASE, "pad": "x" * (MAX_MESSAGE_BYTES - empty)})
    assert len(exact) == MAX_MESSAGE_BYTES and parse_intent(exact).intent_id == "i-1"
    with pytest.raises(MalformedIntent, match="larger than 65536 bytes"):
        parse_intent(orjson.dumps({**BASE, "pad": "x" * (MAX_MESSAGE_BYTES - empty + 1)}))


def test_oversized_message_keeps_its_id_so_the_dialer_gets_an_answer() -> None:
    with pytest.raises(MalformedIntent, match="larger than 65536 bytes") as info:
        parse_intent(orjson.dumps({**BASE, "pad": "x" * 70_000}))
    assert info.value.intent_id == "i-1"
    with pytest.raises(MalformedIntent, match="larger than 65536 bytes") as info:
        parse_intent(b"[" + b"1," * 40_000 + b"1]")
    assert info.value.intent_id is None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)


@settings(max_examples=400, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=200),
        json_values.map(orjson.dumps),
        st.dictionaries(st.sampled_from([*BASE, "purpose", "requested_at", "caller_id"]), json_values).map(
            orjson.dumps
        ),
    )
)
def test_any_input_is_an_intent_or_a_malformed_intent(value: bytes) -> None:
    try:
        parse_intent(value)
    except MalformedIntent as exc:
        assert exc.error and "\n" not in exc.error


@pytest.mark.parametrize(
    "written", ["+39 347 555 5555", "0039 347 555 5555", "347-5555555", "(347) 5555555", "+393475555555", "3475555555"]
)
def test_written_forms_normalise_to_one_e164(written) -> None:
    assert normalise(written, "IT") == "+393475555555"


def test_fixed_line_and_foreign_numbers() -> None:
    assert normalise("(06) 2222 3333", "IT") == "+390622223333"
    assert normalise("+1 202 555 0143", "IT") == "+12025550143"


@pytest.mark.parametrize("bad", ["", "12", "abc", "+39 000", "+" + "3" * 70, "+39 347 555 55555 5555"])
def test_invalid_numbers(bad) -> None:
    assert normalise(bad, "IT") is None


def test_mask_keeps_no_more_than_the_prefix_and_two_digits() -> None:
    assert mask("+393475555555") == "+39347*****55"
    assert mask(None) == "<none>"
    assert mask("12345") == "*****"
    assert mask("+3934712") == "********"  # 8 characters: replaced whole
    assert mask("+39347123") == "+39347*23"


def test_input_of_64_characters_is_read_longer_is_refused() -> None:
    padded = "+39 347 555 5555".ljust(MAX_INPUT_LENGTH)
    assert normalise(padded, "IT") == normalise_caller_id(padded, "IT") == "+393475555555"
    assert normalise(padded + " ", "IT") is None and normalise_caller_id(padded + " ", "IT") is None


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (None, "empty or oversized message"),
        (b"{", "not JSON"),
        (b"[]", "not a JSON object"),
        (b'{"outcome": "silent", "at": "2026-11-28T10:00:00Z"}', "field 'intent_id' must be a string"),
        (b'{"intent_id": "i", "outcome": "hung_up", "at": "2026-11-28T10:00:00Z"}', "field 'outcome' must be one of"),
        (b'{"intent_id": "i", "outcome": "silent"}', "field 'at' must be an RFC 3339 string"),
        (b'{"intent_id": "i", "outcome": "silent", "at": "2026-11-28T10:00:00"}', "not an RFC 3339 timestamp"),
    ],
)
def test_bad_outcomes_say_what_is_wrong(value, error) -> None:
    with pytest.raises(ValueError, match=error):
        parse_outcome(value)


def test_an_outcome_parses_to_utc() -> None:
    report = parse_outcome(b'{"intent_id": "i-1", "outcome": "abandoned", "at": "2026-11-28T11:00:00+01:00"}')
    assert report.intent_id == "i-1" and report.outcome is CallOutcome.ABANDONED
    assert report.at == datetime(2026, 11, 28, 10, 0, tzinfo=UTC) and report.outcome in SILENT_OUTCOMES
