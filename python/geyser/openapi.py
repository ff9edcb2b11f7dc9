"""The HTTP API's OpenAPI 3 description, served at ``GET /openapi.json`` (``geyser.web``
mounts ``OpenApiHandler``): each registered job type's ``POST /jobs/<type>`` body from its
marshmallow schema, the other routes of ``geyser.web.routes()``, and their JSON errors.

Built on each request from ``geyser.registry`` as it is then, so job types registered after
the app was made are described too. Reads the registry and job schemas only.
"""

from __future__ import annotations

from typing import Any

import marshmallow
from marshmallow import fields, validate

from geyser import registry
from geyser.web import MAX_INTEGER, MIN_INTEGER, GeyserHandler

__all__ = ["OpenApiHandler", "describe", "field_schema", "schema_body"]

_JSON = "application/json"
_FORMATS: list[tuple[type[fields.Field], dict[str, Any]]] = [
    (fields.UUID, {"type": "string", "format": "uuid"}),
    (fields.DateTime, {"type": "string", "format": "date-time"}),
    (fields.Date, {"type": "string", "format": "date"}),
    (fields.Time, {"type": "string", "format": "time"}),
    (fields.Email, {"type": "string", "format": "email"}),
    (fields.Url, {"type": "string", "format": "uri"}),
    (fields.String, {"type": "string"}),
    (fields.Boolean, {"type": "boolean"}),
    (fields.Integer, {"type": "integer", "minimum": MIN_INTEGER, "maximum": MAX_INTEGER}),
    (fields.Number, {"type": "number"}),
]


def _validators(field: fields.Field, described: dict[str, Any]) -> dict[str, Any]:
    """``described`` narrowed by the field's ``OneOf``, ``Range``, ``Length`` and ``Regexp`` validators."""
    for check in field.validators:
        if isinstance(check, validate.OneOf):
            described["enum"] = list(check.choices)
        elif isinstance(check, validate.Range):
            bounds = ((check.min, check.min_inclusive, "minimum"), (check.max, check.max_inclusive, "maximum"))
            for bound, inclusive, key in bounds:
                old = described.get(key)
                tighter = old is None or (bound > old if key == "minimum" else bound < old)
                if bound is not None and tighter:
                    described[key] = bound
                    if not inclusive:
                        described[f"exclusive{key.capitalize()}"] = True
        elif isinstance(check, validate.Length):
            array = described.get("type") == "array"
            if check.equal is not None:
                lo = hi = check.equal
            else:
                lo, hi = check.min, check.max
            if lo is not None:
                described["minItems" if array else "minLength"] = lo
            if hi is not None:
                described["maxItems" if array else "maxLength"] = hi
        elif isinstance(check, validate.Regexp):
            described["pattern"] = check.regex.pattern
    return described


def field_schema(field: fields.Field) -> dict[str, Any]:
    """The JSON Schema (OpenAPI 3.0 dialect) of the values ``field`` loads; ``{}`` (any
    value) for a field kind it does not know."""
    if isinstance(field, fields.Nested):
        nested = field.schema
        described = schema_body(nested)
        if field.many:
            described = {"type": "array", "items": described}
    elif isinstance(field, fields.List):
        described = {"type": "array", "items": field_schema(field.inner)}
    elif isinstance(field, fields.Tuple):
        items = [field_schema(f) for f in field.tuple_fields]
        described = {"type": "array", "minItems": len(items), "maxItems": len(items)}
        if items:
            described["items"] = {"anyOf": items}
    elif isinstance(field, fields.Dict):
        values = field.value_field
        described = {"type": "object", "additionalProperties": field_schema(values) if values is not None else {}}
    else:
        described = next((dict(s) for kind, s in _FORMATS if isinstance(field, kind)), {})
        if isinstance(field, getattr(fields, "Enum", ())):  # marshmallow 3.18 and later
            enum_field: Any = field
            described = {"enum": [m.value if enum_field.by_value else m.name for m in enum_field.enum]}
    if field.allow_none:
        described["nullable"] = True
    return _validators(field, described)


