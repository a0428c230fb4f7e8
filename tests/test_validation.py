"""The tracking plan's validator: every event type, the rejections, normalisation, event ids,
body shapes, and property-based checks with strategies generated from the catalogue."""

from __future__ import annotations

import copy
import re
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector.catalogue import ALIASES, EVENT_MODELS, EVENT_TYPES, EXAMPLES, canonical_event_type
from collector.validation import (
    EVENT_ID_NAMESPACE,
    BodyError,
    Event,
    Rejection,
    parse_body,
    validate_events,
)

RECEIVED = datetime(2025, 1, 1, 12, tzinfo=UTC)
ORIGINAL_SPEC_EXAMPLE = {
    "client_id": "CID123456",
    "device_type": "web",
    "push_token": "TOKEN123456",
    "event": "page_visit",
    "timestamp": "2024-12-07T10:00:00Z",
}
ENVELOPE = {"event", "timestamp", "client_id", "user_id", "event_id", "device_type",
            "push_token", "auth_status", "email", "phone"}


def one(item: Any, received: datetime = RECEIVED) -> Event | Rejection:
    """Validate a single item and return its Event or its Rejection."""
    events, rejections = validate_events([item], received)
    assert len(events) + len(rejections) == 1
    return events[0] if events else rejections[0]


def accepted(item: Any, **kw: Any) -> Event:
    result = one(item, **kw)
    assert isinstance(result, Event), getattr(result, "errors", result)
    return result


def errors(item: Any, **kw: Any) -> list[str]:
    result = one(item, **kw)
    assert isinstance(result, Rejection), f"accepted: {result}"
    assert result.index == 0 and result.item is item
    return result.errors


def example(name: str, **changes: Any) -> dict[str, Any]:
    event = copy.deepcopy(EXAMPLES[name])
    for key, value in changes.items():
        if value is ...:
            event.pop(key, None)
        else:
            event[key] = value
    return event


def required_fields(name: str) -> list[str]:
    return [f for f in EVENT_MODELS[name].model_json_schema()["required"] if f != "event"]


def own_fields(name: str) -> list[str]:
    return [f for f in EVENT_MODELS[name].model_fields if f not in ENVELOPE]


# --------------------------------------------------------------------------- catalogue


def test_catalogue_has_the_21_types_of_the_tracking_plan_and_the_alias():
    assert len(EVENT_TYPES) == 21 == len(set(EVENT_TYPES))
    assert set(EXAMPLES) == set(EVENT_TYPES) == set(EVENT_MODELS)
    assert ALIASES == {"page_visit": "page_view"}
    assert EVENT_TYPES == (
        "user_login", "user_logout", "page_view", "time_on_page", "product_view",
        "add_to_cart", "remove_from_cart", "checkout_start", "order_complete",
        "checkout_abandonment", "payment_success", "payment_failure", "push_received",
        "push_opened", "search", "scroll", "click", "geo_location", "purchase_history",
        "visit_history", "user_recommendation",
    )


@pytest.mark.parametrize("name", EVENT_TYPES)
def test_every_type_accepts_its_example(name):
    item = example(name)
    before = copy.deepcopy(item)
    event = accepted(item)
    assert event.event_type == name
    assert event.event_ts.tzinfo is not None and event.event_ts.utcoffset() == timedelta(0)
    assert event.payload is item and item == before  # original, unmodified
    assert event.client_id == (None if "client_id" not in item else str(item["client_id"]))
    assert event.user_id == (None if "user_id" not in item else str(item["user_id"]))
    assert isinstance(event.event_id, uuid.UUID)


def test_alias_page_visit_from_the_original_spec_is_a_page_view():
    event = accepted(dict(ORIGINAL_SPEC_EXAMPLE))
    assert event.event_type == "page_view" == canonical_event_type("page_visit")
    assert (event.client_id, event.device_type, event.push_token) == (
        "CID123456", "web", "TOKEN123456")
    assert event.event_ts == datetime(2024, 12, 7, 10, tzinfo=UTC)
    assert event.payload["event"] == "page_visit"  # payload is not rewritten


@pytest.mark.parametrize(
    ("name", "field"),
    [(n, f) for n in EVENT_TYPES for f in required_fields(n)],
)
def test_missing_required_field_is_rejected_naming_it(name, field):
    errs = errors(example(name, **{field: ...}))
    assert any(e.startswith(f"{field}: ") for e in errs), errs


