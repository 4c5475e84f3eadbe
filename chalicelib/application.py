"""The application facade: the one composition root, and everything the
outside world (the HTTP views, the scheduled drain, the projection function,
the operator commands) asks of the service.

It owns the settings, the connection pool, the event store, the Kafka
publisher and the read model. Nothing is opened when it is built: the pool
and the producer open on first use (never at import, which is Lambda cold
start) and are kept by warm invocations through `current()`. Tests build one
with fakes through the constructor and hand it to the app with `serve()`.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

import psycopg

from chalicelib.auth import Caller, TokenVerifier
from chalicelib.domain.errors import CustomerNotFound
from chalicelib.infra import db, metrics
from chalicelib.infra.aws import AwsClients
from chalicelib.infra.credentials import Secret
from chalicelib.infra.logs import log
from chalicelib.infra.settings import ConfigurationError, Settings
from chalicelib.readmodel import queries

# What only some functions use is imported where it is used: each Lambda
# function's cold start pays for its own work only (the API never loads the
# relay, the projection never loads the command handlers).
if TYPE_CHECKING:
    from chalicelib.customer_commands import CustomerCommands
    from chalicelib.domain.customer import Customer
    from chalicelib.eventstore.events import CommandContext, RecordedEvent
    from chalicelib.eventstore.outbox import Backlog, DrainResult, OutboxRelay, ParkedRow, Publish
    from chalicelib.eventstore.store import EventStore
    from chalicelib.health import Health, HealthCheck
    from chalicelib.infra.dead_letters import DeadLetter, DeadLetterQueue
    from chalicelib.infra.kafka import KafkaPublisher
    from chalicelib.personal_data import PersonalData
    from chalicelib.readmodel.projection import ProjectedEvent, ProjectionResult
    from chalicelib.readmodel.rebuild import Progress, RebuildResult
    from chalicelib.readmodel.rows import CustomerRow


class Verifier(Protocol):
    def verify(self, authorization: str | None) -> Caller: ...


RELAY_APPLICATION_NAME = "customer-service-outbox-relay"


@dataclass(frozen=True)
class CommandResult:
    """What a command left: the customer's state at its new version.
    `replayed` when an Idempotency-Key's earlier result is given again."""

    customer: dict[str, Any]
    replayed: bool = False

    @property
    def customer_id(self) -> str:
        return self.customer["id"]

    @property
    def version(self) -> int:
        return self.customer["version"]


@dataclass(frozen=True)
class CustomerRead:
    row: CustomerRow
    source: str  # "read-model" or "event-store"


@dataclass(frozen=True)
class HistoryPage:
    events: list[RecordedEvent]  # in today's shape of each event type
    more: bool


@dataclass
class ReplayResult:
    letters: int = 0
    customers: int = 0
    rows_written: int = 0
    deleted: int = 0
    kept: list[tuple[DeadLetter, str]] = field(default_factory=list)  # with why


