"""The tracking plan in code: the one catalogue of the events the CRM accepts.

Every event is a flat JSON object: the envelope (`EventEnvelope`) plus the own fields of its
type (one model per type below). `docs`, the OpenAPI document, the validator and the tests
are all generated from / checked against these models, so a rule changes in one place.

Choices that apply everywhere (shown in the OpenAPI descriptions too):

- Unknown fields are kept (`extra="allow"`), never a reason to reject.
- Known fields are *strict*: `"price": "19.99"` or `"quantity": 2.5` is a wrong type, because
  silently coercing a shop's bug hides it. The exceptions are identifiers (`user_id`,
  `client_id`, `product_id`, `order_id`): shops send numeric account / product ids, so an
  integer is accepted and turned into its decimal string.
- Money and counts are non-negative; an int is accepted where a number is expected.
- `null` means "not given" for every optional field; so does a blank `email` / `phone`
  (shop back ends serialise a missing phone as `""`, and losing the whole checkout event for
  it would be worse than storing it without a phone).
"""

from __future__ import annotations

import os
import re
import zoneinfo
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, ClassVar, Literal

import phonenumbers
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    GetPydanticSchema,
    PlainValidator,
    StringConstraints,
    ValidationInfo,
    WithJsonSchema,
)
from pydantic_core import PydanticCustomError
from pydantic_core import core_schema as cs

__all__ = [
    "ALIASES",
    "EVENT_MODELS",
    "EVENT_TYPES",
    "EXAMPLES",
    "MAX_FUTURE",
    "TIME_ZONE_NAMES",
    "AnyEvent",
    "EventEnvelope",
    "LineItem",
    "RecommendedProduct",
    "canonical_event_type",
    "default_phone_region",
    "normalise_email",
    "normalise_phone",
    "one_of_error",
    "validation_context",
]

# How far in the future a client clock may be before the event is refused. Generous because
# mobile apps replay events queued offline with device clocks that can be badly wrong, yet
# anything beyond a year is a unit bug (ms vs s, wrong year), not a clock skew.
MAX_FUTURE = timedelta(days=365)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Key under which `validation_context()` passes the latest acceptable timestamp to validators.
_LATEST = "latest_timestamp"

ID_MAX = 256  # fits a btree index entry many times over; real ids are far shorter
DEVICE_TYPES = ("web", "mobile", "ios", "android")


def validation_context(received_at: datetime) -> dict[str, Any]:
    """Context for `model_validate(..., context=...)`: the receive time bounds `timestamp`."""
    if received_at.tzinfo is None:
        received_at = received_at.replace(tzinfo=UTC)
    return {_LATEST: received_at + MAX_FUTURE}


# --------------------------------------------------------------------------- field types


def _custom_union(choices: list[cs.CoreSchema], error_type: str, message: str) -> Any:
    """A union in pydantic-core (Rust, no Python call) that reports ONE readable error."""
    return GetPydanticSchema(
        lambda _tp, _handler: cs.union_schema(
            choices, custom_error_type=error_type, custom_error_message=message
        )
    )


# Ints are accepted for identifiers (numeric account ids) and become strings, in Rust.
Identifier = Annotated[
    str,
    _custom_union(
        [
            cs.str_schema(min_length=1, max_length=ID_MAX, strict=True),
            cs.no_info_after_validator_function(str, cs.int_schema(strict=True)),
        ],
        "identifier_type",
        f"expected a non-empty string (at most {ID_MAX} characters) or an integer",
    ),
]

# Lower-case values hit the literal (fastest); other spellings are lower-cased by the pattern arm.
DeviceType = Annotated[
    str,
    _custom_union(
        [
            cs.literal_schema(list(DEVICE_TYPES)),
            cs.str_schema(
                strict=True,
                to_lower=True,
                # Case-insensitive without `(?i)`, so the same pattern works in JSON Schema
                # (ECMA-262), Python `re` and the Rust regex engine.
                pattern=r"^(?:[Ww][Ee][Bb]|[Mm][Oo][Bb][Ii][Ll][Ee]|[Ii][Oo][Ss]"
                r"|[Aa][Nn][Dd][Rr][Oo][Ii][Dd])$",
            ),
        ],
        "device_type",
        "expected one of web, mobile, ios, android (any letter case)",
    ),
    Field(description="`web`, `mobile`, `ios` or `android`, any letter case; stored lower-case."),
]

