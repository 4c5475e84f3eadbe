"""The contract of what the service publishes on Kafka, as an AsyncAPI 3.0
document, served at /asyncapi.json: the topic, its key and headers, and one
message per event type and schema version, each a CloudEvent whose `data`
has the JSON Schema of that version.

The schema of an event's current version is derived from its class (its
fields, their types, the personal ones null once erased), so the document
cannot drift from what the relay publishes. Each version's schema as it was
released is kept in `event_schemas/<type>.v<version>.json`: older versions
(which consumers reading the topic from its start still meet) come from
there, and a test holds the current code to them: a change a consumer of a
released version could not read fails, and says to add a new version with
an upcaster instead (`compatibility_problems`).

    python -m chalicelib.api.asyncapi release   records the current versions' schemas
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import sys
import types
import typing
from pathlib import Path
from typing import Any

from chalicelib.eventstore.events import DomainEvent

SCHEMAS = Path(__file__).parent / "event_schemas"
TOPIC = "customer-events"
ERASED = "null once the customer's personal data is erased (see CustomerPersonalDataErased)"

_JSON_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean", dict: "object", list: "array"}


def data_schema(cls: type[DomainEvent]) -> dict[str, Any]:
    """The JSON Schema of an event's `data` in its current version, from its class."""
    hints = typing.get_type_hints(cls)
    properties, required = {}, []
    for field in dataclasses.fields(cls):
        kinds = _json_types(hints[field.name])
        schema: dict[str, Any] = {"type": kinds[0] if len(kinds) == 1 else kinds}
        if field.name in cls.personal_data:
            schema = {"type": [*dict.fromkeys([*kinds, "null"])], "description": ERASED}
        properties[field.name] = schema
        if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            required.append(field.name)
    paragraphs = inspect.cleandoc(cls.__doc__ or "").split("\n\n")
    description = "\n\n".join(" ".join(paragraph.split()) for paragraph in paragraphs)
    return {"title": f"{cls.event_type} v{cls.schema_version}", "description": description,
            "type": "object", "properties": properties, "required": required}


def _json_types(hint: Any) -> list[str]:
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return [kind for member in typing.get_args(hint) for kind in _json_types(member)]
    if hint is type(None):
        return ["null"]
    return [_JSON_TYPES[typing.get_origin(hint) or hint]]


def released() -> dict[tuple[str, int], dict[str, Any]]:
    """Every released version's data schema, by (event type, version)."""
    found = {}
    for path in sorted(SCHEMAS.glob("*.v*.json")):
        event_type, _, version = path.stem.rpartition(".v")
        found[event_type, int(version)] = json.loads(path.read_text())
    return found


def current() -> dict[tuple[str, int], dict[str, Any]]:
    """What the code publishes now: each event type's current version."""
    from chalicelib.domain.customer import registry

    return {(cls.event_type, cls.schema_version): data_schema(cls) for cls in registry.event_classes()}


def data_schemas() -> dict[tuple[str, int], dict[str, Any]]:
    """Every version a consumer may meet: the released ones, the current ones as the code has them."""
    return dict(sorted({**released(), **current()}.items()))


