"""The application facade: everything the outside world (the HTTP views,
the scheduled outbox relay, the projection function, the operator commands)
asks of the service, each a use case (chalicelib.usecases) handed the parts
it names, made once per container by the composition root
(chalicelib.bootstrap).

A use case's module is imported when it is first asked for: each Lambda
function's cold start pays for its own work only (the API never loads the
relay, the projection never loads the command handlers). Warm invocations
keep the facade, and so its parts, through `current()`. Tests build one
with parts of their own through the constructor and hand it to the app with
`serve()`.
"""

from __future__ import annotations

import threading
import uuid
from datetime import datetime
from typing import TYPE_CHECKING

from chalicelib.bootstrap import AwsClient, Bootstrap, Verifier
from chalicelib.infra.settings import Settings

if TYPE_CHECKING:
    from chalicelib.auth import Caller
    from chalicelib.eventstore.backfill import Backfill, RunResult
    from chalicelib.eventstore.events import CommandContext
    from chalicelib.eventstore.feed import Position, Selection
    from chalicelib.eventstore.outbox import Backlog, ParkedRow
    from chalicelib.eventstore.relay import OutboxRelay, RelayResult, Sender
    from chalicelib.infra.dead_letters import DeadLetter
    from chalicelib.infra.kafka_reader import TopicReader
    from chalicelib.readmodel.projection import ProjectionResult
    from chalicelib.readmodel.rebuild import Progress, RebuildResult
    from chalicelib.readmodel.rows import CustomerRow
    from chalicelib.usecases.catch_up import FeedPage
    from chalicelib.usecases.commands import Command, CommandResult
    from chalicelib.usecases.console import MessageQuery, Messages, Overview, Timeline, TopicPartitions
    from chalicelib.usecases.erasure import ReapplyResult
    from chalicelib.usecases.health import Health
    from chalicelib.usecases.queries import CustomerRead, HistoryPage
    from chalicelib.usecases.read_side import ReplayResult
    from chalicelib.usecases.unit_of_work import UnitsOfWork


def _no_progress(done: int, total: int) -> None:
    pass


