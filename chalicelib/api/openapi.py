"""The API contract as an OpenAPI 3.1 document, served at /openapi.json.

A test keeps it true: every route of the app is here with its methods, and
schemathesis checks the running API against it (no 5xx, no status, header
or body the document does not declare).
"""

from __future__ import annotations

import functools
from typing import Any

from chalicelib.auth import ERASE, FEED, OPERATE, READ, WRITE

_UUID = {"type": "string", "format": "uuid", "example": "123e4567-e89b-12d3-a456-426614174000"}
_TIME = {"type": "string", "format": "date-time"}

_HEADER_SCHEMAS = {
    "X-Correlation-Id": ("Echoes the request's X-Correlation-Id, or one made up for this request.",
                         {"type": "string"}),
    "ETag": ('The customer\'s version in quotes, e.g. "3": send it back as If-Match.', {"type": "string"}),
    "Location": ("Where the new customer is read.", {"type": "string"}),
    "X-Read-Source": ("Where the answer came from.", {"type": "string", "enum": ["read-model", "event-store"]}),
    "Idempotent-Replayed": ("Present when this is the stored answer to an earlier request with the same "
                            "Idempotency-Key.", {"type": "string", "enum": ["true"]}),
    "Retry-After": ("Seconds to wait before trying again.", {"type": "string", "pattern": "^[0-9]+$"}),
}


def _headers(*names: str, required: tuple[str, ...] = ()) -> dict:
    return {name: {"description": _HEADER_SCHEMAS[name][0], "schema": _HEADER_SCHEMAS[name][1],
                   "required": name in required or name == "X-Correlation-Id"}
            for name in ("X-Correlation-Id", *names)}


def _json(schema_ref: str) -> dict:
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema_ref}"}}}


def _error(description: str) -> dict:
    return {"description": description, "headers": _headers(), "content": _json("Error")}


def _query(name: str, description: str, schema: dict) -> dict:
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema}


def _header(name: str, description: str, schema: dict | None = None) -> dict:
    return {"name": name, "in": "header", "required": False, "description": description,
            "schema": schema or {"type": "string"}}


_CUSTOMER_ID = {"name": "customer_id", "in": "path", "required": True, "description": "The customer's id.",
                "schema": _UUID}
_IF_MATCH = _header("If-Match", 'Only if the customer is at this version, e.g. "3" (otherwise 412).')
_IDEMPOTENCY_KEY = _header("Idempotency-Key", "Run at most once per key; a retry gets the first answer.",
                           {"type": "string", "minLength": 1, "maxLength": 255})
_CORRELATION = _header("X-Correlation-Id", "Stored with every event the request causes, and echoed.",
                       {"type": "string", "pattern": "^[A-Za-z0-9._:\\-]{1,128}$"})

_CONSISTENCY = _query("consistency", "strong: from the event store, the caller's own write of a moment ago"
                                     " included.", {"type": "string", "enum": ["strong", "eventual"]})

_BAD_REQUEST = _error("The request is malformed; the message says what to change. Nothing was stored.")
_NOT_FOUND = _error("No such customer (or it was deleted).")
_CONFLICT = _error("The email belongs to another customer, or the command lost the race for the customer"
                   " too many times (try again). Nothing was stored.")
_PRECONDITION = _error("If-Match names a version the customer has moved past. Nothing was stored.")
_UNSUPPORTED = _error("The body is not sent as application/json.")
_KEY_REUSED = _error("The Idempotency-Key was used before for a different request.")
_BAD_CORRELATION_ID = _error("The X-Correlation-Id is malformed (every route checks it).")
_CHALLENGE = {"WWW-Authenticate": {"description": "How to authenticate (RFC 6750).", "required": True,
                                   "schema": {"type": "string"}}}
_UNAUTHENTICATED = {"description": "No bearer token, or not a valid one. Nothing was read or stored.",
                    "headers": {**_headers(), **_CHALLENGE}, "content": _json("Error")}
_FOUND = {"description": "The live customers with this email (none or one).",
          "headers": _headers("X-Read-Source", required=("X-Read-Source",)), "content": _json("CustomerList")}
_FORBIDDEN = {"description": "The token lacks the scope this needs. Nothing was read or stored.",
              "headers": {**_headers(), **_CHALLENGE}, "content": _json("Error")}


