"""The application facade: everything the outside world (the HTTP views, the
scheduled outbox relay, the projection function, the operator commands)
asks of the service, each a use case (chalicelib.usecases) run on this
container's parts (chalicelib.bootstrap).

A use case's module is imported when it is first asked for: each Lambda
function's cold start pays for its own work only (the API never loads the
relay, the projection never loads the command handlers). Warm invocations
keep the facade, and so its parts, through `current()`. Tests build one with
fakes through the constructor and hand it to the app with `serve()`.
"""

from __future__ import annotations

import threading
import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any

from chalicelib.bootstrap import Bootstrap
from chalicelib.infra.settings import Settings

if TYPE_CHECKING:
    from chalicelib.auth import Caller
    from chalicelib.eventstore.events import CommandContext
    from chalicelib.eventstore.outbox import Backlog, ParkedRow
    from chalicelib.eventstore.relay import OutboxRelay, RelayResult
    from chalicelib.infra.dead_letters import DeadLetter
    from chalicelib.readmodel.projection import ProjectionResult
    from chalicelib.readmodel.rebuild import Progress, RebuildResult
    from chalicelib.readmodel.rows import CustomerRow
    from chalicelib.usecases.commands import CommandResult
    from chalicelib.usecases.erasure import ReapplyResult
    from chalicelib.usecases.health import Health
    from chalicelib.usecases.queries import CustomerRead, HistoryPage
    from chalicelib.usecases.read_side import ReplayResult


