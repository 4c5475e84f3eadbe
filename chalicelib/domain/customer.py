"""The Customer aggregate: its events, its commands, and its rules."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from chalicelib.domain.errors import CustomerAlreadyExists, CustomerNotFound
from chalicelib.domain.values import valid_email, valid_name
from chalicelib.eventstore.aggregate import Aggregate
from chalicelib.eventstore.events import DomainEvent, EventRegistry

registry = EventRegistry()

# No two live customers share an email.
EMAIL_SCOPE = "customer-email"


@registry.register
@dataclass(frozen=True)
class CustomerCreated(DomainEvent):
    """A customer was created (POST /customer): its first event."""

    personal_data = ("name", "email")
    name: str
    email: str


@registry.register
@dataclass(frozen=True)
class CustomerEmailChanged(DomainEvent):
    """The customer's email changed (POST /customer/{id}/email).

    v2 also says which email was replaced, so the audit log and consumers
    see the change whole. v1 events (before the change) read as v2 with
    previous_email None: what they did not record cannot be made up."""

    schema_version = 2
    personal_data = ("email", "previous_email")
    email: str
    previous_email: str | None


@registry.upcaster("CustomerEmailChanged", from_version=1)
def _email_changed_v1_to_v2(data: dict) -> dict:
    return {**data, "previous_email": None}


@registry.register
@dataclass(frozen=True)
class CustomerDeleted(DomainEvent):
    """The customer was deleted (DELETE /customer/{id}); its email is free again."""


@registry.register
@dataclass(frozen=True)
class CustomerPersonalDataErased(DomainEvent):
    """The customer's personal data was erased on request (its key deleted):
    consumers delete their copies. It carries no personal data itself."""


class Customer(Aggregate):
    stream_type = "Customer"
    # Snapshots of another shape are not read (the events are, instead): raise it when snapshot_state() changes.
    state_schema_version = 3
    personal_state = ("name", "email")
    personal_reservations = (EMAIL_SCOPE,)

    def __init__(self) -> None:
        super().__init__()
        self.name: str | None = None
        self.email: str | None = None
        self.deleted = False
        self.erased = False

    @property
    def exists(self) -> bool:
        return self.version > 0 and not self.deleted and not self.erased

    # Commands: check the rules, then record what happened.

    def create(self, customer_id: uuid.UUID, name: str, email: str) -> None:
        if self.version > 0:
            raise CustomerAlreadyExists(f"customer {customer_id} already exists")
        name, email = valid_name(name), valid_email(email)
        self.id = customer_id
        self._record(CustomerCreated(name=name, email=email))
        self._reserve_unique(EMAIL_SCOPE, email)

    def change_email(self, email: str) -> None:
        self.ensure_exists()
        email = valid_email(email)
        if email == self.email:
            return
        if self.email is not None:
            self._release_unique(EMAIL_SCOPE, self.email)
        self._reserve_unique(EMAIL_SCOPE, email)
        self._record(CustomerEmailChanged(email=email, previous_email=self.email))

    def delete(self) -> None:
        self.ensure_exists()
        if self.email is not None:
            self._release_unique(EMAIL_SCOPE, self.email)
        self._record(CustomerDeleted())

    def erase_personal_data(self) -> bool:
        """Deleted customers too; once is enough (False: nothing left to erase)."""
        if self.version == 0:
            raise CustomerNotFound(f"customer {self.id} not found")
        if self.erased:
            return False
        if not self.deleted and self.email is not None:
            self._release_unique(EMAIL_SCOPE, self.email)
        self._record(CustomerPersonalDataErased())
        return True

    def ensure_exists(self) -> None:
        if not self.exists:
            raise CustomerNotFound(f"customer {self.id} not found")

    # State: rebuilt from events, no rules here.

    def apply(self, event: DomainEvent) -> None:
        match event:
            case CustomerCreated(name=name, email=email):
                self.name, self.email = name, email
            case CustomerEmailChanged(email=email):
                self.email = email
            case CustomerDeleted():
                self.deleted = True
            case CustomerPersonalDataErased():
                self.name, self.email, self.erased = None, None, True
            case _:
                raise TypeError(f"Customer cannot apply {type(event).__name__}")

    def snapshot_state(self) -> dict:
        return {"name": self.name, "email": self.email, "deleted": self.deleted, "erased": self.erased}

    def restore_state(self, state: dict) -> None:
        self.name, self.email, self.deleted = state["name"], state["email"], state["deleted"]
        self.erased = state["erased"]

    def to_dict(self) -> dict:
        return {"id": str(self.id), "name": self.name, "email": self.email, "version": self.version}