def _secured(operation: dict, scope: str) -> dict:
    """A data route: a bearer token with `scope`, refused with 401 or 403."""
    return {**operation, "security": [{"bearer": [scope]}],
            "responses": {**operation["responses"], "401": _UNAUTHENTICATED, "403": _FORBIDDEN}}


def _health(why: str) -> dict[str, Any]:
    return {"400": _BAD_CORRELATION_ID,
            "200": {"description": "Healthy.", "headers": _headers(), "content": _json("Health")},
            "503": {"description": f"Unhealthy: {why}.", "headers": _headers(), "content": _json("Health")}}


def _document(operation_id: str, summary: str, what: str, content_type: str) -> dict[str, Any]:
    """A public GET of a document the service serves."""
    schema = {"type": "object"} if content_type == "application/json" else {"type": "string"}
    return {"get": _public({
        "operationId": operation_id, "summary": summary, "parameters": [_CORRELATION],
        "responses": {"200": {"description": what, "headers": _headers(),
                              "content": {content_type: {"schema": schema}}},
                      "400": _BAD_CORRELATION_ID},
    })}


def _public(operation: dict) -> dict:
    return {**operation, "security": []}


def _command_answer(description: str, status_headers: tuple[str, ...] = ()) -> dict:
    return {"description": description,
            "headers": _headers("ETag", *status_headers, "Idempotent-Replayed", required=("ETag", *status_headers)),
            "content": _json("Customer")}


