"""The collector's OpenAPI document: complete, well-formed, and in step with the validator."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from collector.catalogue import ALIASES, EVENT_MODELS, EVENT_TYPES, EXAMPLES
from collector.openapi import build_openapi
from collector.validation import validate_events

jsonschema = pytest.importorskip("jsonschema")

RECEIVED = datetime(2025, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return build_openapi()


def validator(doc: dict[str, Any], component: str) -> Any:
    """A JSON Schema validator for one component; `#/components/...` refs resolve in `doc`."""
    schema = {"$ref": f"#/components/schemas/{component}", "components": doc["components"]}
    return jsonschema.Draft202012Validator(schema)


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for v in node.values() for r in refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in refs(v)]
    return []


def test_document_is_openapi_3_1_json(doc):
    assert doc["openapi"].startswith("3.1.")
    assert doc["info"]["title"] and doc["info"]["version"]
    assert orjson.loads(orjson.dumps(doc)) == doc  # plain JSON, nothing Python-only


def test_every_ref_resolves(doc):
    schemas = doc["components"]["schemas"]
    found = refs(doc)
    assert found, "expected the events to be referenced components"
    for ref in found:
        assert ref.startswith("#/components/schemas/"), ref
        assert ref.rsplit("/", 1)[-1] in schemas, ref


def test_every_component_schema_is_valid_json_schema_2020_12(doc):
    schemas = doc["components"]["schemas"]
    for schema in schemas.values():
        jsonschema.Draft202012Validator.check_schema(schema)  # raises SchemaError if malformed
    assert {"Event", "EventsBody", "EventBatch", "Accepted", "Error"} <= set(schemas)
    assert set(schemas) >= {model.__name__ for model in EVENT_MODELS.values()}


def test_paths_and_responses(doc):
    paths = doc["paths"]
    assert set(paths) == {"/v1/events", "/healthz", "/metrics", "/v1/tracker.js", "/openapi.json"}
    post = paths["/v1/events"]["post"]
    assert {"202", "400", "401", "413", "503"} <= set(post["responses"])
    assert "Retry-After" in post["responses"]["503"]["headers"]
    assert post["requestBody"]["required"] is True
    encoding = [p for p in post["parameters"] if p["name"] == "Content-Encoding"]
    assert encoding and "gzip" in encoding[0]["schema"]["enum"]
    schemes = doc["components"]["securitySchemes"]
    used = {name for requirement in post["security"] for name in requirement}
    assert {(schemes[n]["in"], schemes[n]["name"]) for n in used} == {
        ("header", "X-Write-Key"), ("query", "write_key")}
    for path in ("/healthz", "/metrics", "/v1/tracker.js", "/openapi.json"):
        assert "200" in paths[path]["get"]["responses"], path
    ids = [op["operationId"] for item in paths.values() for op in item.values()]
    assert len(ids) == len(set(ids))


def test_document_lists_every_event_type_and_the_alias(doc):
    event = doc["components"]["schemas"]["Event"]
    mapping = event["discriminator"]["mapping"]
    assert event["discriminator"]["propertyName"] == "event"
    assert set(mapping) == set(EVENT_TYPES) | set(ALIASES)
    assert mapping["page_visit"] == mapping["page_view"]
    assert len(event["oneOf"]) == len(EVENT_TYPES)
    for name, model in EVENT_MODELS.items():
        component = doc["components"]["schemas"][mapping[name].rsplit("/", 1)[-1]]
        assert component["title"] == model.__name__
        assert component["additionalProperties"] is True  # unknown fields are kept
        assert component["description"]  # the rule, from the model's docstring
        assert name in event["description"]


@pytest.mark.parametrize("name", EVENT_TYPES)
def test_each_example_validates_against_the_document(doc, name):
    item = EXAMPLES[name]
    assert list(validator(doc, "Event").iter_errors(item)) == []
    body = validator(doc, "EventsBody")
    for shape in (item, [item, item], {"batch": [item]}):
        assert list(body.iter_errors(shape)) == [], shape
    events, rejections = validate_events([item], RECEIVED)
    assert len(events) == 1 and not rejections


def test_documented_request_examples_are_valid(doc):
    media = doc["paths"]["/v1/events"]["post"]["requestBody"]["content"]["application/json"]
    body = validator(doc, "EventsBody")
    assert {n for n in media["examples"]} >= set(EVENT_TYPES)
    for name, ex in media["examples"].items():
        assert list(body.iter_errors(ex["value"])) == [], name


@pytest.mark.parametrize("name", EVENT_TYPES)
def test_schema_and_validator_agree_on_missing_required_fields(doc, name):
    event_schema = validator(doc, "Event")
    required = EVENT_MODELS[name].model_json_schema()["required"]
    for field in required:
        item = copy.deepcopy(EXAMPLES[name])
        del item[field]
        assert not event_schema.is_valid(item), field
        assert validate_events([item], RECEIVED)[1], field


@pytest.mark.parametrize(
    "item",
    [
        {**EXAMPLES["product_view"], "price": -1},
        {**EXAMPLES["product_view"], "price": "5990"},
        {**EXAMPLES["geo_location"], "latitude": 91},
        {**EXAMPLES["page_view"], "device_type": "tablet"},
        {**EXAMPLES["page_view"], "event": "teleport"},
        {**EXAMPLES["page_view"], "client_id": None},
        {k: v for k, v in EXAMPLES["user_login"].items() if k not in ("user_id", "email", "phone")},
        {**EXAMPLES["order_complete"], "order_items": []},
        {**EXAMPLES["search"], "client_id": True},
    ],
)
def test_schema_and_validator_agree_on_invalid_events(doc, item):
    assert not validator(doc, "Event").is_valid(item)
    assert validate_events([item], RECEIVED)[1]


def test_case_insensitive_device_type_is_valid_in_both(doc):
    item = {**EXAMPLES["page_view"], "device_type": "iOS"}
    assert validator(doc, "Event").is_valid(item)
    assert validate_events([item], RECEIVED)[0][0].device_type == "ios"


def test_batch_wrapper_and_event_are_mutually_exclusive_shapes(doc):
    body = validator(doc, "EventsBody")
    assert not body.is_valid({"batch": []})
    assert not body.is_valid([])
    assert not body.is_valid(42)
    # An event carrying a `batch` field is an event, as parse_body decides.
    assert body.is_valid({**EXAMPLES["click"], "batch": "lot-7"})


def test_accepted_response_schema_matches_the_collector_shape(doc):
    accepted = validator(doc, "Accepted")
    assert accepted.is_valid({"accepted": 2, "rejected": [{"index": 1, "errors": ["event: x"]}]})
    assert not accepted.is_valid({"accepted": -1, "rejected": []})
    assert not accepted.is_valid({"accepted": 1})


def test_build_returns_a_fresh_copy():
    first = build_openapi()
    first["paths"].clear()
    assert build_openapi()["paths"]


def test_openapi_spec_validator_if_installed(doc):
    osv = pytest.importorskip("openapi_spec_validator")
    osv.validate(doc)
