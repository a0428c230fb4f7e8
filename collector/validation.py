"""Turn a request body into validated, normalised events (or per-item rejections).

The rules live in `collector.catalogue`; this module parses bodies, runs the catalogue over a
batch as fast as pydantic-core allows, and shapes the result for storage.

Event ids (`Event.event_id`), chosen so that every way an event can arrive twice is stored once:

- a valid UUID string in `event_id` (any form `uuid.UUID` reads) is used as is;
- any other non-empty `event_id` string becomes `uuid5(EVENT_ID_NAMESPACE, event_id)`, so a
  client that retries with its own ids stays idempotent;
- without `event_id`, the id is `uuid5(EVENT_ID_NAMESPACE, canonical JSON of the original
  event)` (orjson, keys sorted), so re-importing the same file, or a retried request from a
  client that sends no ids, is idempotent too. Two truly identical events (same device, same
  timestamp to the microsecond, same fields) collapse into one, which is what a retry looks
  like anyway.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from pydantic import TypeAdapter, ValidationError

from collector import jsonparse
from collector.catalogue import (
    ALIASES,
    AnyEvent,
    EventEnvelope,
    one_of_error,
    validation_context,
)

__all__ = [
    "EVENT_ID_NAMESPACE",
    "MAX_EVENT_BYTES",
    "BodyError",
    "Event",
    "Rejection",
    "derive_event_id",
    "parse_body",
    "validate_events",
]

# Fixed forever: changing it would give every re-imported event a new id (duplicates).
EVENT_ID_NAMESPACE = uuid.UUID("c4aa9c17-555b-4da7-82e4-b4b7a65bd555")
_NS_BYTES = EVENT_ID_NAMESPACE.bytes

# Segment's limit per event: one event is a page of data, not a file upload.
MAX_EVENT_BYTES = 32 * 1024
# orjson serialises at most 254 levels of nesting; deeper items cannot be stored.
MAX_DEPTH = 254

_ONE: TypeAdapter[EventEnvelope] = TypeAdapter(AnyEvent)
# What a UUID object is made of (3.11: its `int` and `is_safe` slots): an event id read from
# its text is built without `uuid.UUID.__init__`'s checks of which argument was given (a
# third of the id's cost per event).
_new, _set, _UUID, _UNKNOWN = object.__new__, object.__setattr__, uuid.UUID, uuid.SafeUUID.unknown


@dataclass(slots=True)
class Event:
    """A validated, normalised event, ready for storage."""

    event_id: uuid.UUID
    event_type: str  # canonical name ('page_visit' -> 'page_view')
    event_ts: datetime  # tz-aware UTC
    client_id: str | None
    user_id: str | None
    device_type: str | None
    push_token: str | None
    email: str | None  # trimmed, lower-cased
    phone: str | None  # E.164 digits without '+', e.g. '79161234567'
    payload: dict  # the original event object exactly as received
    payload_json: str  # `payload` serialised once, checked storable (see `_storable`)
    index: int  # position in the submitted batch


@dataclass(slots=True)
class Rejection:
    index: int  # position in the submitted batch
    errors: list[str]  # each names the field: "timestamp: not an ISO 8601 date-time"
    item: Any  # the original item as received


class BodyError(ValueError):
    """The whole body is unusable: not JSON, not an object or array, or empty."""


_JSON_TYPE_NAMES = {
    dict: "object", list: "array", str: "string", int: "integer", float: "number",
    bool: "boolean", type(None): "null",
}


def _json_type(value: Any) -> str:
    return _JSON_TYPE_NAMES.get(type(value), type(value).__name__)


def parse_body(body: bytes) -> list[Any]:
    """Body is one event object, a JSON array of events, or `{"batch": [...]}`.

    Returns the list of items; items may be non-objects (rejected per item later). An object
    counts as the batch wrapper only when it has `batch` and no `event`, so an event that
    happens to carry a `batch` field (a product batch number) stays an event. Other keys of
    the wrapper (`sentAt`, `context`...) are ignored. Raises `BodyError` when the body is empty,
    not JSON, a JSON scalar, or an empty batch.
    """
    try:
        data = jsonparse.loads(body)
    except ValueError as exc:  # orjson.JSONDecodeError, or nesting too deep for the slow path
        if not bytes(body).strip():
            raise BodyError("empty body: expected an event, an array of events or "
                            '{"batch": [...]}') from None
        raise BodyError(f"body is not valid JSON: {exc}") from None
    if isinstance(data, dict):
        if "batch" in data and "event" not in data:
            items = data["batch"]
            if not isinstance(items, list):
                raise BodyError(f'"batch" must be an array of events, got {_json_type(items)}')
        else:
            items = [data]
    elif isinstance(data, list):
        items = data
    else:
        raise BodyError(
            f"expected an event object, an array of events or {{\"batch\": [...]}}, "
            f"got {_json_type(data)}"
        )
    if not items:
        raise BodyError("empty batch: no events to store")
    return items


def _uuid5(name: bytes) -> uuid.UUID:
    # Same result as uuid.uuid5(EVENT_ID_NAMESPACE, name) but takes bytes (3.11's does not).
    return uuid.UUID(bytes=hashlib.sha1(_NS_BYTES + name).digest()[:16], version=5)


def derive_event_id(event_id: str | None, item: dict) -> uuid.UUID:
    """The stored id of an event (see the module docstring for the rules)."""
    if event_id is None:
        # Raises orjson.JSONEncodeError for objects JSON cannot carry (only from Python callers).
        return _uuid5(orjson.dumps(item, option=orjson.OPT_SORT_KEYS))
    digits = event_id.replace("-", "")
    if len(digits) == 32:
        # What uuid.UUID(event_id) does with such a text (nothing else of it to strip: "urn:",
        # "uuid:" and braces are not hexadecimal, so int() refuses them), without its checks.
        try:
            value = int(digits, 16)
        except ValueError:
            pass
        else:
            made = _new(_UUID)
            _set(made, "int", value)
            _set(made, "is_safe", _UNKNOWN)
            return made
    try:
        return uuid.UUID(event_id)
    except ValueError:
        return _uuid5(event_id.encode("utf-8", "surrogatepass"))


def _path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _messages(exc: ValidationError, item: Any, in_list: bool) -> dict[int, list[str]]:
    """Pydantic errors -> {index: ["field: message", ...]}, index 0 unless `in_list`."""
    out: dict[int, list[str]] = {}
    items = item if in_list else None
    for err in exc.errors(include_url=False, include_input=False):
        loc = err["loc"]
        index = 0
        if in_list:
            index, loc = loc[0], loc[1:]
            item = items[index]  # type: ignore[index]
        kind = err["type"]
        if kind == "union_tag_not_found":
            text = "event: field required"
        elif kind == "union_tag_invalid":
            name = item.get("event") if isinstance(item, dict) else getattr(item, "event", None)
            text = (
                f"event: unknown event type {name!r}"
                if isinstance(name, str)
                else f"event: expected a string, got {_json_type(name)}"
            )
        elif not loc:  # the item itself is not an object
            text = f"item: expected a JSON object, got {_json_type(item)}"
        else:
            # loc[0] is the discriminator tag (the event type); the field path follows.
            field = _path(loc[1:]) or (err.get("ctx") or {}).get("field") or "item"
            msg = err["msg"]
            text = f"{field}: {msg[:1].lower()}{msg[1:]}"
        out.setdefault(index, []).append(text)
    return out


def validate_events(
    items: list[Any], received_at: datetime, *, max_event_bytes: int = MAX_EVENT_BYTES
) -> tuple[list[Event], list[Rejection]]:
    """Validate each item independently: valid ones become `Event`s, the others `Rejection`s.

    `received_at` bounds `timestamp` (at most 365 days after it). An event must also be
    storable as sent (`_storable`) and at most `max_event_bytes` as JSON. One bad event never
    costs the others anything. Items are expected to be JSON values (as from `parse_body`);
    an object JSON cannot carry is rejected, not raised.
    """
    if not isinstance(items, list):
        items = list(items)
    context = validation_context(received_at)
    # One pydantic-core call per item, not one for the list: a list call gives no partial
    # results, so a batch with one bad item had to be validated twice, and item by item is
    # no slower for a clean batch either (3.3 against 3.6 us per event, measured).
    validate = _ONE.validator.validate_python  # pydantic-core's, without the adapter's wrapper
    models: list[Any] = [None] * len(items)
    bad: dict[int, list[str]] = {}
    for i, item in enumerate(items):
        try:
            models[i] = validate(item, context=context)
        except ValidationError as exc:
            bad[i] = _messages(exc, item, in_list=False)[0]
    return _build(items, models, bad, max_event_bytes)


def _unstorable(item: Any, exc: Exception | None) -> str:
    """Name what makes `item` impossible to store exactly, with the field's path."""
    found = jsonparse.find(item, lambda v: isinstance(v, jsonparse.InexactNumber))
    if found:
        return (f"{_printable(found[0])}: number {found[1].text} cannot be stored exactly "
                "(beyond a 64-bit integer or a double's precision); send it as a string")
    found = jsonparse.find(item, _has_nul)
    if found:
        return (f"{_printable(found[0])}: contains a NUL character (\\u0000), "
                "which cannot be stored")
    if exc is not None and "recursion" in str(exc).lower():
        field = "item"
        if isinstance(item, dict):  # name the top-level field that is too deep
            for key, value in item.items():
                try:
                    orjson.dumps(value)
                except TypeError:
                    field = _printable(str(key))
                    break
        return f"{field}: nested deeper than {MAX_DEPTH} levels"
    return "item: not representable as JSON"