@functools.cache  # the same for the container's lifetime
def document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Customer service",
            "version": "1.0.0",
            "description": "An event-sourced customer service: every change is an event; reads come from a "
                           "read model kept from Kafka, or from the event store when asked for a version it "
                           "has not reached yet.",
        },
        "paths": {
            "/customer": {"post": _secured({
                "operationId": "createCustomer",
                "summary": "Create a customer",
                "parameters": [_IDEMPOTENCY_KEY, _CORRELATION],
                "requestBody": {"required": True, "content": _json("NewCustomer")},
                "responses": {
                    "201": _command_answer("Created.", ("Location",)),
                    "400": _BAD_REQUEST, "409": _CONFLICT, "415": _UNSUPPORTED, "422": _KEY_REUSED,
                },
            }, WRITE)},
            "/customer/{customer_id}": {
                "get": _secured({
                    "operationId": "getCustomer",
                    "summary": "Read a customer, or the state it had at a version or a moment",
                    "parameters": [
                        _CUSTOMER_ID, _CORRELATION,
                        _query("min_version", "Answer at least this version (read your own writes).",
                               {"type": "integer", "minimum": 1, "maximum": 999_999_999}),
                        _CONSISTENCY,
                        _query("version", "The time machine: the state at this version.",
                               {"type": "integer", "minimum": 1, "maximum": 999_999_999}),
                        _query("as_of", "The time machine: the state at this moment (RFC 3339 with an offset).",
                               _TIME),
                    ],
                    "responses": {
                        "200": {"description": "The customer (with `deleted` when asked for a version or moment).",
                                "headers": _headers("ETag", "X-Read-Source", required=("ETag", "X-Read-Source")),
                                "content": _json("CustomerState")},
                        "400": _BAD_REQUEST, "404": _NOT_FOUND,
                    },
                }, READ),
                "delete": _secured({
                    "operationId": "deleteCustomer",
                    "summary": "Delete a customer",
                    "parameters": [_CUSTOMER_ID, _IF_MATCH, _IDEMPOTENCY_KEY, _CORRELATION],
                    "responses": {
                        "204": {"description": "Deleted.",
                                "headers": _headers("ETag", "Idempotent-Replayed", required=("ETag",))},
                        "400": _BAD_REQUEST, "404": _NOT_FOUND, "409": _CONFLICT, "412": _PRECONDITION,
                        "422": _KEY_REUSED,
                    },
                }, WRITE),
            },
            "/customer/{customer_id}/personal-data": {"delete": _secured({
                "operationId": "erasePersonalData",
                "summary": "Erase a customer's personal data (the right to erasure); deleted customers too",
                "parameters": [_CUSTOMER_ID, _CORRELATION],
                "responses": {
                    "204": {"description": "Erased (also when it was already): the customer reads 404, its"
                                           " history lists its events with personal fields null.",
                            "headers": _headers()},
                    "400": _BAD_REQUEST, "404": _NOT_FOUND, "409": _CONFLICT,
                    "503": {**_error("The erasure could not be recorded in the erasure log, so nothing was"
                                     " erased; try again after Retry-After seconds."),
                            "headers": _headers("Retry-After", required=("Retry-After",))},
                },
            }, ERASE)},
            "/customer/{customer_id}/email": {"post": _secured({
                "operationId": "changeEmail",
                "summary": "Change a customer's email",
                "parameters": [_CUSTOMER_ID, _IF_MATCH, _IDEMPOTENCY_KEY, _CORRELATION],
                "requestBody": {"required": True, "content": _json("NewEmail")},
                "responses": {
                    "200": _command_answer("Changed (or already this email: nothing appended)."),
                    "400": _BAD_REQUEST, "404": _NOT_FOUND, "409": _CONFLICT, "412": _PRECONDITION,
                    "415": _UNSUPPORTED, "422": _KEY_REUSED,
                },
            }, WRITE)},
            "/customer/{customer_id}/events": {"get": _secured({
                "operationId": "customerHistory",
                "summary": "The customer's history: every event with its metadata, in pages",
                "parameters": [
                    _CUSTOMER_ID, _CORRELATION,
                    _query("after", "Events after this version.", {"type": "integer", "minimum": 0,
                                                                   "maximum": 999_999_999}),
                    _query("limit", "Events per page.", {"type": "integer", "minimum": 1, "maximum": 500}),
                ],
                "responses": {
                    "200": {"description": "A page of events; `next` links the following page.",
                            "headers": _headers(), "content": _json("HistoryPage")},
                    "400": _BAD_REQUEST, "404": _NOT_FOUND,
                },
            }, READ)},
            "/events": {"get": _secured({
                "operationId": "catchUpFeed",
                "summary": "Every event of every customer in commit order, a page at a time, each as the"
                           " CloudEvent on Kafka (for consumers that cannot reach it)",
                "parameters": [
                    _CORRELATION,
                    _query("after", "Go on after this position (a page's `next` gives it); the start without.",
                           {"type": "string", "pattern": "^[0-9]{1,19}\\.[0-9]{1,19}$", "example": "7301.125"}),
                    _query("limit", "Events per page.", {"type": "integer", "minimum": 1, "maximum": 1000}),
                ],
                "responses": {
                    "200": {"description": "A page; a full one (`complete`) never changes (Cache-Control:"
                                           " immutable), the last one may grow.",
                            "headers": _headers(), "content": _json("FeedPage")},
                    "400": _BAD_REQUEST,
                },
            }, FEED)},
            "/customers/search": {"post": _secured({
                "operationId": "searchCustomers",
                "summary": "Find customers by email, the email in the body: from the read model, or with"
                           " consistency strong by the email's reservation (which commits with the write) and"
                           " from the event store",
                "parameters": [_CORRELATION],
                "requestBody": {"required": True, "content": _json("EmailQuery")},
                "responses": {"200": _FOUND, "400": _BAD_REQUEST, "415": _UNSUPPORTED},
            }, READ)},
            "/customers": {"get": _secured({
                "operationId": "findCustomers",
                "summary": "Find customers by email in the query (kept for existing callers: URLs are kept in access"
                           " logs, so prefer POST /customers/search)",
                "deprecated": True,
                "parameters": [_CORRELATION, {**_query("email", "The email to look for.", {"type": "string"}),
                                              "required": True}, _CONSISTENCY],
                "responses": {"200": _FOUND, "400": _BAD_REQUEST},
            }, READ)},
            "/health": {"get": _public({
                "operationId": "health",
                "summary": "Healthy or not, for load balancers: database, outbox and read model each within its"
                           " limit (checked at most every few seconds per container; no figures, no customer data)",
                "parameters": [_CORRELATION],
                "responses": _health("/health/details says why"),
            })},
            "/health/details": {"get": _secured({
                "operationId": "healthDetails",
                "summary": "For operators: outbox backlog, parked rows, the read model's lag, and what to do"
                           " (no customer data)",
                "parameters": [_CORRELATION],
                "responses": _health("`reasons` says why"),
            }, OPERATE)},
            "/openapi.json": _document("openapi", "This document", "OpenAPI 3.1.", "application/json"),
            "/asyncapi.json": _document("asyncapi", "The contract of the events published on Kafka: one message per"
                                        " event type and schema version", "AsyncAPI 3.0.", "application/json"),
            "/docs": _document("docs", "This document, rendered (works offline)", "An HTML page.", "text/html"),
            "/docs/{asset}": {"get": _public({
                "operationId": "docsAsset",
                "summary": "The script and style sheet of the /docs page",
                "parameters": [_CORRELATION, {"name": "asset", "in": "path", "required": True,
                                              "schema": {"type": "string"}}],
                "responses": {
                    "200": {"description": "The file.", "headers": _headers(),
                            "content": {"text/javascript": {"schema": {"type": "string"}},
                                        "text/css": {"schema": {"type": "string"}}}},
                    "400": _BAD_CORRELATION_ID, "404": _error("No such file."),
                },
            })},
            **_console_paths(),
        },
        "security": [{"bearer": []}],
        "components": {"schemas": {**_SCHEMAS, **_CONSOLE_SCHEMAS}, "securitySchemes": {"bearer": {
            "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
            "description": "An access token from the configured OpenID Connect issuer (AUTH_ISSUER), for the "
                           "audience AUTH_AUDIENCE, with the scopes each operation names: customers:read to "
                           "read, customers:write to create, change and delete, customers:erase to erase "
                           "personal data, customers:operate for the detailed health report, customers:feed"
                           " for the catch-up feed. 401 without a valid token, 403 without the scope.",
        }}},
    }