def test_required_fields_match_the_documented_rules():
    req = {n: set(required_fields(n)) for n in EVENT_TYPES}
    assert req["order_complete"] == {"timestamp", "order_id", "order_items"}
    assert req["purchase_history"] == {
        "timestamp", "order_id", "order_items", "total_price", "purchase_date"}
    assert req["push_received"] == req["push_opened"] == {"timestamp", "push_token"}
    assert req["search"] == {"timestamp", "search_query"}
    assert req["geo_location"] == {"timestamp", "latitude", "longitude"}
    assert req["visit_history"] == {"timestamp", "page_url"}
    for name in ("product_view", "add_to_cart", "remove_from_cart"):
        assert "product_id" in req[name]
    assert req["page_view"] == {"timestamp"}  # the original's page_visit example has no URL


@pytest.mark.parametrize(
    ("name", "field"),
    [(n, f) for n in EVENT_TYPES for f in own_fields(n)]
    + [("page_view", f) for f in sorted(ENVELOPE - {"event"})],
)
def test_known_field_of_wrong_type_is_rejected_naming_it(name, field):
    # A list of lists is wrong for every known field (strings, numbers, ids, lines, objects).
    errs = errors(example(name, **{field: [[True]]}))
    assert any(e.startswith(field) for e in errs), errs


@pytest.mark.parametrize(
    ("name", "changes", "field"),
    [
        ("product_view", {"price": -0.01}, "price"),
        ("product_view", {"price": "5990"}, "price"),  # strings are not coerced to numbers
        ("add_to_cart", {"quantity": 1.5}, "quantity"),
        ("add_to_cart", {"quantity": -1}, "quantity"),
        ("add_to_cart", {"product_id": ""}, "product_id"),
        ("add_to_cart", {"product_id": True}, "product_id"),
        ("remove_from_cart", {"product_id": 12.0}, "product_id"),
        ("checkout_start", {"cart_items": []}, "cart_items"),
        ("checkout_start", {"total_price": -1}, "total_price"),
        ("order_complete", {"order_items": []}, "order_items"),
        ("order_complete", {"order_items": [{"quantity": 1}]}, "order_items[0].product_id"),
        ("order_complete", {"order_items": [{"product_id": "A", "price": -5}]},
         "order_items[0].price"),
        ("order_complete", {"order_items": ["SKU-1"]}, "order_items[0]"),
        ("checkout_abandonment", {"cart_items": [{"product_id": None}]},
         "cart_items[0].product_id"),
        ("payment_success", {"payment_amount": -10}, "payment_amount"),
        ("payment_success", {"payment_amount": "10"}, "payment_amount"),
        ("time_on_page", {"time_spent": -3}, "time_spent"),
        ("push_received", {"push_token": ""}, "push_token"),
        ("push_opened", {"push_token": None}, "push_token"),
        ("search", {"search_query": ""}, "search_query"),
        ("scroll", {"scroll_depth": 101}, "scroll_depth"),
        ("click", {"clicked_element": 5}, "clicked_element"),
        ("geo_location", {"latitude": 90.5}, "latitude"),
        ("geo_location", {"longitude": -180.01}, "longitude"),
        ("geo_location", {"latitude": "55.75"}, "latitude"),
        ("purchase_history", {"purchase_date": "last tuesday"}, "purchase_date"),
        ("purchase_history", {"total_price": -1}, "total_price"),
        ("visit_history", {"visit_count": -2}, "visit_count"),
        ("visit_history", {"last_visit": "2024-02-30"}, "last_visit"),
        ("visit_history", {"page_url": ""}, "page_url"),
        ("user_recommendation", {"recommended_products": []}, "recommended_products"),
        ("user_recommendation", {"recommended_products": [{"product_name": "x"}]},
         "recommended_products[0].product_id"),
        ("user_login", {"auth_status": 2}, "auth_status"),
        ("user_login", {"auth_status": "1"}, "auth_status"),
        ("page_view", {"device_type": "tablet"}, "device_type"),
        ("page_view", {"event_id": ""}, "event_id"),
        ("page_view", {"client_id": 1.5}, "client_id"),
        ("page_view", {"user_id": False}, "user_id"),
        ("page_view", {"client_id": "x" * 257}, "client_id"),
        ("user_logout", {"email": "anna.example.com"}, "email"),
        ("user_logout", {"email": "anna petrova@example.com"}, "email"),
        ("user_logout", {"email": "anna@"}, "email"),
        ("user_logout", {"phone": "12345"}, "phone"),
        ("user_logout", {"phone": "call me"}, "phone"),
    ],
)
def test_invalid_values_are_rejected_naming_the_field(name, changes, field):
    errs = errors(example(name, **changes))
    assert any(e.startswith(f"{field}: ") for e in errs), errs


