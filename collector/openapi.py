"""The collector's OpenAPI 3.1 document, generated from the event catalogue.

The event schemas are pydantic's JSON Schemas of `collector.catalogue` (OpenAPI 3.1 uses
JSON Schema 2020-12 as is), so the document cannot drift from the validator.
"""

from __future__ import annotations

import copy
from functools import lru_cache
from typing import Any

from pydantic import TypeAdapter

from collector.catalogue import ALIASES, EVENT_MODELS, EVENT_TYPES, EXAMPLES, AnyEvent

__all__ = ["build_openapi"]

_REF = "#/components/schemas/{model}"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF.format(model=name)}


def _error_response(description: str, **extra: Any) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": _ref("Error")}},
        **extra,
    }


@lru_cache(maxsize=1)
def _document() -> dict[str, Any]:
    event_schema = TypeAdapter(AnyEvent).json_schema(ref_template=_REF)
    schemas: dict[str, Any] = event_schema.pop("$defs")
    event_schema["description"] = (
        "One event of the tracking plan, chosen by `event`. Types: "
        + ", ".join(f"`{name}`" for name in EVENT_TYPES)
        + ". `page_visit` is accepted as an alias of `page_view`. Unknown fields are kept."
    )
    schemas["Event"] = event_schema
    schemas["EventBatch"] = {
        "type": "object",
        "description": "Batch wrapper. An object counts as a wrapper only when it has `batch` "
        "and no `event`; other keys are ignored.",
        "required": ["batch"],
        "properties": {"batch": {"type": "array", "minItems": 1, "items": _ref("Event")}},
        "not": {"required": ["event"]},
    }
    schemas["EventsBody"] = {
        "description": "One event, a JSON array of events, or `{\"batch\": [...]}`. Items are "
        "validated one by one: an invalid item is reported in `rejected` and the others are "
        "stored.",
        "oneOf": [
            _ref("Event"),
            {"type": "array", "minItems": 1, "items": _ref("Event")},
            _ref("EventBatch"),
        ],
    }
    schemas["Accepted"] = {
        "type": "object",
        "required": ["accepted", "rejected"],
        "properties": {
            "accepted": {"type": "integer", "minimum": 0, "description": "Events stored."},
            "rejected_omitted": {
                "type": "integer",
                "minimum": 1,
                "description": "Rejected items beyond the first 100, counted but not listed "
                "(present only when there are some).",
            },
            "duplicates": {
                "type": "array",
                "description": "Events repeated within this request: stored once (present "
                "only when there are some).",
                "items": {
                    "type": "object",
                    "required": ["index", "duplicate_of"],
                    "properties": {
                        "index": {"type": "integer", "minimum": 0},
                        "duplicate_of": {"type": "integer", "minimum": 0},
                    },
                },
            },
            "rejected": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["index", "errors"],
                    "properties": {
                        "index": {
                            "type": "integer",
                            "minimum": 0,
                            "description": "Position of the item in the submitted batch.",
                        },
                        "errors": {
                            "type": "array",
                            "items": {"type": "string"},
                            "description": 'Each error names its field, e.g. "timestamp: not '
                            'an ISO 8601 date-time".',
                        },
                    },
                },
            },
        },
    }
    schemas["Health"] = {
        "type": "object",
        "required": ["status"],
        "properties": {
            "status": {"type": "string", "enum": ["ok", "unavailable"]},
            "database": {"type": "string", "enum": ["reachable", "unreachable"]},
        },
    }
    schemas["Error"] = {
        "type": "object",
        "required": ["error"],
        "properties": {"error": {"type": "string", "description": "What went wrong."}},
    }

    retry_after = {
        "Retry-After": {
            "description": "Seconds to wait before retrying.",
            "schema": {"type": "integer", "minimum": 0},
        }
    }
    write_key_security = [{"writeKeyHeader": []}, {"writeKeyQuery": []}]
    event_examples = {
        name: {"summary": name, "value": EXAMPLES[name]} for name in EVENT_TYPES
    }
    event_examples["original_spec_page_visit"] = {
        "summary": "the original spec's example (alias page_visit)",
        "value": {
            "client_id": "CID123456", "device_type": "web", "push_token": "TOKEN123456",
            "event": "page_visit", "timestamp": "2024-12-07T10:00:00Z",
        },
    }
    event_examples["batch"] = {
        "summary": "a batch",
        "value": {"batch": [EXAMPLES["page_view"], EXAMPLES["product_view"]]},
    }

    return {
        "openapi": "3.1.0",
        "info": {
            "title": "shop-crm collector",
            "version": "1.0.0",
            "description": "Receives tracking-plan events from web sites, mobile apps and shop "
            "back ends. Event types: " + ", ".join(EVENT_MODELS) + "; alias "
            + ", ".join(f"{a} -> {c}" for a, c in ALIASES.items()) + ".",
        },
        "paths": {
            "/v1/events": {
                "post": {
                    "operationId": "postEvents",
                    "summary": "Submit one event or a batch",
                    "description": "The body may be gzip-compressed (`Content-Encoding: "
                    "gzip`). Authenticated by the site's write key, in the `X-Write-Key` "
                    "header or the `write_key` query parameter.",
                    "security": write_key_security,
                    "parameters": [
                        {
                            "name": "Content-Encoding",
                            "in": "header",
                            "required": False,
                            "description": "`gzip` when the body is gzip-compressed.",
                            "schema": {"type": "string", "enum": ["gzip", "identity"]},
                        }
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": _ref("EventsBody"),
                                "examples": event_examples,
                            },
                        },
                    },
                    "responses": {
                        "202": {
                            "description": "Valid events were queued for storage; invalid "
                            "items are listed in `rejected` and are not retried.",
                            "content": {"application/json": {"schema": _ref("Accepted")}},
                        },
                        "400": _error_response(
                            "The body is unusable: not JSON, not an event / array / batch, "
                            "empty, or not valid gzip."
                        ),
                        "401": _error_response("Missing or unknown write key."),
                        "403": _error_response(
                            "The request's `Origin` is not allowed for this write key."
                        ),
                        "408": _error_response(
                            "Headers or body not received in time (10 s by default)."
                        ),
                        "413": _error_response(
                            "Body (or decompressed body) over 1 MB, or more than 1,000 events "
                            "in one request (both configurable). One event may be at most "
                            "32 KB as JSON; a larger one is rejected in `rejected`."
                        ),
                        "431": {
                            "description": "Request headers over 16 KB or more than 100 "
                            "(plain text; the connection is closed)."
                        },
                        "503": _error_response(
                            "Overloaded or storage unavailable; retry after `Retry-After`.",
                            headers=retry_after,
                        ),
                    },
                },
                "options": {
                    "operationId": "preflightEvents",
                    "summary": "CORS preflight for browsers",
                    "security": [],
                    "responses": {
                        "204": {"description": "The `Origin` may post events."},
                        "403": {"description": "The `Origin` is not allowed."},
                    },
                },
            },
            "/healthz": {
                "get": {
                    "operationId": "health",
                    "summary": "Liveness / readiness (checks the database)",
                    "responses": {
                        "200": {
                            "description": "Up, database reachable.",
                            "content": {"application/json": {"schema": _ref("Health")}},
                        },
                        "503": {
                            "description": "Database unreachable.",
                            "headers": retry_after,
                            "content": {"application/json": {"schema": _ref("Health")}},
                        },
                    },
                }
            },
            "/metrics": {
                "get": {
                    "operationId": "metrics",
                    "summary": "Prometheus metrics (`Authorization: Bearer <metrics token>`)",
                    "responses": {
                        "200": {
                            "description": "Prometheus text exposition format.",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        },
                        "401": _error_response("Missing or wrong metrics token."),
                        "404": _error_response("No metrics token configured: metrics off."),
                    },
                }
            },
            "/v1/tracker.js": {
                "get": {
                    "operationId": "trackerScript",
                    "summary": "The browser tracker",
                    "responses": {
                        "200": {
                            "description": "JavaScript snippet (ClientID, batching, retry).",
                            "content": {"application/javascript": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "summary": "This document",
                    "responses": {
                        "200": {
                            "description": "OpenAPI 3.1 document.",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        }
                    },
                }
            },
        },
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "writeKeyHeader": {"type": "apiKey", "in": "header", "name": "X-Write-Key"},
                "writeKeyQuery": {"type": "apiKey", "in": "query", "name": "write_key"},
            },
        },
    }


def build_openapi() -> dict[str, Any]:
    """The OpenAPI 3.1 document of the collector (a fresh copy: callers may modify it)."""
    return copy.deepcopy(_document())