# IANA zone names, computed once: one hash lookup per event in pydantic-core (no Python call).
# `localtime` is a file of the system's tz folder, not a zone; `Factory` means "unset".
TIME_ZONE_NAMES: tuple[str, ...] = tuple(
    sorted(zoneinfo.available_timezones() - {"localtime", "Factory"})
)

# A named `ref`: the ~600 names appear once in the OpenAPI document (component
# `TimeZoneName`), not inlined in every event type.
TimeZoneName = Annotated[
    str,
    GetPydanticSchema(
        lambda _tp, _handler: cs.custom_error_schema(
            cs.literal_schema(list(TIME_ZONE_NAMES)),
            custom_error_type="timezone",
            custom_error_message="not an IANA time zone name",
            ref="TimeZoneName",
        )
    ),
]

AuthStatus = Annotated[
    bool | int,
    _custom_union(
        [cs.bool_schema(strict=True), cs.literal_schema([0, 1])],
        "auth_status",
        "expected 0, 1, true or false",
    ),
    Field(description="0/1 or false/true: whether the user is signed in."),
]

PushToken = Annotated[
    str,
    StringConstraints(strict=True, min_length=1, max_length=4096),
    Field(description="FCM registration token or APNs device token."),
]

EventIdText = Annotated[
    str,
    StringConstraints(strict=True, min_length=1, max_length=ID_MAX),
    Field(
        description="Optional idempotency key: a UUID is stored as is, any other string is "
        "mapped to a UUID v5, so a retried event is stored once. When absent the id is derived "
        "from the event's content."
    ),
]

NonNegative = Annotated[float, Field(ge=0)]
Count = Annotated[int, Field(ge=0)]
Text = Annotated[str, StringConstraints(strict=True)]
PageUrl = Annotated[
    str,
    StringConstraints(strict=True, min_length=1, max_length=8192),
    Field(description="URL of the page, or a screen name in a mobile app."),
]


def _parse_timestamp(value: Any, info: ValidationInfo) -> datetime:
    # One Python call per event: parsing, UTC conversion and the range check together.
    if not isinstance(value, str):
        raise PydanticCustomError("timestamp_type", "not an ISO 8601 date-time string")
    try:
        if len(value) < 11:  # a bare date has no time of day: a client bug, not an event time
            raise ValueError(value)
        ts = datetime.fromisoformat(value)
    except ValueError:
        raise PydanticCustomError("timestamp_parsing", "not an ISO 8601 date-time") from None
    try:
        ts = ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)
    except OverflowError:  # year 1 or 9999 shifted out of range by its offset
        raise _too_early() if ts.year < 1970 else _too_late() from None
    if ts < EPOCH:
        raise _too_early()
    ctx = info.context
    latest = ctx.get(_LATEST) if isinstance(ctx, dict) else None
    if latest is None:
        latest = datetime.now(UTC) + MAX_FUTURE
    if ts > latest:
        raise _too_late()
    return ts


def _too_early() -> PydanticCustomError:
    return PydanticCustomError("timestamp_range", "before 1970-01-01T00:00:00Z")


def _too_late() -> PydanticCustomError:
    return PydanticCustomError(
        "timestamp_range", "more than 365 days after the time the event was received"
    )


Timestamp = Annotated[
    datetime,
    PlainValidator(_parse_timestamp, json_schema_input_type=str),
    WithJsonSchema(
        {
            "type": "string",
            "format": "date-time",
            "description": "ISO 8601 date-time of the event on the client. Without a zone it "
            "is UTC; stored converted to UTC. Refused before 1970 or more than 365 days after "
            "the time it was received.",
        }
    ),
]


def _check_iso_date(value: str) -> str:
    try:
        if len(value) == 10:
            date.fromisoformat(value)
        else:
            datetime.fromisoformat(value)
    except ValueError:
        raise PydanticCustomError("date_parsing", "not an ISO 8601 date or date-time") from None
    return value  # the raw event keeps the original text; dbt types it


IsoDate = Annotated[
    str,
    StringConstraints(strict=True),
    AfterValidator(_check_iso_date),
    WithJsonSchema(
        {
            "type": "string",
            "description": "ISO 8601 date (`2024-11-02`) or date-time; no zone means UTC.",
        }
    ),
]