def test_several_errors_of_one_item_are_all_reported():
    errs = errors(example("product_view", product_id=..., price=-1, device_type="fridge"))
    fields = sorted(e.split(":")[0] for e in errs)
    assert fields == ["device_type", "price", "product_id"]


# --------------------------------------------------------------------------- envelope rules


def test_client_id_is_required_unless_user_id_is_given():
    errs = errors(example("page_view", client_id=...))
    assert errs == ["client_id: required unless user_id is given"]
    assert errors(example("page_view", client_id=None)) == errs
    event = accepted(example("page_view", client_id=..., user_id="U-1"))
    assert (event.client_id, event.user_id) == (None, "U-1")


def test_user_login_needs_someone_to_log_in():
    bare = example("user_login", user_id=..., email=..., phone=...)
    assert errors(bare) == ["user_id: required unless email or phone is given"]
    assert errors({**bare, "email": "   "}) == errors(bare)  # blank e-mail is not an e-mail
    assert accepted({**bare, "email": "a@b.ru"}).email == "a@b.ru"
    assert accepted({**bare, "phone": "+7 916 123 45 67"}).phone == "79161234567"


def test_numeric_ids_become_strings():
    event = accepted(example("add_to_cart", client_id=123456789012, user_id=10042))
    assert (event.client_id, event.user_id) == ("123456789012", "10042")
    assert event.payload["user_id"] == 10042  # the payload stays as sent


def test_unknown_fields_are_kept_untouched_in_the_payload():
    extra = {"utm": {"source": "newsletter", "campaign": ["winter", 2024]}, "ab_test": None,
             "Email": "NOT@NORMALISED.COM", "batch": "lot-7"}
    item = example("product_view", **extra)
    item["email"] = "  Mixed.Case@Example.COM "
    event = accepted(item)
    assert event.payload is item
    for key, value in extra.items():
        assert event.payload[key] == value
    assert event.payload["email"] == "  Mixed.Case@Example.COM "  # raw in payload
    assert event.email == "mixed.case@example.com"  # normalised in the column


# --------------------------------------------------------------------------- event, timestamp


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ({**EXAMPLES["click"], "event": "teleport"}, "event: unknown event type 'teleport'"),
        ({**EXAMPLES["click"], "event": "Page_View"}, "event: unknown event type 'Page_View'"),
        ({**EXAMPLES["click"], "event": 7}, "event: expected a string, got integer"),
        ({**EXAMPLES["click"], "event": None}, "event: expected a string, got null"),
        ({**EXAMPLES["click"], "event": ["click"]}, "event: expected a string, got array"),
        ({k: v for k, v in EXAMPLES["click"].items() if k != "event"}, "event: field required"),
    ],
)
def test_unknown_or_missing_event_is_rejected(item, message):
    assert errors(item) == [message]


@pytest.mark.parametrize(
    "value",
    ["yesterday", "", "2024-12-07", "2024-13-01T00:00:00Z", "2024-12-07T25:00:00Z",
     "07.12.2024 10:00", "2024-12-07T10:00:00+25:00", "2024-12-07T10:00:00 UTC"],
)
def test_bad_timestamp_is_rejected(value):
    assert errors(example("page_view", timestamp=value)) == ["timestamp: not an ISO 8601 date-time"]


@pytest.mark.parametrize("value", [1733565600, 1733565600.5, None, True, ["2024-12-07"]])
def test_timestamp_must_be_a_string(value):
    assert errors(example("page_view", timestamp=value)) == [
        "timestamp: not an ISO 8601 date-time string"]