class CustomerApplication:
    def __init__(self, settings: Settings, **parts: Any) -> None:
        """`parts`: fakes for the Bootstrap (store, publish, verifier, aws)."""
        self.parts = Bootstrap(settings, **parts)

    @property
    def settings(self) -> Settings:
        return self.parts.settings

    @classmethod
    def from_env(cls) -> CustomerApplication:
        return cls(Settings.from_env())

    def close(self) -> None:
        self.parts.close()

    def authenticate(self, authorization: str | None) -> Caller:
        """The caller named by the request's Authorization header; raises
        auth.Unauthenticated when there is none or it is not valid."""
        return self.parts.verifier().verify(authorization)

    # Commands, each at most once per Idempotency-Key.

    def create_customer(self, name: str, email: str, context: CommandContext,
                        idempotency_key: str | None = None) -> CommandResult:
        from chalicelib.domain.commands import CreateCustomer
        from chalicelib.usecases import commands

        command = CreateCustomer(name=name, email=email, customer_id=uuid.uuid4())
        return commands.execute(self.parts, command, context, idempotency_key)

    def change_email(self, customer_id: uuid.UUID, email: str, context: CommandContext, *,
                     expected_version: int | None = None, idempotency_key: str | None = None) -> CommandResult:
        from chalicelib.domain.commands import ChangeEmail
        from chalicelib.usecases import commands

        command = ChangeEmail(customer_id=customer_id, email=email, expected_version=expected_version)
        return commands.execute(self.parts, command, context, idempotency_key)

    def delete_customer(self, customer_id: uuid.UUID, context: CommandContext, *,
                        expected_version: int | None = None, idempotency_key: str | None = None) -> CommandResult:
        from chalicelib.domain.commands import DeleteCustomer
        from chalicelib.usecases import commands

        command = DeleteCustomer(customer_id=customer_id, expected_version=expected_version)
        return commands.execute(self.parts, command, context, idempotency_key)

    def erase_personal_data(self, customer_id: uuid.UUID, context: CommandContext) -> bool:
        from chalicelib.usecases import erasure

        return erasure.erase_personal_data(self.parts, customer_id, context)

    def reapply_erasures(self) -> ReapplyResult:
        from chalicelib.usecases import erasure

        return erasure.reapply_erasures(self.parts)

    def encrypt_stored_events(self, progress: Progress = lambda done, total: None) -> int:
        from chalicelib.usecases import erasure

        return erasure.seal_stored_plaintext(self.parts, progress)

    def rewrap_keys(self) -> list[int]:
        from chalicelib.usecases import keys

        return keys.rewrap_keys(self.parts)

    # Queries.

    def customer(self, customer_id: uuid.UUID, *, min_version: int | None = None,
                 strong: bool = False) -> CustomerRead:
        from chalicelib.usecases import queries

        return queries.customer(self.parts, customer_id, min_version=min_version, strong=strong)

    def customer_at(self, customer_id: uuid.UUID, *, version: int | None = None,
                    as_of: datetime | None = None) -> CustomerRow:
        from chalicelib.usecases import queries

        return queries.customer_at(self.parts, customer_id, version=version, as_of=as_of)

    def history(self, customer_id: uuid.UUID, *, after: int = 0, limit: int = 50) -> HistoryPage:
        from chalicelib.usecases import queries

        return queries.history(self.parts, customer_id, after=after, limit=limit)

    def find_by_email(self, email: str) -> list[CustomerRow]:
        from chalicelib.usecases import queries

        return queries.find_by_email(self.parts, email)

    # Publishing: the outbox relay.

    def outbox_relay(self) -> OutboxRelay:
        from chalicelib.usecases import publishing

        return publishing.relay(self.parts)

    def relay_outbox(self, time_left: float | None = None, shard: int = 0) -> RelayResult:
        from chalicelib.usecases import publishing

        return publishing.relay_outbox(self.parts, time_left, shard)

    def publish_outbox_now(self, wait_seconds: float = 30.0) -> tuple[RelayResult, Backlog]:
        from chalicelib.usecases import publishing

        return publishing.publish_now(self.parts, wait_seconds)

    def outbox_backlog(self) -> Backlog:
        from chalicelib.usecases import publishing

        return publishing.backlog(self.parts)

    def outbox_backlog_by_shard(self) -> list[Backlog]:
        from chalicelib.usecases import publishing

        return publishing.backlog_by_shard(self.parts)

    def parked_outbox_rows(self) -> list[ParkedRow]:
        from chalicelib.usecases import publishing

        return publishing.parked_rows(self.parts)

    def retry_parked_outbox_rows(self, outbox_ids: list[int] | None) -> int:
        from chalicelib.usecases import publishing

        return publishing.retry_parked(self.parts, outbox_ids)

    def skip_parked_outbox_row(self, outbox_id: int) -> bool:
        from chalicelib.usecases import publishing

        return publishing.skip_parked(self.parts, outbox_id)

    # The read side.

    def project_kafka_batch(self, event: dict) -> ProjectionResult:
        from chalicelib.usecases import read_side

        return read_side.project_batch(self.parts, event)

    def reproject(self, customer_ids: set[uuid.UUID]) -> ProjectionResult:
        from chalicelib.usecases import read_side

        return read_side.reproject(self.parts, customer_ids)

    def dead_letters(self) -> list[DeadLetter]:
        from chalicelib.usecases import read_side

        return read_side.dead_letters(self.parts)

    def replay_dead_letters(self) -> ReplayResult:
        from chalicelib.usecases import read_side

        return read_side.replay_dead_letters(self.parts)

    def rebuild_read_model(self, progress: Progress = lambda done, total: None) -> RebuildResult:
        from chalicelib.usecases import read_side

        return read_side.rebuild_read_model(self.parts, progress)

    # Health.

    def health(self) -> Health:
        """For load balancers: one cheap query, its answer kept a few seconds."""
        return self.parts.health_check().public()

    def health_details(self) -> Health:
        """For operators: backlog, parked rows, lag, and what to do."""
        return self.parts.health_check().details()


_current: CustomerApplication | None = None
_current_lock = threading.Lock()


def current() -> CustomerApplication:
    """This container's application, built from the environment on first
    use and kept by warm invocations."""
    global _current
    if _current is None:
        with _current_lock:
            if _current is None:
                _current = CustomerApplication.from_env()
    return _current


def serve(application: CustomerApplication | None) -> CustomerApplication | None:
    """Make `application` the one the functions use (tests, the local
    stack); returns the one it replaces, which the caller closes or restores."""
    global _current
    with _current_lock:
        previous, _current = _current, application
    return previous
