"""The Kafka contract: /asyncapi.json is a valid AsyncAPI 3.0 document (the
official JSON Schema, offline), names every event type the code publishes,
and a compatibility guard holds the code to the schemas as released."""

import copy
import dataclasses
import json
from pathlib import Path

import pytest
from chalice.test import Client
from jsonschema import Draft7Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

from app import app
from chalicelib.api import asyncapi
from chalicelib.domain.customer import CustomerEmailChanged, registry
from chalicelib.eventstore.events import DomainEvent

OFFICIAL = Path(__file__).resolve().parents[1] / "contracts" / "asyncapi-3.0.0.schema.json"


def official_validator() -> Draft7Validator:
    schema = json.loads(OFFICIAL.read_text())
    resources = [(uri, Resource(contents=definition, specification=DRAFT7))
                 for uri, definition in schema["definitions"].items()]
    return Draft7Validator(schema, registry=Registry().with_resources(resources))


def test_the_document_is_valid_asyncapi_3():
    errors = sorted(official_validator().iter_errors(asyncapi.document()), key=lambda e: list(e.path))
    assert [f"{list(e.path)}: {e.message}" for e in errors] == []


def test_the_validator_does_refuse_what_asyncapi_3_does_not_allow():
    broken = copy.deepcopy(asyncapi.document())
    broken["channels"]["customerEvents"]["address"] = 42
    del broken["info"]["version"]
    broken["components"]["securitySchemes"]["scram"]["type"] = "scramSha1"
    assert len(list(official_validator().iter_errors(broken))) >= 3


def test_it_is_served_public_and_linked_from_the_docs_page():
    with Client(app) as client:
        response = client.http.get("/asyncapi.json")
        assert response.status_code == 200 and response.json_body == asyncapi.document()
        assert 'href="asyncapi.json"' in client.http.get("/docs").body.decode()


def test_every_event_type_the_code_publishes_is_in_it_at_its_current_version_and_every_released_one():
    messages = asyncapi.document()["components"]["messages"]
    for cls in registry.event_classes():
        message = messages[asyncapi.message_name(cls.event_type, cls.schema_version)]
        assert message["payload"]["properties"]["data"] == asyncapi.data_schema(cls)
        assert message["description"]
    assert {asyncapi.message_name(*key) for key in asyncapi.released()} <= set(messages)
    assert "CustomerEmailChanged.v1" in messages  # consumers reading the topic from its start meet it


def test_personal_fields_are_null_once_erased_and_the_rest_as_typed():
    schema = asyncapi.data_schema(CustomerEmailChanged)
    assert schema["properties"]["email"]["type"] == ["string", "null"]
    assert schema["required"] == ["email", "previous_email"]


def test_the_code_publishes_nothing_a_consumer_of_a_released_version_could_not_read():
    assert asyncapi.breaking_changes() == []


def changed(cls, personal_data=None, **fields):
    """`cls` as it would be with these fields (name: type, or None to drop
    one), and these personal ones."""
    annotations = {f.name: f.type for f in dataclasses.fields(cls)}
    for name, kind in fields.items():
        if kind is None:
            annotations.pop(name)
        else:
            annotations[name] = kind
    namespace = {"__annotations__": annotations, "__doc__": cls.__doc__, "event_type": cls.event_type,
                 "schema_version": cls.schema_version,
                 "personal_data": cls.personal_data if personal_data is None else personal_data}
    namespace.update({name: None for name, kind in fields.items() if isinstance(kind, str) and "None" in kind
                      and name.startswith("optional")})
    return dataclasses.dataclass(frozen=True)(type(cls.__name__, (DomainEvent,), namespace))


PLANTED = {
    "a field removed": dict(previous_email=None),
    "a field renamed": dict(previous_email=None, replaced_email="str | None"),
    "a type narrowed": dict(previous_email="str", personal_data=("email",)),  # null no longer allowed
    "a type changed": dict(previous_email="int"),
    "a new required field": dict(reason="str"),
}


@pytest.mark.parametrize("change", list(PLANTED))
def test_the_guard_catches_a_planted_breaking_change_and_says_to_add_a_version(change):
    planted = changed(CustomerEmailChanged, **PLANTED[change])
    code = {**asyncapi.current(), ("CustomerEmailChanged", 2): asyncapi.data_schema(planted)}
    found = asyncapi.breaking_changes(code)
    assert found and all("CustomerEmailChanged v2" in problem for problem in found), found
    assert all("add v3 instead" in problem and "upcaster from v2" in problem for problem in found)


def test_the_guard_lets_additions_through():
    added = changed(CustomerEmailChanged, optional_note="str | None")
    code = {**asyncapi.current(), ("CustomerEmailChanged", 2): asyncapi.data_schema(added)}
    assert "optional_note" in code["CustomerEmailChanged", 2]["properties"]
    assert asyncapi.breaking_changes(code) == []
    # A new version, released beside the old one, and a new event type.
    v3 = asyncapi.data_schema(changed(CustomerEmailChanged, reason="str"))
    new_type = {"type": "object", "properties": {"phone": {"type": "string"}}, "required": ["phone"]}
    code = {**asyncapi.current(), ("CustomerEmailChanged", 3): v3, ("CustomerPhoneAdded", 1): new_type}
    released = {**asyncapi.released(), ("CustomerEmailChanged", 3): v3, ("CustomerPhoneAdded", 1): new_type}
    assert asyncapi.breaking_changes(code, released) == []


def test_an_unreleased_version_must_be_recorded():
    code = {**asyncapi.current(), ("CustomerEmailChanged", 3): asyncapi.data_schema(CustomerEmailChanged)}
    assert asyncapi.breaking_changes(code) == [
        "CustomerEmailChanged v3 is not released: record its schema with `python -m chalicelib.api.asyncapi"
        " release` and commit it"]


def test_release_records_new_versions_and_refuses_breaking_ones(tmp_path, monkeypatch):
    for path in asyncapi.SCHEMAS.glob("*.json"):
        (tmp_path / path.name).write_text(path.read_text())
    monkeypatch.setattr(asyncapi, "SCHEMAS", tmp_path)
    assert asyncapi.release(tmp_path) == []  # the repository's are up to date
    planted = changed(CustomerEmailChanged, previous_email=None)
    monkeypatch.setattr(asyncapi, "current", lambda: {("CustomerEmailChanged", 2): asyncapi.data_schema(planted)})
    with pytest.raises(ValueError, match="'previous_email' was removed"):
        asyncapi.release(tmp_path)


def test_the_guard_reports_a_field_that_is_no_longer_required():
    """A consumer of the released version counts on `previous_email` being
    there (null or not); a message without it breaks that consumer."""
    released = asyncapi.released()[("CustomerEmailChanged", 2)]
    loosened = {**released, "required": [name for name in released["required"] if name != "previous_email"]}
    code = {**asyncapi.current(), ("CustomerEmailChanged", 2): loosened}
    found = asyncapi.breaking_changes(code)
    assert any("'previous_email' is no longer required" in problem for problem in found), found