def compatibility_problems(event: str, old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What a consumer of `old` (a released version's schema) could not read
    in messages of `new`: a field removed or renamed, its type changed, a new
    field required, a field no longer required. An optional field added is
    fine."""
    problems = []
    old_fields, new_fields = old.get("properties", {}), new.get("properties", {})
    old_required, new_required = set(old.get("required", [])), set(new.get("required", []))
    for name, schema in old_fields.items():
        if name not in new_fields:
            problems.append(f"field {name!r} was removed or renamed")
        elif _kinds(schema) != _kinds(new_fields[name]):
            problems.append(f"field {name!r} changed type from {_kinds(schema)} to {_kinds(new_fields[name])}")
    for name in sorted(new_required - old_required):
        problems.append(f"field {name!r} is " + ("required now" if name in old_fields else "new and required"))
    for name in sorted(old_required - new_required):
        if name in new_fields:
            problems.append(f"field {name!r} is no longer required")
    return [f"{event}: {problem}" for problem in problems]


def breaking_changes(code: dict | None = None, released_schemas: dict | None = None) -> list[str]:
    """Where the code publishes, under a released version, what that
    version's consumers could not read; each with what to do instead."""
    code = current() if code is None else code
    released_schemas = released() if released_schemas is None else released_schemas
    found = []
    for (event_type, version), schema in code.items():
        old = released_schemas.get((event_type, version))
        if old is None:
            found.append(f"{event_type} v{version} is not released: record its schema with"
                         " `python -m chalicelib.api.asyncapi release` and commit it")
            continue
        for problem in compatibility_problems(f"{event_type} v{version}", old, schema):
            found.append(f"{problem}. Consumers of v{version} could not read it: leave v{version} as it was"
                         f" released and add v{version + 1} instead (schema_version = {version + 1} on the class,"
                         f" an upcaster from v{version} registered, then release its schema)")
    return found


def _kinds(schema: dict[str, Any]) -> list[str]:
    kinds = schema.get("type", [])
    return sorted([kinds] if isinstance(kinds, str) else kinds)


def _envelope(event_type: str, version: int, data: dict[str, Any]) -> dict[str, Any]:
    """The CloudEvent that carries a version of an event type (chalicelib.eventstore.cloudevents)."""
    uuid_ = {"type": "string", "format": "uuid"}
    required = ["specversion", "id", "source", "type", "subject", "time", "datacontenttype", "data",
                "streamtype", "streamversion", "position"]
    return {
        "type": "object",
        # Messages published before schemaversion existed are version 1 and lack it.
        "required": required if version == 1 else [*required, "schemaversion"],
        "properties": {
            "specversion": {"const": "1.0"},
            "id": {**uuid_, "description": "The event's id: unique, the key to deduplicate on."},
            "source": {"type": "string", "description": "EVENT_SOURCE, by default /customer-service."},
            "type": {"const": event_type},
            "subject": {**uuid_, "description": "The customer's id (also the message key)."},
            "time": {"type": "string", "format": "date-time", "description": "When the event happened."},
            "datacontenttype": {"const": "application/json"},
            "data": data,
            "schemaversion": {"const": version, "description": "The shape of data; absent on messages published"
                                                               " before it was said, which are version 1."},
            "streamtype": {"const": "Customer"},
            "streamversion": {"type": "integer", "minimum": 1,
                              "description": "The customer's version after this event: 1, 2, 3, ... per customer;"
                                             " ignore one you have applied (delivery is at least once)."},
            "position": {"type": "integer", "minimum": 1, "description": "Its position in the whole store."},
            "correlationid": {"type": ["string", "null"], "description": "The request's correlation id."},
            "causationid": {"type": ["string", "null"], "description": "The id of the request that caused it."},
            "actor": {"type": "string", "description": "The subject of the caller's token; absent on events"
                                                       " recorded before callers were known."},
            "actorclientid": {"type": "string", "description": "The client id of the caller's token."},
        },
    }


_KEY = {"type": "string", "format": "uuid", "description": "The customer's id, UTF-8."}


def message_name(event_type: str, version: int) -> str:
    return f"{event_type}.v{version}"


@functools.cache
def document() -> dict[str, Any]:
    schemas = data_schemas()
    messages = {}
    for (event_type, version), data in schemas.items():
        messages[message_name(event_type, version)] = {
            "name": event_type,
            "title": f"{event_type}, schema version {version}",
            "summary": data.get("description", "").split("\n")[0],
            "description": data.get("description", ""),
            "contentType": "application/cloudevents+json; charset=UTF-8",
            "headers": {"$ref": "#/components/schemas/headers"},
            "payload": _envelope(event_type, version, data),
            "correlationId": {"location": "$message.payload#/correlationid"},
            # Inline: a reference would match both of the binding's oneOf (reference, schema).
            "bindings": {"kafka": {"key": _KEY, "bindingVersion": "0.5.0"}},
        }
    references = {name: {"$ref": f"#/components/messages/{name}"} for name in messages}
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Customer service events",
            "version": "1.0.0",
            "description": "What happened to customers, one CloudEvent per event in each customer's order, on the"
                           " topic customer-events: keyed by customer id, delivered at least once, published by"
                           " the outbox relay. A message is signed by the relay (header signature). Consumers"
                           " dispatch on type and schemaversion; every version a consumer may meet on the topic is"
                           " here, and a released version's schema never changes in a way its consumers could not"
                           " read.",
        },
        "defaultContentType": "application/cloudevents+json; charset=UTF-8",
        "servers": {
            "msk": {"host": "{broker}:9098", "protocol": "kafka-secure",
                    "description": "Amazon MSK: TLS, and IAM access control",
                    "variables": {"broker": {"description": "A bootstrap broker of the cluster"}},
                    "security": [{"$ref": "#/components/securitySchemes/mskIam"}]},
            "selfManaged": {"host": "{broker}:9096", "protocol": "kafka-secure",
                            "description": "A self-managed Kafka: TLS, and SASL/SCRAM-SHA-512",
                            "variables": {"broker": {"description": "A bootstrap broker"}},
                            "security": [{"$ref": "#/components/securitySchemes/scram"}]},
            "local": {"host": "127.0.0.1:29092", "protocol": "kafka",
                      "description": "The broker `make run` starts (no TLS, no authentication)"},
        },
        "channels": {
            "customerEvents": {
                "address": TOPIC,
                "title": "Customer events",
                "description": "Every event of every customer, a customer's events on one partition in order.",
                "messages": references,
                "bindings": {"kafka": {"topic": TOPIC, "bindingVersion": "0.5.0"}},
            },
            "backfill": {
                "address": None,
                "title": "A backfill's topic",
                "description": "A topic of a consumer's choice (python -m ops backfill --topic T): the stored history,"
                               " as the same messages as on customer-events, each with the header replay naming the"
                               " backfill; a customer's events in order. See docs/messages.md for joining it with"
                               " customer-events.",
                "messages": references,
            },
        },
        "operations": {
            "publishCustomerEvents": {
                "action": "send",
                "channel": {"$ref": "#/channels/customerEvents"},
                "summary": "The outbox relay publishes each recorded event once it is committed (at least once).",
                "messages": [{"$ref": f"#/channels/customerEvents/messages/{name}"} for name in messages],
            },
            "publishBackfill": {
                "action": "send",
                "channel": {"$ref": "#/channels/backfill"},
                "summary": "A backfill publishes every stored event it was asked for, up to its end.",
                "messages": [{"$ref": f"#/channels/backfill/messages/{name}"} for name in messages],
            },
        },
        "components": {
            "schemas": {
                "key": _KEY,
                "headers": {
                    "type": "object",
                    "properties": {
                        "content-type": {"const": "application/cloudevents+json; charset=UTF-8"},
                        "event-type": {"type": "string", "description": "The CloudEvent's type, to route or"
                                                                        " filter without parsing the value."},
                        "signature": {"type": "string", "pattern": "^hmac-sha256=[0-9a-f]{64}$",
                                      "description": "HMAC-SHA256 of the value under the relay's key"
                                                     " (MESSAGE_SIGNING_SECRET_ARN), when signing is on."},
                        "replay": {"type": "string", "pattern": "^backfill-[0-9]+$",
                                   "description": "Only on a backfill's messages: the backfill they are a replay"
                                                  " of."},
                    },
                    "required": ["content-type", "event-type"],
                },
            },
            "messages": messages,
            "securitySchemes": {
                "mskIam": {
                    "type": "oauth2", "flows": {},
                    "description": "IAM access control of Amazon MSK, over TLS: SASL signed with the consumer's AWS"
                                   " credentials (mechanism AWS_MSK_IAM, or OAUTHBEARER with the"
                                   " aws-msk-iam-sasl-signer). The role needs kafka-cluster:Connect, DescribeTopic"
                                   " and ReadData on the topic, and DescribeGroup and AlterGroup on its group.",
                },
                "scram": {"type": "scramSha512",
                          "description": "SASL/SCRAM-SHA-512 over TLS, with a user of the cluster's."},
            },
        },
    }


def release(folder: Path = SCHEMAS) -> list[Path]:
    """Record the current versions' schemas as released: new versions, and
    additions a released version's consumers can read. Refuses anything else."""
    written, previous = [], released()
    for (event_type, version), schema in current().items():
        path = folder / f"{event_type}.v{version}.json"
        old = previous.get((event_type, version))
        if old is not None and (problems := compatibility_problems(f"{event_type} v{version}", old, schema)):
            raise ValueError("; ".join(problems))
        if old != schema:
            path.write_text(json.dumps(schema, indent=2) + "\n")
            written.append(path)
    return written


def main(argv: list[str]) -> int:
    if argv != ["release"]:
        print(__doc__)
        return 2
    for path in release():
        print(f"released {path.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