def test_timestamp_range_is_1970_to_365_days_after_receipt():
    limit = RECEIVED + timedelta(days=365)
    assert accepted(example("page_view", timestamp="1970-01-01T00:00:00Z")).event_ts == datetime(
        1970, 1, 1, tzinfo=UTC)
    assert accepted(example("page_view", timestamp=limit.isoformat())).event_ts == limit
    too_early = errors(example("page_view", timestamp="1969-12-31T23:59:59Z"))
    assert too_early == ["timestamp: before 1970-01-01T00:00:00Z"]
    # 00:30 at +03:00 on 1 Jan 1970 is still 1969 in UTC.
    assert errors(example("page_view", timestamp="1970-01-01T00:30:00+03:00")) == too_early
    assert errors(example("page_view", timestamp="0001-01-01T00:00:00+01:00")) == too_early
    assert errors(example("page_view", timestamp="9999-12-31T23:00:00-05:00"))[0].startswith(
        "timestamp: more than 365 days")
    late = (limit + timedelta(seconds=1)).isoformat()
    assert errors(example("page_view", timestamp=late)) == [
        "timestamp: more than 365 days after the time the event was received"]
    # The bound follows the receive time, not the wall clock.
    assert accepted(example("page_view", timestamp=late), received=RECEIVED + timedelta(days=1))


@pytest.mark.parametrize(
    ("value", "utc"),
    [
        ("2024-12-07T13:00:00+03:00", datetime(2024, 12, 7, 10, tzinfo=UTC)),
        ("2024-12-07T10:00:00", datetime(2024, 12, 7, 10, tzinfo=UTC)),  # naive = UTC
        ("2024-12-07 10:00:00Z", datetime(2024, 12, 7, 10, tzinfo=UTC)),
        ("2024-12-07T05:00:00.250-05:00", datetime(2024, 12, 7, 10, 0, 0, 250000, tzinfo=UTC)),
        ("2024-12-07T10:00:00.123456789Z", datetime(2024, 12, 7, 10, 0, 0, 123456, tzinfo=UTC)),
    ],
)
def test_timestamps_are_converted_to_utc(value, utc):
    event = accepted(example("page_view", timestamp=value))
    assert event.event_ts == utc and event.event_ts.tzinfo is UTC


def test_naive_received_at_is_taken_as_utc():
    naive = RECEIVED.replace(tzinfo=None)
    late = (RECEIVED + timedelta(days=365, hours=1)).isoformat()
    assert errors(example("page_view", timestamp=late), received=naive)[0].startswith("timestamp")


# --------------------------------------------------------------------------- normalisation


@pytest.mark.parametrize(
    ("value", "normalised"),
    [
        ("  Anna.Petrova@Example.COM ", "anna.petrova@example.com"),
        ("ivan+shop@mail.ru", "ivan+shop@mail.ru"),
        ("", None),
        ("   ", None),
        (None, None),
    ],
)
def test_email_is_trimmed_and_lower_cased(value, normalised):
    assert accepted(example("user_logout", email=value)).email == normalised


@pytest.mark.parametrize(
    ("value", "digits"),
    [
        ("8 (916) 123-45-67", "79161234567"),
        ("+7 916 123-45-67", "79161234567"),
        ("9161234567", "79161234567"),
        ("+44 20 7946 0958", "442079460958"),
        ("0044 20 7946 0958", "442079460958"),
        ("+1 (650) 253-0000", "16502530000"),
        ("", None),
    ],
)
def test_phone_is_normalised_to_e164_digits(value, digits):
    assert accepted(example("user_logout", phone=value)).phone == digits


def test_phone_region_comes_from_the_environment(monkeypatch):
    item = example("user_logout", phone="020 7946 0958")
    assert errors(item) == ["phone: not a valid phone number"]  # not a Russian number
    monkeypatch.setenv("CRM_PHONE_REGION", "GB")
    assert accepted(item).phone == "442079460958"


@pytest.mark.parametrize(("value", "lower"), [("WEB", "web"), ("iOS", "ios"),
                                              ("Android", "android"), ("mobile", "mobile")])
def test_device_type_is_case_insensitive_and_lower_cased(value, lower):
    event = accepted(example("page_view", device_type=value))
    assert event.device_type == lower and event.payload["device_type"] == value


@pytest.mark.parametrize("zone", ["Europe/Moscow", "Asia/Yekaterinburg", "America/New_York",
                                  "Europe/Berlin", "UTC", "Etc/GMT-3", None])
def test_iana_time_zone_is_accepted_and_kept_in_the_payload(zone):
    item = example("page_view", timezone=zone)
    assert accepted(item).payload["timezone"] == zone


@pytest.mark.parametrize("zone", ["UTC+3", "+03:00", "", " Europe/Moscow", "europe/moscow",
                                  "Mars/Olympus", "localtime", 3, 3.5, True, ["Europe/Moscow"],
                                  {"name": "Europe/Moscow"}])