_REVEAL = _query("reveal", "true: names and emails in clear (needs customers:read too; the access is logged);"
                           " masked otherwise.", {"type": "string", "enum": ["true", "false"]})
_NOT_PARKED = _error("No such parked row, or no such dead letter. Nothing was changed.")


def _console_data(operation_id: str, summary: str, schema: str, parameters: list, status: str = "200",
                  body: str | None = None, errors: dict | None = None) -> dict:
    operation = {"operationId": operation_id, "summary": summary, "parameters": [_CORRELATION, *parameters],
                 "responses": {status: {"description": "The answer (never cached).", "headers": _headers(),
                                        "content": _json(schema)},
                               "400": _BAD_REQUEST, **(errors or {})}}
    if body:
        operation["requestBody"] = {"required": True, "content": _json(body)}
    return _secured(operation, OPERATE)


def _path(name: str, description: str, schema: dict) -> dict:
    return {"name": name, "in": "path", "required": True, "description": description, "schema": schema}


def _console_paths() -> dict[str, Any]:
    """The console's page (public: it holds no data) and its routes of data
    (each needs customers:operate)."""
    page = {"description": "The file (Content-Security-Policy: scripts from this API only, none inline).",
            "headers": _headers(), "content": {"text/html": {"schema": {"type": "string"}}}}
    message_id = _path("message_id", "The dead letter's SQS message id.",
                       {"type": "string", "pattern": "^[A-Za-z0-9-]{1,100}$"})
    outbox_id = _path("outbox_id", "The parked outbox row.", {"type": "integer", "minimum": 1})
    return {
        "/console": {"get": _public({"operationId": "console", "summary": "The console, a page that signs in at"
                                     " the issuer (code flow with PKCE)", "parameters": [_CORRELATION],
                                     "responses": {"200": page, "400": _BAD_CORRELATION_ID}})},
        "/console/assets/{asset}": {"get": _public({
            "operationId": "consoleAsset", "summary": "The console's script, style sheet and icon",
            "parameters": [_CORRELATION, _path("asset", "console.js, console.css or console.svg",
                                               {"type": "string"})],
            "responses": {"200": {**page, "content": {"text/javascript": {"schema": {"type": "string"}},
                                                      "text/css": {"schema": {"type": "string"}},
                                                      "image/svg+xml": {"schema": {"type": "string"}}}},
                          "400": _BAD_CORRELATION_ID, "404": _error("No such file.")}})},
        "/console/config": {"get": _public({
            "operationId": "consoleConfig", "summary": "Where the console signs in: the issuer, its endpoints and"
                                                       " the console's client id", "parameters": [_CORRELATION],
            "responses": {"200": {"description": "Public, as an issuer's discovery document is.",
                                  "headers": _headers(), "content": _json("ConsoleConfig")},
                          "400": _BAD_CORRELATION_ID}})},
        "/console/api/customer/{customer_id}/timeline": {"get": _console_data(
            "consoleTimeline", "A customer's every event with its metadata, the state after it, and where it is"
            " now (outbox, topic partition and offset, read model)", "Timeline", [_CUSTOMER_ID, _REVEAL],
            errors={"404": _NOT_FOUND})},
        "/console/api/topic": {"get": _console_data(
            "consoleTopic", "The live topic's partitions: first and next offsets, the projection's committed one",
            "TopicPartitions", [])},
        "/console/api/topic/messages": {"get": _console_data(
            "consoleMessages", "Messages of one partition (a customer's: its key's), from the beginning, an offset,"
                               " a time or the newest, decoded, their signatures checked", "Messages", [
                _query("from", "Where to start.", {"type": "string",
                                                   "enum": ["beginning", "offset", "time", "newest"]}),
                _query("partition", "The partition (without customer).", {"type": "integer", "minimum": 0}),
                _query("offset", "With from=offset.", {"type": "integer", "minimum": 0}),
                _query("since", "With from=time.", _TIME), _query("until", "No message after.", _TIME),
                _query("type", "Event types, comma-separated.", {"type": "string"}),
                _query("customer", "Only this customer's messages.", _UUID),
                _query("limit", "Messages at most.", {"type": "integer", "minimum": 1, "maximum": 500}),
                _REVEAL])},
        "/console/api/operations": {"get": _console_data(
            "consoleOperations", "The operator's view: outbox per shard, parked rows, projection lag per"
                                 " partition, dead letters, backfills, health", "Operations", [])},
        "/console/api/outbox/{outbox_id}/retry": {"post": _console_data(
            "consoleRetryParked", "Unpark an outbox row: the relay tries it again (logged with who)", "Done",
            [outbox_id], errors={"404": _NOT_PARKED})},
        "/console/api/outbox/{outbox_id}/skip": {"post": _console_data(
            "consoleSkipParked", "Give up on a parked outbox row: its customer's later events go on; consumers"
                                 " never see it (logged with who)", "Done", [outbox_id],
            errors={"404": _NOT_PARKED})},
        "/console/api/dead-letters/{message_id}/replay": {"post": _console_data(
            "consoleReplayDeadLetter", "Re-project the customers a dead letter names from the store, then delete"
                                       " it (logged with who)", "Done", [message_id], errors={"404": _NOT_PARKED})},
        "/console/api/dead-letters/{message_id}/discard": {"post": _console_data(
            "consoleDiscardDeadLetter", "Delete a dead letter unreplayed (logged with who)", "Done", [message_id],
            errors={"404": _NOT_PARKED})},
        "/console/api/backfills": {"post": _console_data(
            "consoleStartBackfill", "Ask for a backfill (the scheduled backfill_events function runs it)",
            "Backfill", [], status="201", body="NewBackfill", errors={"415": _UNSUPPORTED})},
    }