# Mirrors `normalise_email` for JSON Schema users: blank, or something@something with no spaces.
EMAIL_PATTERN = r"^\s*(?:\S+@[^\s@]+)?\s*$"
_EMAIL_RE = re.compile(r"\S+@[^\s@]+")


def normalise_email(value: str) -> str | None:
    """Trimmed and lower-cased; blank means "not given" (None). Refused without an `@`, with
    an empty part on either side of the last `@`, or with white space inside."""
    value = value.strip()
    if not value:
        return None
    if _EMAIL_RE.fullmatch(value) is None:
        raise PydanticCustomError("email", "not an e-mail address")
    return value.lower()


def default_phone_region() -> str:
    """Region for numbers written without `+`/`00`: env `CRM_PHONE_REGION`, default `RU`
    (the original spec's market). Read per call so a test or a shop can change it."""
    return os.environ.get("CRM_PHONE_REGION", "RU").strip().upper() or "RU"


def normalise_phone(value: str) -> str | None:
    """E.164 digits without `+` (`'8 (916) 123-45-67'` -> `'79161234567'` with region RU).

    Numbers written with a leading `+` or `00` are parsed internationally; others in the
    default region (`default_phone_region()`). Blank means "not given" (None); an unparsable
    number, or one that `phonenumbers` says cannot exist, is refused.
    """
    text = value.strip()
    if not text:
        return None
    if text.startswith("00"):
        text = "+" + text[2:]
    try:
        number = phonenumbers.parse(text, None if text.startswith("+") else default_phone_region())
    except phonenumbers.NumberParseException:
        raise PydanticCustomError("phone", "not a phone number") from None
    if not phonenumbers.is_valid_number(number):
        raise PydanticCustomError("phone", "not a valid phone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)[1:]


Email = Annotated[
    str,
    StringConstraints(strict=True, max_length=320, pattern=EMAIL_PATTERN),
    AfterValidator(normalise_email),
    Field(description="Trimmed and lower-cased; blank means not given."),
]
Phone = Annotated[
    str,
    StringConstraints(strict=True, max_length=64),
    AfterValidator(normalise_phone),
    Field(
        description="Any common notation; stored as E.164 digits without `+`. Without `+`/`00` "
        "the number is read in the shop's region (env `CRM_PHONE_REGION`, default RU). Blank "
        "means not given."
    ),
]


# --------------------------------------------------------------------------- models

_CONFIG = ConfigDict(
    extra="allow",  # unknown fields are kept with the raw event
    strict=True,  # a known field of the wrong type is refused, not coerced
    allow_inf_nan=False,
    json_schema_extra=lambda schema, cls: _one_of_schema(schema, cls),
)


def _present(field: str) -> dict[str, Any]:
    prop: dict[str, Any] = {"not": {"type": "null"}}
    if field in ("email", "phone"):
        prop["pattern"] = r"\S"  # blank e-mail / phone counts as not given
    return {"required": [field], "properties": {field: prop}}


def _one_of_schema(schema: dict[str, Any], cls: Any) -> None:
    # Express `REQUIRE_ONE_OF` in JSON Schema too, so the OpenAPI document matches the validator.
    groups = getattr(cls, "REQUIRE_ONE_OF", ())
    if groups:
        schema["allOf"] = [{"anyOf": [_present(f) for f in group]} for group in groups]


class EventEnvelope(BaseModel):
    """Fields any event may carry. `event` and `timestamp` are required; so is `client_id`
    unless `user_id` is given (an event must belong to a device or to an account): the
    `REQUIRE_ONE_OF` groups, checked by `one_of_error` once pydantic-core has validated the
    fields."""

    model_config = _CONFIG

    # Each group needs at least one non-null member; the first name is the one reported.
    REQUIRE_ONE_OF: ClassVar[tuple[tuple[str, ...], ...]] = (("client_id", "user_id"),)

    event: str = Field(description="Event type (see the tracking plan).")
    timestamp: Timestamp
    client_id: Identifier | None = Field(
        None,
        description="Device / browser id generated by the tracker. Required unless `user_id` "
        "is given. An integer is accepted and stored as a string.",
    )
    user_id: Identifier | None = Field(
        None,
        description="The shop's own account id, when the user is signed in. An integer is "
        "accepted and stored as a string.",
    )
    event_id: EventIdText | None = None
    device_type: DeviceType | None = None
    timezone: TimeZoneName | None = Field(
        None,
        description="IANA time zone of the device (`Europe/Moscow`), exactly as the tz "
        "database spells it; an offset (`UTC+3`) is refused: only a zone name carries the "
        "daylight-saving rules that local send times and quiet hours need. The browser "
        "tracker sends `Intl.DateTimeFormat().resolvedOptions().timeZone`; mobile apps send "
        "the device zone, `TimeZone.current.identifier` on iOS and "
        "`ZoneId.systemDefault().id` on Android. Omit it when unknown.",
    )
    push_token: PushToken | None = None
    auth_status: AuthStatus | None = None
    email: Email | None = None
    phone: Phone | None = None


class LineItem(BaseModel):
    """One line of a cart or an order. `product_id` is required; `quantity` (default meaning
    1) and `price` (unit price) are optional and non-negative."""

    model_config = _CONFIG

    product_id: Identifier
    quantity: Count | None = None
    price: NonNegative | None = None


class RecommendedProduct(BaseModel):
    """One recommended product: `product_id` is required."""

    model_config = _CONFIG

    product_id: Identifier
    product_name: Text | None = None


# --- 1. user


class UserLoginEvent(EventEnvelope):
    """1.1 A user signed in. Needs at least one of `user_id`, `email`, `phone` (who signed in),
    besides the envelope's `client_id`-or-`user_id` rule."""

    REQUIRE_ONE_OF: ClassVar[tuple[tuple[str, ...], ...]] = (
        ("client_id", "user_id"),
        ("user_id", "email", "phone"),
    )
    event: Literal["user_login"]


class UserLogoutEvent(EventEnvelope):
    """1.2 A user signed out. No own fields."""

    event: Literal["user_logout"]


# --- 2. site / app


class PageViewEvent(EventEnvelope):
    """2.1 A page (or app screen) was shown. `page_visit` (the original spec's example) is an
    alias stored as `page_view`. `page_url` is optional because the original example omits it."""

    event: Literal["page_view", "page_visit"]
    page_url: PageUrl | None = None
    referrer: Text | None = Field(None, description="Previous page; may be empty.")


class TimeOnPageEvent(EventEnvelope):
    """2.2 Time spent on a page. Requires `page_url` and `time_spent` (seconds, >= 0)."""

    event: Literal["time_on_page"]
    page_url: PageUrl
    time_spent: NonNegative = Field(description="Seconds spent on the page, >= 0.")


# --- 3. products and cart


class ProductViewEvent(EventEnvelope):
    """3.1 A product card was viewed. Requires `product_id`; `price` >= 0."""

    event: Literal["product_view"]
    product_id: Identifier
    product_name: Text | None = None
    category: Text | None = None
    price: NonNegative | None = None


class AddToCartEvent(EventEnvelope):
    """3.2 A product was added to the cart. Requires `product_id`; `quantity` (integer) and
    `price` are >= 0."""

    event: Literal["add_to_cart"]
    product_id: Identifier
    product_name: Text | None = None
    quantity: Count | None = None
    price: NonNegative | None = None


class RemoveFromCartEvent(EventEnvelope):
    """3.3 A product was removed from the cart. Requires `product_id`."""

    event: Literal["remove_from_cart"]
    product_id: Identifier


# --- 4. checkout


class CheckoutStartEvent(EventEnvelope):
    """4.1 Checkout started. Requires `cart_items` (at least one line); `total_price` >= 0."""

    event: Literal["checkout_start"]
    cart_items: list[LineItem] = Field(min_length=1)
    total_price: NonNegative | None = None


class OrderCompleteEvent(EventEnvelope):
    """4.2 An order was placed. Requires `order_id` and `order_items` (at least one line);
    `total_price` >= 0; `shipping_address` is a string or an object."""

    event: Literal["order_complete"]
    order_id: Identifier
    order_items: list[LineItem] = Field(min_length=1)
    total_price: NonNegative | None = None
    shipping_address: Text | dict[str, Any] | None = None
    payment_method: Text | None = None


class CheckoutAbandonmentEvent(EventEnvelope):
    """4.3 Checkout abandoned. `cart_items` is optional: the tracker may no longer know the
    cart when it notices the abandonment."""

    event: Literal["checkout_abandonment"]
    cart_items: list[LineItem] | None = None


# --- 5. payment


class PaymentSuccessEvent(EventEnvelope):
    """5.1 A payment went through. Requires `order_id` and `payment_amount` (>= 0)."""

    event: Literal["payment_success"]
    order_id: Identifier
    payment_amount: NonNegative
    payment_method: Text | None = None


class PaymentFailureEvent(EventEnvelope):
    """5.2 A payment failed. Requires `order_id`."""

    event: Literal["payment_failure"]
    order_id: Identifier
    error_message: Text | None = None


# --- 6. push

# The id of the push.deliveries row a push came from, as the push's data carried it.
DeliveryId = Annotated[str, StringConstraints(
    pattern=r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")]


class PushReceivedEvent(EventEnvelope):
    """6.1 A push notification reached the device. Requires `push_token`."""

    event: Literal["push_received"]
    push_token: PushToken
    notification_type: Text | None = None
    # push.deliveries' id, sent in the push's data: ties the receipt to its campaign.
    delivery_id: DeliveryId | None = None


class PushOpenedEvent(EventEnvelope):
    """6.2 A push notification was opened. Requires `push_token`."""

    event: Literal["push_opened"]
    push_token: PushToken
    notification_type: Text | None = None
    # push.deliveries' id, sent in the push's data: the open rate per campaign joins on it.
    delivery_id: DeliveryId | None = None


# --- 7. behaviour


class SearchEvent(EventEnvelope):
    """7.1 A product search. Requires a non-empty `search_query`."""

    event: Literal["search"]
    search_query: Annotated[str, StringConstraints(strict=True, min_length=1)]


class ScrollEvent(EventEnvelope):
    """7.2 The page was scrolled. Requires `page_url` and `scroll_depth` (percent, 0-100)."""

    event: Literal["scroll"]
    page_url: PageUrl
    scroll_depth: float = Field(ge=0, le=100, description="Percent of the page scrolled.")


class ClickEvent(EventEnvelope):
    """7.3 A click on an element. Requires `page_url` and `clicked_element`."""

    event: Literal["click"]
    page_url: PageUrl
    clicked_element: Text = Field(description="Element id, CSS selector or label.")


# --- 8. geo


class GeoLocationEvent(EventEnvelope):
    """8.1 Device location. Requires `latitude` (-90..90) and `longitude` (-180..180)."""

    event: Literal["geo_location"]
    latitude: float = Field(ge=-90, le=90)
    longitude: float = Field(ge=-180, le=180)


# --- 9. history imports


class PurchaseHistoryEvent(EventEnvelope):
    """9.1 A past order imported from the shop. Requires `order_id`, `order_items` (at least
    one line), `total_price` (>= 0) and `purchase_date` (ISO 8601 date or date-time)."""

    event: Literal["purchase_history"]
    order_id: Identifier
    order_items: list[LineItem] = Field(min_length=1)
    total_price: NonNegative
    purchase_date: IsoDate


class VisitHistoryEvent(EventEnvelope):
    """9.2 Past visits imported from the shop. Requires `page_url`; `visit_count` >= 0;
    `last_visit` is an ISO 8601 date or date-time."""

    event: Literal["visit_history"]
    page_url: PageUrl
    visit_count: Count | None = None
    last_visit: IsoDate | None = None


# --- 10. recommendations


class UserRecommendationEvent(EventEnvelope):
    """10.1 The CRM generated recommendations. Requires `recommended_products` (at least one)."""

    event: Literal["user_recommendation"]
    recommended_products: list[RecommendedProduct] = Field(min_length=1)


EVENT_MODELS: dict[str, type[EventEnvelope]] = {
    "user_login": UserLoginEvent,
    "user_logout": UserLogoutEvent,
    "page_view": PageViewEvent,
    "time_on_page": TimeOnPageEvent,
    "product_view": ProductViewEvent,
    "add_to_cart": AddToCartEvent,
    "remove_from_cart": RemoveFromCartEvent,
    "checkout_start": CheckoutStartEvent,
    "order_complete": OrderCompleteEvent,
    "checkout_abandonment": CheckoutAbandonmentEvent,
    "payment_success": PaymentSuccessEvent,
    "payment_failure": PaymentFailureEvent,
    "push_received": PushReceivedEvent,
    "push_opened": PushOpenedEvent,
    "search": SearchEvent,
    "scroll": ScrollEvent,
    "click": ClickEvent,
    "geo_location": GeoLocationEvent,
    "purchase_history": PurchaseHistoryEvent,
    "visit_history": VisitHistoryEvent,
    "user_recommendation": UserRecommendationEvent,
}
EVENT_TYPES: tuple[str, ...] = tuple(EVENT_MODELS)

# A field that is in every `REQUIRE_ONE_OF` group of every event type: given, it satisfies them
# all, so an event that has it needs no look at the groups (most events, a Python call spared).
ONE_OF_SHORTCUT = "user_id"
assert all(ONE_OF_SHORTCUT in group for model in EVENT_MODELS.values()
           for group in model.REQUIRE_ONE_OF), "ONE_OF_SHORTCUT must be in every group"


def one_of_error(model: EventEnvelope) -> str | None:
    """The error of the first `REQUIRE_ONE_OF` group of which `model` has no member
    ("client_id: required unless user_id is given"), or None. A check of the validated model,
    not a pydantic model validator: that would be a Python callback per event inside
    pydantic-core's validation, for a rule that an event with `ONE_OF_SHORTCUT` always meets."""
    for first, *others in model.REQUIRE_ONE_OF:
        if getattr(model, first) is None and all(getattr(model, f) is None for f in others):
            return f"{first}: required unless {' or '.join(others)} is given"
    return None
ALIASES: dict[str, str] = {"page_visit": "page_view"}


def canonical_event_type(name: str) -> str:
    return ALIASES.get(name, name)


# Discriminated on `event` inside pydantic-core: one dict lookup picks the model.
AnyEvent = Annotated[
    UserLoginEvent
    | UserLogoutEvent
    | PageViewEvent
    | TimeOnPageEvent
    | ProductViewEvent
    | AddToCartEvent
    | RemoveFromCartEvent
    | CheckoutStartEvent
    | OrderCompleteEvent
    | CheckoutAbandonmentEvent
    | PaymentSuccessEvent
    | PaymentFailureEvent
    | PushReceivedEvent
    | PushOpenedEvent
    | SearchEvent
    | ScrollEvent
    | ClickEvent
    | GeoLocationEvent
    | PurchaseHistoryEvent
    | VisitHistoryEvent
    | UserRecommendationEvent,
    Field(discriminator="event"),
]


# --------------------------------------------------------------------------- examples

_TS = "2024-12-07T10:00:00Z"
_WEB = {"client_id": "CID123456", "device_type": "web", "timezone": "Europe/Moscow"}
_APP = {
    "client_id": "a8f1c2d4-6b0e-4f3a-9c57-2e81d0b6f4aa", "device_type": "android",
    "timezone": "Asia/Yekaterinburg",
}
_FCM = "fcm:dXN1cjEyMzQ1Njc4OTA6QVBBOTFiSGtMcFhfZXhhbXBsZV90b2tlbg"

EXAMPLES: dict[str, dict[str, Any]] = {
    "user_login": {
        "event": "user_login", "timestamp": _TS, **_WEB, "user_id": "U-10042",
        "email": "Anna.Petrova@example.com", "phone": "+7 916 123-45-67", "auth_status": 1,
    },
    "user_logout": {
        "event": "user_logout", "timestamp": "2024-12-07T11:42:10Z", **_WEB, "user_id": "U-10042",
    },
    "page_view": {
        "event": "page_view", "timestamp": "2024-12-07T10:00:05.123Z", **_WEB,
        "page_url": "https://shop.example.com/catalog/shoes?sort=price",
        "referrer": "https://www.google.com/",
    },
    "time_on_page": {
        "event": "time_on_page", "timestamp": "2024-12-07T10:01:05Z", **_WEB,
        "page_url": "https://shop.example.com/catalog/shoes", "time_spent": 60.5,
    },
    "product_view": {
        "event": "product_view", "timestamp": "2024-12-07T13:01:10+03:00", **_WEB,
        "product_id": "SKU-1042", "product_name": "Trail running shoes", "category": "Shoes",
        "price": 5990.0,
    },
    "add_to_cart": {
        "event": "add_to_cart", "timestamp": "2024-12-07T10:02:00Z", **_WEB, "user_id": 10042,
        "product_id": "SKU-1042", "product_name": "Trail running shoes", "quantity": 1,
        "price": 5990,
    },
    "remove_from_cart": {
        "event": "remove_from_cart", "timestamp": "2024-12-07T10:03:00Z", **_WEB,
        "product_id": 77812,
    },
    "checkout_start": {
        "event": "checkout_start", "timestamp": "2024-12-07T10:05:00Z", **_WEB,
        "cart_items": [
            {"product_id": "SKU-1042", "quantity": 1, "price": 5990},
            {"product_id": "SKU-2210", "quantity": 2, "price": 499.5},
        ],
        "total_price": 6989.0,
    },
    "order_complete": {
        "event": "order_complete", "timestamp": "2024-12-07T10:09:30Z", **_WEB,
        "user_id": "U-10042", "event_id": "7d0f3c1e-9a52-4b8e-8f0a-3c2b1d4e5f60",
        "order_id": "ORD-2024-000981",
        "order_items": [
            {"product_id": "SKU-1042", "quantity": 1, "price": 5990},
            {"product_id": "SKU-2210", "quantity": 2, "price": 499.5},
        ],
        "total_price": 6989.0, "shipping_address": "Moscow, Tverskaya st. 7, apt. 12",
        "payment_method": "card", "email": "anna.petrova@example.com", "phone": "89161234567",
        "currency": "RUB",
    },
    "checkout_abandonment": {
        "event": "checkout_abandonment", "timestamp": "2024-12-07T10:30:00Z", **_WEB,
        "cart_items": [{"product_id": "SKU-2210", "quantity": 2, "price": 499.5}],
    },
    "payment_success": {
        "event": "payment_success", "timestamp": "2024-12-07T10:09:45Z", **_WEB,
        "user_id": "U-10042", "order_id": "ORD-2024-000981", "payment_amount": 6989.0,
        "payment_method": "card",
    },
    "payment_failure": {
        "event": "payment_failure", "timestamp": "2024-12-07T10:08:12Z", **_WEB,
        "user_id": "U-10042", "order_id": "ORD-2024-000981",
        "error_message": "Card declined: insufficient funds",
    },
    "push_received": {
        "event": "push_received", "timestamp": "2024-12-08T18:30:02Z", **_APP,
        "user_id": "U-10042", "push_token": _FCM, "notification_type": "recommendation",
    },
    "push_opened": {
        "event": "push_opened", "timestamp": "2024-12-08T18:31:40Z", **_APP,
        "user_id": "U-10042", "push_token": _FCM, "notification_type": "recommendation",
        "campaign_id": "winter-sale-2024",
    },
    "search": {
        "event": "search", "timestamp": "2024-12-07T10:00:40Z", **_WEB,
        "search_query": "кроссовки для бега",
    },
    "scroll": {
        "event": "scroll", "timestamp": "2024-12-07T10:00:50Z", **_WEB,
        "page_url": "https://shop.example.com/catalog/shoes", "scroll_depth": 75,
    },
    "click": {
        "event": "click", "timestamp": "2024-12-07T10:00:55Z", **_WEB,
        "page_url": "https://shop.example.com/catalog/shoes",
        "clicked_element": "#product-SKU-1042 .add-to-cart",
    },
    "geo_location": {
        "event": "geo_location", "timestamp": "2024-12-08T09:15:00Z", **_APP,
        "latitude": 55.7558, "longitude": 37.6173,
    },
    "purchase_history": {
        "event": "purchase_history", "timestamp": "2024-12-01T00:00:00Z", "user_id": "U-10042",
        "order_id": "ORD-2023-004417",
        "order_items": [{"product_id": "SKU-0311", "quantity": 1, "price": 2490}],
        "total_price": 2490, "purchase_date": "2023-11-02",
    },
    "visit_history": {
        "event": "visit_history", "timestamp": "2024-12-01T00:00:00Z", "user_id": "U-10042",
        "page_url": "https://shop.example.com/catalog/jackets", "visit_count": 14,
        "last_visit": "2024-11-28T19:44:00+03:00",
    },
    "user_recommendation": {
        "event": "user_recommendation", "timestamp": "2024-12-08T03:00:00Z",
        "user_id": "U-10042",
        "recommended_products": [
            {"product_id": "SKU-2210", "product_name": "Running socks"},
            {"product_id": "SKU-3301", "product_name": "Windbreaker"},
        ],
    },
}