def test_anything_but_an_iana_time_zone_name_is_rejected_naming_the_field(zone):
    for name in ("page_view", "geo_location", "order_complete"):
        assert errors(example(name, timezone=zone)) == ["timezone: not an IANA time zone name"]


# --------------------------------------------------------------------------- event ids


def test_valid_uuid_event_id_is_used_as_is():
    given_id = "7D0F3C1E-9A52-4B8E-8F0A-3C2B1D4E5F60"
    assert accepted(example("page_view", event_id=given_id)).event_id == uuid.UUID(given_id)


def test_other_event_id_strings_map_to_uuid5_so_retries_are_idempotent():
    first = accepted(example("page_view", event_id="evt-42"))
    retry = accepted(example("page_view", event_id="evt-42", timestamp="2024-12-07T11:00:00Z"))
    assert first.event_id == retry.event_id == uuid.uuid5(EVENT_ID_NAMESPACE, "evt-42")
    assert accepted(example("page_view", event_id="evt-43")).event_id != first.event_id


def test_event_without_id_gets_one_derived_from_its_content():
    item = example("page_view")
    shuffled = dict(reversed(list(item.items())))  # same event, other key order
    a, b = accepted(item).event_id, accepted(shuffled).event_id
    assert a == b == uuid.uuid5(
        EVENT_ID_NAMESPACE, orjson.dumps(item, option=orjson.OPT_SORT_KEYS).decode())
    assert a.version == 5
    assert accepted(example("page_view", page_url="https://shop.example.com/x")).event_id != a
    # The same file imported twice yields the same ids.
    batch = [example(n) for n in EVENT_TYPES]
    ids1 = [e.event_id for e in validate_events(batch, RECEIVED)[0]]
    ids2 = [e.event_id for e in validate_events(copy.deepcopy(batch), RECEIVED)[0]]
    assert ids1 == ids2 and len(set(ids1)) == len(ids1)


# --------------------------------------------------------------------------- batches


def test_junk_items_are_rejected_one_by_one_and_good_ones_kept():
    items: list[Any] = [example("page_view"), 1, "page_view", None, [], True, {},
                        example("search"), {"event": "search"}]
    events, rejections = validate_events(items, RECEIVED)
    assert [e.event_type for e in events] == ["page_view", "search"]
    assert [r.index for r in rejections] == [1, 2, 3, 4, 5, 6, 8]
    assert all(r.item is items[r.index] for r in rejections)
    by_index = {r.index: r.errors for r in rejections}
    assert by_index[1] == ["item: expected a JSON object, got integer"]
    assert by_index[4] == ["item: expected a JSON object, got array"]
    assert by_index[6] == ["event: field required"]
    assert by_index[8] == ["timestamp: field required", "search_query: field required"]


def test_empty_batch_gives_nothing():
    assert validate_events([], RECEIVED) == ([], [])


def test_any_sequence_of_items_is_accepted():
    events, rejections = validate_events((example("click"), example("scroll")), RECEIVED)
    assert [e.event_type for e in events] == ["click", "scroll"] and not rejections


def test_a_bad_item_does_not_change_the_result_for_the_others():
    good = [example(n) for n in EVENT_TYPES]
    alone, _ = validate_events(good, RECEIVED)
    mixed = [*good[:10], {"event": "foo"}, *good[10:]]
    with_bad, rejections = validate_events(mixed, RECEIVED)
    assert [r.index for r in rejections] == [10]
    assert [(e.event_id, e.event_ts, e.payload) for e in with_bad] == [
        (e.event_id, e.event_ts, e.payload) for e in alone]


# --------------------------------------------------------------------------- parse_body


@pytest.mark.parametrize(
    ("body", "count"),
    [
        (orjson.dumps(EXAMPLES["click"]), 1),
        (orjson.dumps([EXAMPLES["click"], EXAMPLES["search"]]), 2),
        (orjson.dumps({"batch": [EXAMPLES["click"]] * 3}), 3),
        (orjson.dumps({"batch": [EXAMPLES["click"]], "sentAt": "2024-12-07T10:00:00Z"}), 1),
        (b'  [1, "x", null]  ', 3),
        (b"{}", 1),
    ],
)
def test_parse_body_shapes(body, count):
    items = parse_body(body)
    assert isinstance(items, list) and len(items) == count