class CustomerApplication:
    def __init__(self, settings: Settings, *, store: EventStore | None = None,
                 publish: Publish | None = None, verifier: Verifier | None = None,
                 aws: Callable[[str], Any] | None = None) -> None:
        self.settings = settings
        # boto3 clients by service name, made on first use.
        self.aws = aws or AwsClients()
        self._database: db.Database | None = None
        self._personal: PersonalData | None = None
        self._verifier = verifier
        self._connections: db.Connections | None = None
        # An injected store (a fake) serves every command; one that is not
        # PostgreSQL cannot join an Idempotency-Key's transaction, so keyed
        # commands then run on it directly.
        self._store = store
        self._publish = publish
        self._publisher: KafkaPublisher | None = None
        # Reentrant: a part made under it may need another (the connections need the database).
        self._lock = threading.RLock()
        self._health: HealthCheck | None = None

    @classmethod
    def from_env(cls) -> CustomerApplication:
        return cls(Settings.from_env())

    # Parts, opened on first use.

    def database(self) -> db.Database:
        """Where connections go, with the credentials of DATABASE_SECRET_ARN
        (or an RDS IAM token, or DATABASE_URL's own), through RDS Proxy when
        DATABASE_PROXY_ENDPOINT is set."""
        if self._database is None:
            with self._lock:
                if self._database is None:
                    settings = self.settings
                    secret = Secret(settings.database_secret_arn, self.aws) if settings.database_secret_arn else None
                    iam_token = None
                    if settings.database_iam_auth:
                        def iam_token(host: str, port: int, user: str) -> str:
                            # Signed here, no call to AWS; valid 15 minutes, enough to log in.
                            return self.aws("rds").generate_db_auth_token(DBHostname=host, Port=port,
                                                                          DBUsername=user)
                    self._database = db.Database(settings.database_url, secret=secret, iam_token=iam_token,
                                                 proxy_endpoint=settings.database_proxy_endpoint)
        return self._database

    def connections(self) -> db.Connections:
        """The container's connection (DB_POOL_MAX_SIZE=1, Lambda) or pool."""
        if self._connections is None:
            with self._lock:
                if self._connections is None:
                    self._connections = self.database().connections(self.settings.db_pool_max_size)
        return self._connections

    def personal_data(self) -> PersonalData | None:
        """Encryption of personal data (KMS_KEY_ID); None when not configured."""
        from chalicelib.personal_data import EmailHash, KeyRing, PersonalData, email_hash_key

        settings = self.settings
        if self._personal is None and settings.kms_key_id:
            with self._lock:
                if self._personal is None:
                    secret = Secret(settings.email_hash_secret_arn, self.aws)
                    keys = KeyRing(lambda: self.database().connect(autocommit=True), lambda: self.aws("kms"),
                                   settings.kms_key_id)
                    self._personal = PersonalData(keys, EmailHash(lambda: email_hash_key(secret.value())))
        return self._personal

    def store(self, *, for_state: bool = False) -> EventStore:
        """The event store. `for_state`: for loading an aggregate to decide
        on, which needs only the personal data its state ends with."""
        from chalicelib.eventstore.postgres import PostgresEventStore

        connections = self.connections()
        return self._sealed(self._store or PostgresEventStore(connections), connections.connection, for_state)

    def _store_in_transaction(self, conn: psycopg.Connection) -> EventStore:
        from chalicelib.eventstore.postgres import PostgresEventStore

        within = db.TransactionConnection(conn)
        return self._sealed(self._store or PostgresEventStore(within), within.connection, True)

    def _sealed(self, store: EventStore, connect, for_state: bool) -> EventStore:
        from chalicelib.personal_data import EncryptedEventStore

        personal = self.personal_data()
        return store if personal is None else EncryptedEventStore(store, personal, connect, for_state=for_state)

    def _open_event(self) -> Callable[[RecordedEvent], RecordedEvent]:
        """Makes a stored event's personal data readable, on a pooled connection."""
        personal = self.personal_data()
        if personal is None:
            return lambda event: event
        return lambda event: personal.open_recorded(event, lambda: self.connections().connection())

    def _commands(self, store: EventStore) -> CustomerCommands:
        from chalicelib.customer_commands import CustomerCommands

        return CustomerCommands(store, max_retries=self.settings.command_max_retries,
                                snapshot_every=self.settings.customer_snapshot_every or None,
                                on_retry=lambda: metrics.count("CommandRetries"))

    def authenticate(self, authorization: str | None) -> Caller:
        """The caller named by the request's Authorization header; raises
        auth.Unauthenticated when there is none or it is not valid."""
        if self._verifier is None:
            issuer, jwks_url = self.settings.require_auth()
            with self._lock:
                if self._verifier is None:
                    # Keys are cached here, for the container's lifetime.
                    self._verifier = TokenVerifier(issuer, self.settings.auth_audience, jwks_url,
                                                   leeway_seconds=self.settings.auth_leeway_seconds,
                                                   audience_claim=self.settings.auth_audience_claim)
        return self._verifier.verify(authorization)

    def publisher(self) -> Publish:
        from chalicelib.infra.kafka import KafkaPublisher

        if self._publish is not None:
            return self._publish
        with self._lock:
            if self._publisher is None:
                # One producer per container, kept by warm invocations.
                self._publisher = KafkaPublisher(self.settings.require_kafka(), self.settings.kafka_topic,
                                                 self.settings.event_source,
                                                 max_message_bytes=self.settings.kafka_max_message_bytes,
                                                 security=self.kafka_security)
            return self._publisher

    @staticmethod
    def _measured(publish: Publish) -> Publish:
        def measured(events):
            publish(events)
            if events:
                # From the oldest event's commit to the broker's ack.
                oldest = min(event.recorded_at for event in events)
                metrics.milliseconds("PublishLatency", (datetime.now(oldest.tzinfo) - oldest).total_seconds() * 1000)
                metrics.count("EventsPublished", len(events))

        return measured

    def kafka_security(self) -> dict[str, Any]:
        """kafka-python's TLS and SASL settings (KAFKA_SECURITY_PROTOCOL, ...)."""
        from chalicelib.infra.kafka import security_settings

        settings = self.settings
        secret = Secret(settings.kafka_sasl_secret_arn, self.aws) if settings.kafka_sasl_secret_arn else None
        return security_settings(settings.kafka_security_protocol, settings.kafka_sasl_mechanism,
                                 cafile=settings.kafka_ssl_cafile, sasl_secret=secret)

    def dead_letter_queue(self) -> DeadLetterQueue | None:
        from chalicelib.infra.dead_letters import DeadLetterQueue

        url = self.settings.projection_dlq_url
        return DeadLetterQueue(url, self.aws) if url else None

    def close(self) -> None:
        with self._lock:
            if self._publisher is not None:
                self._publisher.close()
                self._publisher = None
            if self._connections is not None:
                self._connections.close()
                self._connections = None

    # Commands. Each may run once under an Idempotency-Key: a retry with the
    # same key and the same request gets the first result again.

    def create_customer(self, name: str, email: str, context: CommandContext,
                        idempotency_key: str | None = None) -> CommandResult:
        from chalicelib.domain.commands import CreateCustomer

        command = CreateCustomer(name=name, email=email, customer_id=uuid.uuid4())
        result = self._run(lambda commands: commands.create(command, context), context, idempotency_key,
                           ["create", name, email])
        log("customer_created", customer_id=result.customer_id, version=result.version, replayed=result.replayed)
        return result

    def change_email(self, customer_id: uuid.UUID, email: str, context: CommandContext, *,
                     expected_version: int | None = None, idempotency_key: str | None = None) -> CommandResult:
        from chalicelib.domain.commands import ChangeEmail

        command = ChangeEmail(customer_id=customer_id, email=email, expected_version=expected_version)
        result = self._run(lambda commands: commands.change_email(command, context), context, idempotency_key,
                           ["change_email", customer_id, email, expected_version])
        log("customer_email_changed", customer_id=result.customer_id, version=result.version,
            replayed=result.replayed)
        return result

    def delete_customer(self, customer_id: uuid.UUID, context: CommandContext, *,
                        expected_version: int | None = None, idempotency_key: str | None = None) -> CommandResult:
        from chalicelib.domain.commands import DeleteCustomer

        command = DeleteCustomer(customer_id=customer_id, expected_version=expected_version)
        result = self._run(lambda commands: commands.delete(command, context), context, idempotency_key,
                           ["delete", customer_id, expected_version])
        log("customer_deleted", customer_id=result.customer_id, version=result.version, replayed=result.replayed)
        return result

    def erase_personal_data(self, customer_id: uuid.UUID, context: CommandContext) -> bool:
        """Erase the customer's personal data, wherever this service keeps it:
        the erasure event (published, so that consumers delete their copies),
        the customer's data key (every stored copy becomes unreadable), the
        email's reservation, snapshots, stored Idempotency-Key answers and the
        read-model row, in one transaction. False when it was erased already."""
        from chalicelib.eventstore.errors import ConcurrencyError, RetriesExhausted
        from chalicelib.personal_data import delete_key

        self.settings.require_kms()
        personal = self.personal_data()
        with self.connections().connection() as conn, conn.transaction():
            try:
                customer, erased = self._commands(self._store_in_transaction(conn)).erase_personal_data(
                    customer_id, context)
            except (RetriesExhausted, ConcurrencyError):
                metrics.count("CommandConflicts")
                raise
            # Events stored in clear before encryption are sealed first, so
            # that deleting the key reaches them too.
            self._encrypt_stream(conn, personal, customer_id)
            delete_key(conn, customer_id)
            conn.execute("DELETE FROM reservations WHERE owner = %s", (customer_id,))
            conn.execute("DELETE FROM snapshots WHERE stream_id = %s", (customer_id,))
            conn.execute("DELETE FROM idempotency_keys WHERE result->>'id' = %s", (str(customer_id),))
            # GET answers 404 at once, and events still on their way through
            # Kafka (older versions) cannot write the name back.
            conn.execute(_ERASED_ROW, (customer_id, customer.version))
        personal.keys.forget(customer_id)
        metrics.count("CommandsSucceeded")
        log("customer_personal_data_erased", customer_id=str(customer_id), version=customer.version,
            already=not erased)
        return erased

    def encrypt_stored_events(self, progress: Progress = lambda done, total: None, chunk: int = 200) -> int:
        """Encrypt the personal data of events stored before it was encrypted:
        the one sanctioned rewrite of stored events. Customer by customer,
        each in a transaction of its own (its key made, its events' personal
        fields sealed, its plaintext snapshot dropped, its email reservation
        hashed), so that it can be stopped and run again at any time; what
        is done already is skipped. Returns how many customers it changed."""
        from chalicelib.personal_data import PERSONAL_FIELDS

        self.settings.require_kms()
        personal = self.personal_data()
        types = list(PERSONAL_FIELDS)
        done = 0
        with self.database().direct().connect(autocommit=True) as conn:
            (total,) = conn.execute(_STREAMS_IN_CLEAR_COUNT, (types,)).fetchone()
            progress(0, total)
            after = uuid.UUID(int=0)
            while streams := [row[0] for row in conn.execute(_STREAMS_IN_CLEAR, (types, after, chunk))]:
                for stream_id in streams:
                    with conn.transaction():
                        self._encrypt_stream(conn, personal, stream_id)
                    done += 1
                    progress(done, total)
                after = streams[-1]
        log("stored_events_encrypted", customers=done)
        return done

    @staticmethod
    def _encrypt_stream(conn: psycopg.Connection, personal: PersonalData, stream_id: uuid.UUID) -> None:
        from chalicelib.domain.customer import EMAIL_SCOPE
        from chalicelib.personal_data import PERSONAL_FIELDS

        connect = db.TransactionConnection(conn).connection
        key = personal.keys.key_for(stream_id, connect)
        if key is None:
            key, wrapped = personal.keys.new_key(stream_id)
            conn.execute("INSERT INTO stream_keys (stream_id, kek_id, wrapped_key) VALUES (%s, %s, %s)"
                         " ON CONFLICT (stream_id) DO NOTHING", (stream_id, wrapped.kek_id, wrapped.wrapped))
            personal.keys.forget(stream_id)
            key = personal.keys.key_for(stream_id, connect)  # whoever stored one first
        rows = conn.execute("SELECT global_position, event_type, data FROM events WHERE stream_id = %s"
                            " AND event_type = ANY(%s) FOR UPDATE", (stream_id, list(PERSONAL_FIELDS))).fetchall()
        for position, event_type, data in rows:
            sealed = personal.seal(key, stream_id, data, PERSONAL_FIELDS[event_type])
            if sealed != data:
                conn.execute("UPDATE events SET data = %s WHERE global_position = %s",
                             (json.dumps(sealed), position))
        conn.execute("DELETE FROM snapshots WHERE stream_id = %s", (stream_id,))
        for (plain,) in conn.execute("SELECT key FROM reservations WHERE owner = %s AND scope = %s"
                                     " AND NOT starts_with(key, 'hmac-sha256:')", (stream_id, EMAIL_SCOPE)).fetchall():
            conn.execute("UPDATE reservations SET key = %s WHERE scope = %s AND key = %s",
                         (personal.email_hash(plain), EMAIL_SCOPE, plain))
        row = conn.execute("SELECT email FROM customers_view WHERE id = %s AND email IS NOT NULL"
                           " AND email_hash IS NULL", (stream_id,)).fetchone()
        if row is not None:  # findable by the hash from now on
            conn.execute("UPDATE customers_view SET email_hash = %s WHERE id = %s",
                         (personal.email_hash(row[0]), stream_id))

    def _run(self, execute: Callable[[CustomerCommands], Customer], context: CommandContext,
             idempotency_key: str | None, request: list) -> CommandResult:
        from chalicelib.domain.errors import CustomerAlreadyExists, DomainError
        from chalicelib.eventstore.errors import ConcurrencyError, ReservationTaken, RetriesExhausted
        from chalicelib.idempotency import KeyReused

        try:
            result = self._run_once(execute, context, idempotency_key, request)
        except (RetriesExhausted, ConcurrencyError, CustomerAlreadyExists):
            metrics.count("CommandConflicts")
            raise
        except (DomainError, ReservationTaken, KeyReused):
            metrics.count("CommandsRejected")
            raise
        metrics.count("CommandsSucceeded")
        if result.replayed:
            metrics.count("IdempotentReplays")
        return result

    def _run_once(self, execute: Callable[[CustomerCommands], Customer], context: CommandContext,
                  idempotency_key: str | None, request: list) -> CommandResult:
        from chalicelib import idempotency

        if idempotency_key is None:
            return CommandResult(execute(self._commands(self.store(for_state=True))).to_dict())

        def once(conn: psycopg.Connection) -> dict:
            # The command's events join the key's transaction.
            return execute(self._commands(self._store_in_transaction(conn))).to_dict()

        # Keys are the caller's own: two callers using the same key do not meet.
        actor = context.actor or {}
        scoped_key = json.dumps([actor.get("subject"), actor.get("client_id"), idempotency_key])
        stored, replayed = idempotency.run_once(self.connections(), scoped_key, idempotency.request_hash(request),
                                                self.settings.idempotency_ttl_hours * 3600, once)
        return CommandResult(stored, replayed)

    # Queries.

    def customer(self, customer_id: uuid.UUID, *, min_version: int | None = None,
                 strong: bool = False) -> CustomerRead:
        """From the read model; from the event store when the caller asks for
        a version the read model has not reached yet, or for strong
        consistency, or the read model does not know the customer yet."""
        if not strong:
            with self.connections().connection() as conn:
                row = queries.from_read_model(conn, customer_id)
            if row is not None and row.deleted:
                raise CustomerNotFound(f"customer {customer_id} not found")
            if row is not None and row.version >= (min_version or 0):
                return CustomerRead(row, "read-model")
        row = queries.from_event_store(self.store(), customer_id)
        if row is None or row.deleted:
            raise CustomerNotFound(f"customer {customer_id} not found")
        return CustomerRead(row, "event-store")

    def customer_at(self, customer_id: uuid.UUID, *, version: int | None = None,
                    as_of: datetime | None = None) -> CustomerRow:
        """The time machine: the state at a version or a moment, deleted
        customers included (their history stays readable)."""
        row = queries.state_at(self.store(), customer_id, version=version, as_of=as_of)
        if row is None:
            raise CustomerNotFound(f"customer {customer_id} did not exist then")
        if version is not None and row.version < version:
            raise CustomerNotFound(f"customer {customer_id} has no version {version}; its latest is {row.version}")
        return row

    def history(self, customer_id: uuid.UUID, *, after: int = 0, limit: int = 50) -> HistoryPage:
        events = self.store().load(customer_id, after_version=after, limit=limit + 1)
        if not events and after == 0:
            raise CustomerNotFound(f"customer {customer_id} not found")
        from chalicelib.domain.customer import registry

        return HistoryPage([registry.upcast_recorded(e) for e in events[:limit]], more=len(events) > limit)

    def find_by_email(self, email: str) -> list[CustomerRow]:
        email_hash = self._email_hash()
        with self.connections().connection() as conn:
            return queries.find_by_email(conn, email, email_hash(email) if email_hash else None)

    def _email_hash(self) -> Callable[[str], str] | None:
        personal = self.personal_data()
        return personal.email_hash if personal else None

    # The scheduled drain, the projection function and operator commands.

    def outbox_relay(self) -> OutboxRelay:
        from chalicelib.eventstore.outbox import OutboxRelay

        settings = self.settings
        # Never through RDS Proxy: LISTEN and the relay's session lock would
        # pin a proxy connection for the whole invocation.
        database = self.database().direct()
        return OutboxRelay(
            # Its own connection, not the container's: it holds the relay lock
            # and LISTENs for the whole invocation. Named, so an operator can
            # find it in pg_stat_activity.
            connect=lambda: database.connect(autocommit=True, connect_timeout=5,
                                             application_name=RELAY_APPLICATION_NAME),
            publish=self._measured(self.publisher()),
            batch_size=settings.drain_batch_size,
            retention_seconds=settings.outbox_retention_hours * 3600,
            upcast=self._readable_upcast(),
            on_error=lambda error: log("outbox_publish_failed", level="error", error=str(error),
                                       brokers=settings.kafka_bootstrap_servers, topic=settings.kafka_topic),
            on_parked=lambda outbox_id, event, error: log(
                "outbox_row_parked", level="error", outbox_id=outbox_id, stream_id=str(event.stream_id),
                version=event.version, event_type=event.event_type, error=error,
                action="this customer's later events wait behind it; see python -m ops outbox --parked"),
        )

    def _readable_upcast(self) -> Callable[[RecordedEvent], RecordedEvent]:
        from chalicelib.domain.customer import registry
        from chalicelib.eventstore.outbox import PublishError

        # Consumers need the data: messages carry it in clear, or null once erased.
        if self.personal_data() is None:
            return registry.upcast_recorded
        from botocore.exceptions import BotoCoreError, ClientError

        open_event = self._open_event()

        def readable(event: RecordedEvent) -> RecordedEvent:
            try:
                opened = open_event(event)
            except (psycopg.Error, BotoCoreError, ClientError) as error:
                # The database or KMS, not the event: tried again, not parked.
                raise PublishError(f"cannot read the personal data of {event.stream_id} v{event.version} now:"
                                   f" {error}") from error
            return registry.upcast_recorded(opened)

        return readable

    def drain_outbox(self, time_left: float | None = None) -> DrainResult:
        """Publish the outbox until `time_left` seconds (at most
        DRAIN_MAX_SECONDS) have passed, woken by each commit."""
        from chalicelib import idempotency

        try:
            idempotency.prune_expired(self.connections())
        except psycopg.Error as error:
            # Housekeeping only: the drain must start even while the database
            # is away, and its relay reconnects by itself.
            log("idempotency_prune_failed", level="warning", error=str(error))
        seconds = self.settings.drain_max_seconds if time_left is None else min(self.settings.drain_max_seconds,
                                                                               time_left)
        result = self.outbox_relay().run(deadline=time.monotonic() + max(0.0, seconds))
        if result.locked_out:
            log("outbox_drain_skipped", reason="another drain is running")
        else:
            log("outbox_drained", published=result.published, batches=result.batches, failures=result.failures,
                parked=result.parked, last_error=result.last_error)
            metrics.count("PublishFailures", result.failures)
            metrics.count("OutboxRowsParked", result.parked)
        try:
            waiting = self.outbox_backlog()
        except psycopg.Error as error:
            log("outbox_backlog_unknown", level="warning", error=str(error))
        else:
            metrics.count("OutboxBacklog", waiting.unpublished)
            metrics.seconds("OutboxOldestAge", waiting.oldest_age_seconds or 0)
        return result

    def drain_outbox_by_hand(self, wait_seconds: float = 30.0) -> tuple[DrainResult, Backlog]:
        """Publish what is unpublished now (operators). When a drain is
        already running, wake it and wait up to `wait_seconds` for it to
        publish what was waiting. Returns the result and the backlog after."""
        from chalicelib.eventstore.outbox import wake_relay

        result = self.outbox_relay().drain_once()
        if result.locked_out:
            with self.connections().connection() as conn:
                wake_relay(conn)
            deadline = time.monotonic() + wait_seconds
            while self.outbox_backlog().ready and time.monotonic() < deadline:
                time.sleep(0.1)
        return result, self.outbox_backlog()

    def health(self) -> Health:
        """For load balancers: one cheap query, its answer kept a few seconds."""
        return self.health_check().public()

    def health_details(self) -> Health:
        """For operators: backlog, parked rows, lag, and what to do."""
        return self.health_check().details()

    def health_check(self) -> HealthCheck:
        from chalicelib.health import HealthCheck, Limits

        if self._health is None:
            with self._lock:
                if self._health is None:
                    settings = self.settings
                    self._health = HealthCheck(
                        lambda: self.connections().connection(),
                        Limits(settings.health_max_outbox_age_seconds, settings.health_max_projection_lag_seconds),
                        settings.health_cache_seconds)
        return self._health

    def parked_outbox_rows(self) -> list[ParkedRow]:
        from chalicelib.eventstore.outbox import parked_rows

        with self.connections().connection() as conn:
            return parked_rows(conn)

    def retry_parked_outbox_rows(self, outbox_ids: list[int] | None) -> int:
        from chalicelib.eventstore.outbox import retry_parked

        with self.connections().connection() as conn:
            count = retry_parked(conn, outbox_ids)
        log("outbox_rows_unparked", count=count, outbox_ids=outbox_ids or "all")
        return count

    def skip_parked_outbox_row(self, outbox_id: int) -> bool:
        from chalicelib.eventstore.outbox import skip_parked

        with self.connections().connection() as conn:
            skipped = skip_parked(conn, outbox_id)
        if skipped:
            log("outbox_row_skipped", level="warning", outbox_id=outbox_id,
                note="marked as handled without being published: consumers never see this event")
        return skipped

    def outbox_backlog(self) -> Backlog:
        from chalicelib.eventstore.outbox import backlog

        with self.connections().connection() as conn:
            return backlog(conn)

    def project_kafka_batch(self, event: dict) -> ProjectionResult:
        """A batch of the Kafka event source mapping, applied to the read
        model in one transaction; gaps are filled from the event store."""
        from chalicelib.infra.dead_letters import unreadable_record
        from chalicelib.readmodel.projection import project_kafka_batch

        queue = self.dead_letter_queue()

        def dead_letters(unreadable) -> None:
            if queue is None:
                log("projection_dead_letters_dropped", level="warning", records=len(unreadable),
                    reason="PROJECTION_DLQ_URL is not set: they are only logged")
                return
            queue.send([unreadable_record(record, error, "project_customers") for record, error in unreadable])

        with self.connections().connection() as conn:
            result = project_kafka_batch(event, conn, self._load_after(conn), dead_letters,
                                         email_hash=self._email_hash())
        log("projection_batch", **result.to_dict())
        metrics.count("ProjectionBatchSize", result.records)
        metrics.count("DeadLetters", result.poison)
        if result.newest_event_time is not None:
            metrics.seconds("ProjectionLag", (datetime.now(result.newest_event_time.tzinfo)
                                              - result.newest_event_time).total_seconds())
        return result

    def _load_after(self, conn: psycopg.Connection) -> Callable[[uuid.UUID, int], list[ProjectedEvent]]:
        """A customer's events after a version, from the event store, as the
        projection takes them, read on the projection's own connection."""
        from chalicelib.eventstore.postgres import PostgresEventStore
        from chalicelib.readmodel.projection import ProjectedEvent

        within = db.TransactionConnection(conn)
        store = self._sealed(self._store or PostgresEventStore(within), within.connection, False)
        return lambda customer_id, version: [ProjectedEvent.from_recorded(r) for r in store.load(customer_id, version)]

    def _require_dead_letter_queue(self) -> DeadLetterQueue:
        queue = self.dead_letter_queue()
        if queue is None:
            raise ConfigurationError("PROJECTION_DLQ_URL is not set: `make run` makes one, the template another")
        return queue

    def dead_letters(self) -> list[DeadLetter]:
        """What is in the dead-letter queue, left there."""
        queue = self._require_dead_letter_queue()
        letters = list(queue.receive(hold_seconds=30))
        queue.release(letters)
        return letters

    def replay_dead_letters(self) -> ReplayResult:
        """Re-project, from the event store, every customer a dead letter
        names, then delete the letter. A letter naming no customer (a record
        that is not one of ours) is deleted too; one whose records are no
        longer on the topic is kept, and `make rebuild` is the way out."""
        queue = self._require_dead_letter_queue()
        result = ReplayResult()
        for letter in queue.receive(hold_seconds=300):
            result.letters += 1
            keys, complete = self._keys_named(letter)
            customers = {cid for cid in map(_customer_id, keys) if cid is not None}
            if not complete:
                result.kept.append((letter, "some of its records are no longer on the topic: `make rebuild`"
                                            " brings every customer up to date"))
                queue.release([letter])
                continue
            result.customers += len(customers)
            result.rows_written += self.reproject(customers).rows_written
            queue.delete(letter)
            result.deleted += 1
            log("dead_letter_replayed", message_id=letter.message_id, kind=letter.kind,
                customers=sorted(map(str, customers)))
        return result

    def _keys_named(self, letter: DeadLetter) -> tuple[list[bytes | None], bool]:
        from chalicelib.infra.kafka import keys_at

        if letter.kind == "unreadable-record":
            return [letter.key()], True
        ranges = letter.offsets()
        if not ranges:
            return [], True
        return keys_at(self.settings.require_kafka(), ranges, self.kafka_security())

    def reproject(self, customer_ids: set[uuid.UUID]) -> ProjectionResult:
        """Bring these customers' read-model rows up to their event streams."""
        from chalicelib.readmodel.projection import project

        with self.connections().connection() as conn:
            load_after = self._load_after(conn)
            events = [event for customer_id in sorted(customer_ids) for event in load_after(customer_id, 0)]
            return project(conn, events, load_after, email_hash=self._email_hash())

    def rebuild_read_model(self, progress: Progress = lambda done, total: None) -> RebuildResult:
        from chalicelib.readmodel.rebuild import rebuild

        return rebuild(self.database().direct().connect, progress, open_event=self._open_event(),
                       email_hash=self._email_hash())