_ANY = {"type": "object"}
_CONSOLE_SCHEMAS: dict[str, Any] = {
    "ConsoleConfig": {"type": "object", "required": ["issuer", "client_id", "authorization_endpoint",
                                                     "token_endpoint", "scope"],
                      "properties": {name: {"type": ["string", "null"]} for name in (
                          "issuer", "client_id", "authorization_endpoint", "token_endpoint", "scope")}},
    "Timeline": {"type": "object", "required": ["customer_id", "revealed", "events", "read_model", "differences"],
                 "properties": {"customer_id": _UUID, "revealed": {"type": "boolean"},
                                "events": {"type": "array", "items": {"type": "object", "required": [
                                    "version", "type", "schema_version", "recorded_at", "data", "state_after",
                                    "where"]}},
                                "read_model": {"type": ["object", "null"]},
                                "differences": {"type": "array", "items": {"type": "string"}},
                                "more": {"type": "boolean"}, "topic_error": {"type": ["string", "null"]}}},
    "TopicPartitions": {"type": "object", "required": ["topic", "partitions"],
                        "properties": {"topic": {"type": "string"}, "group_id": {"type": "string"},
                                       "partitions": {"type": "array", "items": _ANY}}},
    "Messages": {"type": "object", "required": ["topic", "partition", "messages", "revealed"],
                 "properties": {"topic": {"type": "string"}, "partition": {"type": "integer"},
                                "revealed": {"type": "boolean"}, "messages": {"type": "array", "items": {
                                    "type": "object", "required": ["partition", "offset", "signature"]}}}},
    "Operations": {"type": "object", "required": ["shards", "parked", "lag", "dead_letters", "backfills",
                                                  "problems", "health"],
                   "properties": {"health": {"$ref": "#/components/schemas/Health"}}},
    "Done": _ANY,
    "Backfill": {"type": "object", "required": ["id", "topic", "state"],
                 "properties": {"id": {"type": "integer"}, "topic": {"type": "string"}, "state": {"type": "string"}}},
    "NewBackfill": {"type": "object", "required": ["topic"], "additionalProperties": False, "properties": {
        "topic": {"type": "string", "minLength": 1}, "customer_id": _UUID,
        "event_types": {"type": "array", "items": {"type": "string", "minLength": 1}},
        "after_position": {"type": "integer", "minimum": 0}, "rate_limit": {"type": "integer", "minimum": 1}}},
}