def test_an_event_with_a_batch_field_is_an_event_not_a_wrapper():
    item = {**EXAMPLES["add_to_cart"], "batch": ["lot-7"]}
    assert parse_body(orjson.dumps(item)) == [item]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "empty body"),
        (b"  \n", "empty body"),
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe{}", "not valid JSON"),
        (b"42", "got integer"),
        (b'"page_view"', "got string"),
        (b"null", "got null"),
        (b"[]", "empty batch"),
        (b'{"batch": []}', "empty batch"),
        (b'{"batch": {"event": "click"}}', '"batch" must be an array'),
        (b"[1]" + b"]", "not valid JSON"),
    ],
)
def test_parse_body_errors(body, message):
    with pytest.raises(BodyError, match=re.escape(message)):
        parse_body(body)


# --------------------------------------------------------------------------- properties


def _storable_text(**kw: Any) -> st.SearchStrategy[str]:
    """Text PostgreSQL can store: U+0000 is a validation error of its own (tested apart)."""
    return st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), **kw)


def _json_values(text=st.text) -> st.SearchStrategy[Any]:
    scalars = (st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1)
               | st.floats(allow_nan=False, allow_infinity=False) | text(max_size=20))
    eventish = st.fixed_dictionaries(
        {"event": st.sampled_from([*EVENT_TYPES, "page_visit", "nope"])},
        optional={"timestamp": st.sampled_from(["2024-12-07T10:00:00Z", "bad", 5]),
                  "client_id": text(max_size=5) | st.integers(-(2**63), 2**63 - 1),
                  "user_id": text(max_size=5), "email": text(max_size=8),
                  "phone": text(max_size=12), "product_id": text(max_size=4)},
    )
    return st.recursive(
        scalars | eventish,
        lambda inner: st.lists(inner, max_size=5) | st.dictionaries(text(max_size=8), inner,
                                                                    max_size=5),
        max_leaves=20,
    )


@settings(max_examples=300, deadline=None)
@given(_json_values())
def test_any_json_body_is_either_a_body_error_or_fully_partitioned(value):
    body = orjson.dumps(value)
    try:
        items = parse_body(body)
    except BodyError:
        return
    events, rejections = validate_events(items, RECEIVED)
    rejected = [r.index for r in rejections]
    assert rejected == sorted(set(rejected)) and all(0 <= i < len(items) for i in rejected)
    kept = [i for i in range(len(items)) if i not in set(rejected)]
    assert len(events) == len(kept)  # every item accepted or rejected, exactly once
    reparsed = parse_body(body)  # an independent copy of what was sent
    for event, i in zip(events, kept, strict=True):
        assert event.payload is items[i]
        assert orjson.dumps(event.payload) == orjson.dumps(reparsed[i])
        assert event.event_type in EVENT_TYPES
    assert all(r.errors and all(isinstance(e, str) and ": " in e for e in r.errors)
               for r in rejections)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64))
def test_any_bytes_body_parses_or_raises_body_error(body):
    try:
        items = parse_body(body)
    except BodyError as exc:
        assert str(exc)
        return
    assert isinstance(items, list) and items


# Strategies generated from the catalogue's JSON Schemas, so a new field is covered for free.

VALID_PHONES = ["+7 916 123-45-67", "8 (916) 123-45-67", "+44 20 7946 0958", "+1 650 253 0000",
                "0049 30 901820", "9161234567"]
LATEST = RECEIVED + timedelta(days=365)


def _timestamps() -> st.SearchStrategy[str]:
    instants = st.datetimes(min_value=datetime(1970, 1, 1), max_value=LATEST.replace(tzinfo=None),
                            timezones=st.just(UTC))
    zones = st.sampled_from([UTC, timezone(timedelta(hours=3)), timezone(timedelta(hours=-5)),
                             None])

    def render(instant: datetime, zone: timezone | None, zulu: bool) -> str:
        if zone is None:
            return instant.replace(tzinfo=None).isoformat()
        text = instant.astimezone(zone).isoformat()
        return text.replace("+00:00", "Z") if zulu else text

    return st.builds(render, instants, zones, st.booleans())


def _dates() -> st.SearchStrategy[str]:
    return st.dates(min_value=datetime(1990, 1, 1).date()).map(str) | _timestamps()


_emails = st.emails(domains=st.sampled_from(["example.com", "mail.ru", "shop.example.co.uk"]))
SPECIAL: dict[str, st.SearchStrategy[Any]] = {
    "timestamp": _timestamps(),
    "purchase_date": _dates(),
    "last_visit": _dates(),
    "email": _emails.map(lambda e: f" {e.upper()} ") | _emails,
    "phone": st.sampled_from(VALID_PHONES),
}