# Customers with a personal field stored in clear.
_IN_CLEAR = """
    FROM events WHERE event_type = ANY(%s) AND EXISTS (
        SELECT 1 FROM jsonb_each_text(data) AS f(name, value)
        WHERE f.name IN ('name', 'email', 'previous_email') AND NOT starts_with(f.value, 'pd1:'))"""
_STREAMS_IN_CLEAR_COUNT = "SELECT count(DISTINCT stream_id)" + _IN_CLEAR
_STREAMS_IN_CLEAR = "SELECT DISTINCT stream_id" + _IN_CLEAR + " AND stream_id > %s ORDER BY stream_id LIMIT %s"

_ERASED_ROW = """
INSERT INTO customers_view (id, name, email, version, deleted, created_at, updated_at)
VALUES (%s, NULL, NULL, %s, true, clock_timestamp(), clock_timestamp())
ON CONFLICT (id) DO UPDATE SET name = NULL, email = NULL, email_hash = NULL, deleted = true, version = EXCLUDED.version,
    updated_at = EXCLUDED.updated_at, projected_at = clock_timestamp()
WHERE customers_view.version < EXCLUDED.version
"""


def _customer_id(key: bytes | None) -> uuid.UUID | None:
    try:
        return uuid.UUID(key.decode()) if key else None
    except (UnicodeDecodeError, ValueError):
        return None


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