_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object", "required": ["Code", "Message"],
        "properties": {"Code": {"type": "string", "example": "BadRequestError"}, "Message": {"type": "string"}},
    },
    "NewCustomer": {
        "type": "object", "required": ["name", "email"], "additionalProperties": False,
        "properties": {"name": {"type": "string", "minLength": 1, "maxLength": 200, "example": "Ada Lovelace"},
                       "email": {"type": "string", "format": "email", "maxLength": 254,
                                 "example": "ada@example.com"}},
    },
    "NewEmail": {
        "type": "object", "required": ["email"], "additionalProperties": False,
        "properties": {"email": {"type": "string", "format": "email", "maxLength": 254,
                                 "example": "ada@engine.org"}},
    },
    "EmailQuery": {
        "type": "object", "required": ["email"], "additionalProperties": False,
        "properties": {"email": {"type": "string", "format": "email", "maxLength": 254,
                                 "example": "ada@example.com"},
                       "consistency": {"type": "string", "enum": ["eventual", "strong"], "default": "eventual",
                                       "description": "strong: the caller's own write of a moment ago is found"}},
    },
    "Customer": {
        "type": "object", "required": ["id", "name", "email", "version"],
        "properties": {"id": _UUID, "name": {"type": "string"}, "email": {"type": "string"},
                       "version": {"type": "integer", "minimum": 1}},
    },
    "CustomerState": {
        "type": "object", "required": ["id", "name", "email", "version", "created_at", "updated_at"],
        "properties": {"id": _UUID, "name": {"type": ["string", "null"]}, "email": {"type": ["string", "null"]},
                       "version": {"type": "integer", "minimum": 1}, "created_at": _TIME, "updated_at": _TIME,
                       "deleted": {"type": "boolean"},
                       "erased": {"type": "boolean", "description": "Its personal data was erased: null."}},
    },
    "CustomerList": {
        "type": "object", "required": ["customers"],
        "properties": {"customers": {"type": "array", "items": {"$ref": "#/components/schemas/CustomerState"}}},
    },
    "HistoryEntry": {
        "type": "object",
        "required": ["version", "type", "time", "recorded_at", "event_id", "correlation_id", "schema_version", "data"],
        "properties": {
            "version": {"type": "integer", "minimum": 1}, "type": {"type": "string"}, "time": _TIME,
            "recorded_at": _TIME, "event_id": {"type": "string"}, "correlation_id": {"type": ["string", "null"]},
            "causation_id": {"type": ["string", "null"]}, "schema_version": {"type": "integer"},
            "data": {"type": "object"},
            "erased": {"type": "boolean", "description": "Personal data erased: its fields in data are null."},
        },
    },
    "FeedPage": {
        "type": "object", "required": ["events", "next", "complete"],
        "properties": {
            "events": {"type": "array", "items": {"type": "object", "required": ["feedposition"],
                       "description": "A CloudEvent as on Kafka (see /asyncapi.json), with its `feedposition`."}},
            "next": {"type": "string", "description": "The page after this one."},
            "complete": {"type": "boolean", "description": "A full page, which never changes."}},
    },
    "HistoryPage": {
        "type": "object", "required": ["events", "next"],
        "properties": {"events": {"type": "array", "items": {"$ref": "#/components/schemas/HistoryEntry"}},
                       "next": {"type": ["string", "null"]}},
    },
    "Health": {
        "type": "object", "required": ["status", "database"],
        "properties": {
            "status": {"type": "string", "enum": ["ok", "unhealthy"]},
            "database": {"type": "string", "enum": ["reachable", "unreachable"]},
            "outbox": {"type": "object", "properties": {
                "unpublished": {"type": "integer"}, "oldest_age_seconds": {"type": ["number", "null"]},
                "parked": {"type": "integer"}}},
            "projection": {"type": "object", "properties": {
                "events_behind": {"type": "integer"}, "lag_seconds": {"type": ["number", "null"]}}},
            "reasons": {"type": "array", "items": {"type": "string"}},
        },
    },
}