def _from_schema(schema: dict[str, Any], defs: dict[str, Any]) -> st.SearchStrategy[Any]:
    if "$ref" in schema:
        return _from_schema(defs[schema["$ref"].rsplit("/", 1)[-1]], defs)
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if "anyOf" in schema:
        return st.one_of([_from_schema(s, defs) for s in schema["anyOf"]])
    kind = schema.get("type")
    if kind == "string":
        if "pattern" in schema:
            return st.from_regex(schema["pattern"], fullmatch=True)
        return _storable_text(min_size=schema.get("minLength", 0),
                       max_size=min(schema.get("maxLength", 24), 24))
    if kind == "integer":
        return st.integers(schema.get("minimum", -(2**63)), schema.get("maximum", 2**63 - 1))
    if kind == "number":
        lo, hi = schema.get("minimum"), schema.get("maximum")
        return st.floats(lo, hi, allow_nan=False, allow_infinity=False) | st.integers(
            -(2**63) if lo is None else int(lo), 2**63 - 1 if hi is None else int(hi))
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    if kind == "array":
        return st.lists(_from_schema(schema["items"], defs),
                        min_size=schema.get("minItems", 0), max_size=3)
    if kind == "object" and "properties" in schema:
        props = schema["properties"]
        required = set(schema.get("required", ()))
        strategy = {k: SPECIAL[k] if k in SPECIAL else _from_schema(v, defs)
                    for k, v in props.items()}
        return st.fixed_dictionaries(
            {k: s for k, s in strategy.items() if k in required},
            optional={k: s for k, s in strategy.items() if k not in required},
        )
    if kind == "object":
        return st.dictionaries(_storable_text(max_size=5), _storable_text(max_size=5), max_size=3)
    raise AssertionError(f"no strategy for {schema}")


def _valid_event(name: str) -> st.SearchStrategy[dict[str, Any]]:
    model = EVENT_MODELS[name]
    schema = model.model_json_schema()
    base = _from_schema(schema, schema.get("$defs", {}))
    extras = st.dictionaries(
        _storable_text(min_size=1, max_size=8).filter(lambda k: k not in schema["properties"]),
        _json_values(_storable_text), max_size=3)

    def complete(event: dict[str, Any], extra: dict[str, Any], who: str) -> dict[str, Any]:
        event = {**extra, **event}
        for group in model.REQUIRE_ONE_OF:  # satisfy "one of" rules the schema states in allOf
            if all(event.get(f) in (None, "") or str(event.get(f)).strip() == "" for f in group):
                event[group[0]] = "U-1" if group[0] == "user_id" else who
        return event

    return st.builds(complete, base, extras, _storable_text(min_size=1, max_size=10))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
@pytest.mark.parametrize("name", [*EVENT_TYPES, "page_visit"])
def test_generated_valid_events_are_always_accepted(name, data):
    model_name = canonical_event_type(name)
    item = data.draw(_valid_event(model_name))
    item["event"] = name
    before = orjson.dumps(item)
    event = accepted(item)
    assert event.event_type == model_name
    assert event.payload is item and orjson.dumps(event.payload) == before
    assert datetime(1970, 1, 1, tzinfo=UTC) <= event.event_ts <= LATEST
    assert event.event_ts.tzinfo is UTC
    if isinstance(item.get("user_id"), int):
        assert event.user_id == str(item["user_id"])
    if item.get("email") and item["email"].strip():
        assert event.email == item["email"].strip().lower()
    if event.phone is not None:
        assert event.phone.isdigit() and 8 <= len(event.phone) <= 15
    if item.get("device_type"):
        assert event.device_type == item["device_type"].lower()
    # Revalidating the same item gives the same id (idempotent storage).
    assert accepted(item).event_id == event.event_id


def test_the_six_characters_backslash_u0000_are_text_not_a_nul():
    # JSON "\\u0000" is a backslash and "u0000": storable, unlike the escape "\u0000" (a NUL).
    event = accepted({**ORIGINAL_SPEC_EXAMPLE, "client_id": "\\u0000"})
    assert event.client_id == "\\u0000"
    assert "NUL" in errors({**ORIGINAL_SPEC_EXAMPLE, "client_id": "a\x00b"})[0]