class CustomerApplication:
    def __init__(self, settings: Settings, *, sender: Sender | None = None, verifier: Verifier | None = None,
                 aws: AwsClient | None = None, command_units: UnitsOfWork | None = None) -> None:
        """The parts given replace the container's own (tests, benchmarks)."""
        self.parts = Bootstrap(settings, sender=sender, verifier=verifier, aws=aws, command_units=command_units)

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

        return self._execute(CreateCustomer(name=name, email=email, customer_id=uuid.uuid4()), context,
                             idempotency_key)

    def change_email(self, customer_id: uuid.UUID, email: str, context: CommandContext, *,
                     expected_version: int | None = None, idempotency_key: str | None = None) -> CommandResult:
        from chalicelib.domain.commands import ChangeEmail

        return self._execute(ChangeEmail(customer_id=customer_id, email=email, expected_version=expected_version),
                             context, idempotency_key)

    def delete_customer(self, customer_id: uuid.UUID, context: CommandContext, *,
                        expected_version: int | None = None, idempotency_key: str | None = None) -> CommandResult:
        from chalicelib.domain.commands import DeleteCustomer

        return self._execute(DeleteCustomer(customer_id=customer_id, expected_version=expected_version), context,
                             idempotency_key)

    def _execute(self, command: Command, context: CommandContext, idempotency_key: str | None) -> CommandResult:
        from chalicelib.usecases import commands

        return commands.execute(command, context, idempotency_key, units=self.parts.command_units(),
                                max_retries=self.settings.command_max_retries)

    def erase_personal_data(self, customer_id: uuid.UUID, context: CommandContext) -> bool:
        from chalicelib.usecases import erasure

        return erasure.erase_personal_data(customer_id, context, units=self.parts.units(),
                                           erasure_log=self.parts.erasure_log(),
                                           max_retries=self.settings.command_max_retries)

    def reapply_erasures(self) -> ReapplyResult:
        from chalicelib.usecases import erasure

        return erasure.reapply_erasures(units=self.parts.units(), erasure_log=self.parts.erasure_log(),
                                        max_retries=self.settings.command_max_retries)

    def encrypt_stored_events(self, progress: Progress = _no_progress) -> int:
        from chalicelib.usecases import plaintext

        return plaintext.seal_stored_plaintext(progress, database=self.parts.database().direct(),
                                               personal=self.parts.required_personal_data())

    def rewrap_keys(self) -> list[int]:
        from chalicelib.usecases import keys

        self.settings.require_kms()
        return keys.rewrap_keys(database=self.parts.database().direct(), kms=self.parts.aws("kms"))

    def migrate(self) -> list[str]:
        from chalicelib.usecases import schema

        return schema.migrate(database=self.parts.database().direct())

    # Queries.

    def customer(self, customer_id: uuid.UUID, *, min_version: int | None = None,
                 strong: bool = False) -> CustomerRead:
        from chalicelib.usecases import queries

        return queries.customer(customer_id, min_version=min_version, strong=strong, units=self.parts.units())

    def customer_at(self, customer_id: uuid.UUID, *, version: int | None = None,
                    as_of: datetime | None = None) -> CustomerRow:
        from chalicelib.usecases import queries

        return queries.customer_at(customer_id, version=version, as_of=as_of, units=self.parts.units())

    def history(self, customer_id: uuid.UUID, *, after: int = 0, limit: int = 50) -> HistoryPage:
        from chalicelib.usecases import queries

        return queries.history(customer_id, after=after, limit=limit, units=self.parts.units())

    def find_by_email(self, email: str, *, strong: bool = False) -> list[CustomerRow]:
        from chalicelib.usecases import queries

        return queries.find_by_email(email, strong=strong, units=self.parts.units())

    # Publishing: the outbox relay.

    def outbox_relay(self, shard: int = 0, shards: int | None = None) -> OutboxRelay:
        """The relay of a shard, as the scheduled function makes it."""
        return self.parts.relays().relay(shard, shards)

    def relay_outbox(self, time_left: float | None = None, shard: int = 0) -> RelayResult:
        from chalicelib.usecases import publishing

        return publishing.relay_outbox(time_left, shard, relays=self.parts.relays(),
                                       connections=self.parts.connections())

    def publish_outbox_now(self, wait_seconds: float = 30.0) -> tuple[RelayResult, Backlog]:
        from chalicelib.usecases import publishing

        return publishing.publish_now(wait_seconds, relays=self.parts.relays(), connections=self.parts.connections())

    def outbox_backlog(self) -> Backlog:
        from chalicelib.usecases import publishing

        return publishing.backlog(connections=self.parts.connections())

    def outbox_backlog_by_shard(self) -> list[Backlog]:
        from chalicelib.usecases import publishing

        return publishing.backlog_by_shard(self.settings.relay_shards, connections=self.parts.connections())

    def parked_outbox_rows(self) -> list[ParkedRow]:
        from chalicelib.usecases import publishing

        return publishing.parked_rows(connections=self.parts.connections())

    def retry_parked_outbox_rows(self, outbox_ids: list[int] | None) -> int:
        from chalicelib.usecases import publishing

        return publishing.retry_parked(outbox_ids, connections=self.parts.connections())

    def skip_parked_outbox_row(self, outbox_id: int) -> bool:
        from chalicelib.usecases import publishing

        return publishing.skip_parked(outbox_id, connections=self.parts.connections())

    # Backfills, and the catch-up feed.

    def start_backfill(self, topic: str, selection: Selection | None = None, *, rate_limit: int | None = None,
                       requested_by: str | None = None, to_live_topic: bool = False) -> Backfill:
        from chalicelib.eventstore.feed import EVERYTHING
        from chalicelib.usecases import backfills

        return backfills.start(topic, selection or EVERYTHING, rate_limit=rate_limit, requested_by=requested_by,
                               to_live_topic=to_live_topic, live_topic=self.settings.kafka_topic,
                               topic_prefix=self.settings.backfill_topic_prefix, connections=self.parts.connections())

    def run_backfill(self, backfill_id: int, seconds: float,
                     progress: Progress = _no_progress) -> RunResult:
        from chalicelib.usecases import backfills

        return backfills.run(backfill_id, seconds, progress, runner=self.parts.backfill_runner())

    def run_unfinished_backfills(self, seconds: float) -> list[RunResult]:
        from chalicelib.usecases import backfills

        return backfills.run_unfinished(seconds, runner=self.parts.backfill_runner(),
                                        connections=self.parts.connections())

    def backfills(self) -> list[Backfill]:
        from chalicelib.usecases import backfills

        return backfills.status(connections=self.parts.connections())

    def resume_backfill(self, backfill_id: int) -> Backfill | None:
        from chalicelib.usecases import backfills

        return backfills.resume(backfill_id, connections=self.parts.connections())

    def backfill(self, backfill_id: int) -> Backfill | None:
        from chalicelib.usecases import backfills

        return backfills.one(backfill_id, connections=self.parts.connections())

    def events_page(self, after: Position, limit: int) -> FeedPage:
        from chalicelib.usecases import catch_up

        return catch_up.page(after, limit, units=self.parts.units(), source=self.settings.event_source)

    # The read side.

    def project_kafka_batch(self, event: dict) -> ProjectionResult:
        from chalicelib.usecases import read_side

        return read_side.project_batch(event, units=self.parts.units(), dead_letters=self.parts.dead_letter_queue(),
                                       signing=self.parts.message_signing())

    def reproject(self, customer_ids: set[uuid.UUID]) -> ProjectionResult:
        from chalicelib.usecases import read_side

        return read_side.reproject(customer_ids, units=self.parts.units())

    def dead_letters(self) -> list[DeadLetter]:
        from chalicelib.usecases import read_side

        return read_side.dead_letters(queue=self.parts.dead_letter_queue())

    def replay_dead_letters(self) -> ReplayResult:
        from chalicelib.usecases import read_side

        return read_side.replay_dead_letters(queue=self.parts.dead_letter_queue(), keys_at=self.parts.keys_at,
                                             units=self.parts.units())

    def rebuild_read_model(self, progress: Progress = _no_progress) -> RebuildResult:
        from chalicelib.usecases import read_side

        return read_side.rebuild_read_model(progress, database=self.parts.database().direct(),
                                            personal=self.parts.personal_data())

    def replay_dead_letter(self, message_id: str) -> ReplayResult | None:
        from chalicelib.usecases import read_side

        return read_side.replay_dead_letter(message_id, queue=self.parts.dead_letter_queue(),
                                            keys_at=self.parts.keys_at, units=self.parts.units())

    def discard_dead_letter(self, message_id: str) -> bool:
        from chalicelib.usecases import read_side

        return read_side.discard_dead_letter(message_id, queue=self.parts.dead_letter_queue())

    # The console.

    def timeline(self, customer_id: uuid.UUID, *, reveal: bool) -> Timeline:
        from chalicelib.usecases import console

        return console.timeline(customer_id, reveal, units=self.parts.units(), topic=self.parts.topic_reader())

    def topic_partitions(self) -> TopicPartitions:
        from chalicelib.usecases import console

        return console.topic_partitions(self._topic(), group_id=self.settings.projection_group_id)

    def _topic(self) -> TopicReader:
        from chalicelib.infra.settings import ConfigurationError

        topic = self.parts.topic_reader()
        if topic is None:
            raise ConfigurationError("KAFKA_BOOTSTRAP_SERVERS is not set: there is no topic to show")
        return topic

    def topic_messages(self, query: MessageQuery, *, reveal: bool) -> Messages:
        from chalicelib.usecases import console

        return console.messages(query, reveal, topic=self._topic(), signing=self.parts.message_signing())

    def overview(self) -> Overview:
        from chalicelib.usecases import console

        queue = self.parts.dead_letter_queue()
        return console.overview(connections=self.parts.connections(), shards=self.settings.relay_shards,
                                topic=self.parts.topic_reader(), group_id=self.settings.projection_group_id,
                                dead_letters=self.dead_letters if queue is not None else None,
                                backfills=self.backfills)

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