def _printable(text: str) -> str:
    return text.replace("\x00", "\\u0000")


def _has_nul(value: Any) -> bool:
    return isinstance(value, str) and "\x00" in value


def _storable(item: Any, max_bytes: int) -> tuple[str | None, str | None]:
    """(JSON text of `item`, None) if it can be stored as sent, else (None, the error)."""
    try:
        data = orjson.dumps(item)
    except TypeError as exc:  # orjson.JSONEncodeError: too deep, an InexactNumber, not JSON
        return None, _unstorable(item, exc)
    # PostgreSQL's text and jsonb cannot hold U+0000. The escape's text may also be an escaped
    # backslash followed by "u0000" (the six characters \u0000 sent as text): look before refusing.
    if b"\\u0000" in data and jsonparse.find(item, _has_nul):
        return None, _unstorable(item, None)
    if len(data) > max_bytes:
        return None, f"item: {len(data)} bytes as JSON, over the limit of {max_bytes} per event"
    return data.decode(), None


def _build(
    items: list[Any], models: list[Any], bad: dict[int, list[str]], max_event_bytes: int
) -> tuple[list[Event], list[Rejection]]:
    events: list[Event] = []
    rejections: list[Rejection] = []
    aliases = ALIASES
    for i, (model, item) in enumerate(zip(models, items, strict=True)):
        if model is None:
            rejections.append(Rejection(i, [_printable(e) for e in bad[i]], item))
            continue
        # The "one of" groups (catalogue.one_of_error), for an event without the field that
        # meets them all; as a pydantic model validator they failed validation itself, so an
        # event with other errors is reported without this one, as then.
        error = one_of_error(model) if model.user_id is None else None
        if error is not None:
            rejections.append(Rejection(i, [error], item))
            continue
        payload_json, error = _storable(item, max_event_bytes)
        if error is not None:
            rejections.append(Rejection(i, [error], item))
            continue
        try:
            event_id = derive_event_id(model.event_id, item)
        except (TypeError, ValueError):  # orjson.JSONEncodeError: not JSON (Python callers)
            rejections.append(Rejection(i, ["item: not representable as JSON"], item))
            continue
        name = model.event
        events.append(
            Event(
                event_id,
                aliases.get(name, name),
                model.timestamp,
                model.client_id,
                model.user_id,
                model.device_type,
                model.push_token,
                model.email,
                model.phone,
                item,
                payload_json,
                i,
            )
        )
    return events, rejections