def schema_body(schema: marshmallow.Schema) -> dict[str, Any]:
    """The JSON object ``schema`` loads: its loadable fields under their data keys, the
    required ones listed, other keys refused unless the schema lets unknown keys through."""
    properties: dict[str, Any] = {}
    required: list[str] = []
    for name, field in schema.fields.items():
        if field.dump_only:
            continue
        key = field.data_key or name
        properties[key] = field_schema(field)
        if field.required:
            required.append(key)
    described: dict[str, Any] = {"type": "object", "properties": properties,
                                 "additionalProperties": schema.unknown != marshmallow.RAISE}
    if required:
        described["required"] = required
    return described


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {_JSON: {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _uuid_parameter() -> dict[str, Any]:
    return {"name": "uuid", "in": "path", "required": True, "schema": {"type": "string"},
            "description": "the job's uuid, as POST answered it"}


def _document(status: str, description: str) -> dict[str, Any]:
    return {status: {"description": description,
                     "content": {_JSON: {"schema": {"$ref": "#/components/schemas/Progress"}}}}}


def describe(prefix: str = "", *, token: bool = False) -> dict[str, Any]:
    """The OpenAPI 3.0 document of ``geyser.web.routes(prefix)`` for the job types
    registered now. ``token``: the routes need a bearer token (``401`` without it)."""
    p = prefix.rstrip("/")
    common = {"400": _error("bad input: the message says what, and where"),
              "503": _error("the store or the queue is unavailable")}
    if token:
        common["401"] = _error("missing or wrong bearer token")
    paths: dict[str, Any] = {}
    for job_type, cls in sorted(registry.job_classes().items()):
        paths[f"{p}/jobs/{job_type}"] = {"post": {
            "summary": f"enqueue a job of type {job_type}",
            "operationId": f"enqueue_{job_type}",
            "requestBody": {"required": True, "content": {_JSON: {"schema": schema_body(cls.SCHEMA())}}},
            "responses": {
                "201": {"description": "enqueued; Location names the job",
                        "content": {_JSON: {"schema": {"type": "object", "required": ["uuid"],
                                                       "properties": {"uuid": {"type": "string"}}}}}},
                "413": _error("request body over the size limit"),
                **common,
            },
        }}
    not_found = {"404": _error("no such job")}
    paths[f"{p}/jobs/{{uuid}}"] = {
        "parameters": [_uuid_parameter()],
        "get": {"summary": "the job's progress document", "operationId": "get_job",
                "responses": {**_document("200", "the job"), **not_found, **common}},
        "delete": {"summary": "request the job's cancellation", "operationId": "cancel_job",
                   "responses": {**_document("202", "cancellation requested"), **not_found,
                                 "409": _error("the job has already finished"), **common}},
    }
    paths[f"{p}/jobs/{{uuid}}/retry"] = {
        "parameters": [_uuid_parameter()],
        "post": {"summary": "queue a failed or cancelled job again", "operationId": "retry_job",
                 "responses": {**_document("202", "queued again"), **not_found,
                               "409": _error("the job is neither failed nor cancelled"), **common}},
    }
    paths[f"{p}/jobs/{{uuid}}/events"] = {
        "parameters": [_uuid_parameter()],
        "get": {"summary": "server-sent events: the progress document on each change", "operationId": "job_events",
                "responses": {"200": {"description": "one `data:` line per change; ends after a terminal status",
                                      "content": {"text/event-stream": {"schema": {"type": "string"}}}},
                              **not_found, **common}},
    }
    paths[f"{p}/healthz"] = {"get": {"summary": "store and queue reachable", "operationId": "health",
                                     "responses": {"200": {"description": "both answered",
                                                           "content": {_JSON: {"schema": {"type": "object"}}}},
                                                   **common}}}
    paths[f"{p}/metrics"] = {"get": {"summary": "Prometheus metrics", "operationId": "metrics",
                                     "responses": {"200": {"description": "Prometheus text format",
                                                           "content": {"text/plain": {"schema": {"type": "string"}}}},
                                                   **common}}}
    paths[f"{p}/openapi.json"] = {"get": {"summary": "this description", "operationId": "openapi",
                                          "responses": {"200": {"description": "OpenAPI 3.0",
                                                                "content": {_JSON: {"schema": {"type": "object"}}}},
                                                        **common}}}
    document: dict[str, Any] = {
        "openapi": "3.0.3",
        "info": {"title": "Geyser", "version": "1",
                 "description": "Enqueue jobs, follow, cancel and retry them. Every error body is JSON."},
        "paths": paths,
        "components": {"schemas": {
            "Error": {"type": "object", "required": ["error"], "properties": {
                "error": {"type": "string"},
                "errors": {"type": "object", "additionalProperties": {}},
                "status": {"type": "string"},
            }},
            "Progress": {"type": "object", "required": ["uuid", "status"], "properties": {
                "uuid": {"type": "string"}, "status": {"type": "string"}}},
        }},
    }
    if token:
        document["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        document["security"] = [{"bearer": []}]
    return document


class OpenApiHandler(GeyserHandler):
    """``GET /openapi.json``: ``describe()`` of the routes this handler is mounted beside."""

    def get(self) -> None:
        self.write_json(200, describe(self.api_options.get("prefix", ""), token=bool(self.token)))
