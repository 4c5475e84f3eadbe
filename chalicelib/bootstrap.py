"""The composition root: builds the parts of the service once per
container, on first use, and hands them to the use cases.

Nothing is opened when it is built, and nothing at import (Lambda's cold
start): the connection, the key ring, the token verifier and the Kafka
producer are made when a use case first asks, each once even when many
threads ask at once (`chalice local` serves each request on its own), and a
part that failed to be made is made again by the next caller. Warm
invocations keep them, through `chalicelib.application.current()`.

Tests build one with fakes (a store, a publisher, a verifier, AWS clients)
through the constructor, or override a part's method in a subclass, the way
eventsourcing's Application lets its parts be replaced.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from chalicelib.infra import db, metrics
from chalicelib.infra.aws import AwsClients
from chalicelib.infra.credentials import Secret
from chalicelib.infra.settings import Settings

if TYPE_CHECKING:
    import psycopg

    from chalicelib.auth import Caller
    from chalicelib.eventstore.events import RecordedEvent
    from chalicelib.eventstore.relay import Publish
    from chalicelib.eventstore.store import EventStore
    from chalicelib.infra.dead_letters import DeadLetterQueue
    from chalicelib.infra.message_signing import MessageSigning
    from chalicelib.personal.erasure_log import ErasureLog
    from chalicelib.personal.sealing import PersonalData
    from chalicelib.usecases.commands import CustomerCommands
    from chalicelib.usecases.health import HealthCheck


class Verifier(Protocol):
    def verify(self, authorization: str | None) -> Caller: ...


class Bootstrap:
    def __init__(self, settings: Settings, *, store: EventStore | None = None, publish: Publish | None = None,
                 verifier: Verifier | None = None, aws: Callable[[str], Any] | None = None) -> None:
        self.settings = settings
        # boto3 clients by service name, made on first use.
        self.aws = aws or AwsClients()
        # An injected store (a fake) serves every command; one that is not
        # PostgreSQL cannot join an Idempotency-Key's transaction, so keyed
        # commands then run on it directly.
        self.injected_store = store
        self.injected_publish = publish
        self._verifier = verifier
        self._made: dict[str, Any] = {}
        # Reentrant: a part made under it may need another (the connections need the database).
        self._lock = threading.RLock()

    def _once(self, name: str, make: Callable[[], Any]) -> Any:
        """The part `name`, made by `make` the first time it is asked for."""
        part = self._made.get(name)
        if part is None:
            with self._lock:
                part = self._made.get(name)
                if part is None:
                    part = self._made[name] = make()
        return part

    # The database.

    def database(self) -> db.Database:
        """Where connections go, with the credentials of DATABASE_SECRET_ARN
        (or an RDS IAM token, or DATABASE_URL's own), through RDS Proxy when
        DATABASE_PROXY_ENDPOINT is set."""
        def make() -> db.Database:
            settings = self.settings
            secret = Secret(settings.database_secret_arn, self.aws) if settings.database_secret_arn else None
            iam_token = None
            if settings.database_iam_auth:
                def iam_token(host: str, port: int, user: str) -> str:
                    # Signed here, no call to AWS; valid 15 minutes, enough to log in.
                    return self.aws("rds").generate_db_auth_token(DBHostname=host, Port=port, DBUsername=user)
            return db.Database(settings.database_url, secret=secret, iam_token=iam_token,
                               proxy_endpoint=settings.database_proxy_endpoint)

        return self._once("database", make)

    def connections(self) -> db.Connections:
        """The container's connection (DB_POOL_MAX_SIZE=1, Lambda) or pool."""
        return self._once("connections", lambda: self.database().connections(self.settings.db_pool_max_size))

    # The event store and the command handlers.

    def store(self, *, for_state: bool = False) -> EventStore:
        """The event store, sealing and opening personal data. `for_state`:
        for loading an aggregate to decide on, which needs only the personal
        data its state ends with."""
        def make() -> EventStore:
            from chalicelib.eventstore.postgres import PostgresEventStore

            connections = self.connections()
            return self._sealed(self.injected_store or PostgresEventStore(connections), connections.connection,
                                for_state)

        return self._once(f"store-for-state-{for_state}", make)

    def store_in(self, conn: psycopg.Connection, *, for_state: bool = True) -> EventStore:
        """The event store inside a caller's transaction on `conn`."""
        from chalicelib.eventstore.postgres import PostgresEventStore

        within = db.TransactionConnection(conn)
        return self._sealed(self.injected_store or PostgresEventStore(within), within.connection, for_state)

    def _sealed(self, store: EventStore, connect, for_state: bool) -> EventStore:
        from chalicelib.personal.sealing import SealedEventStore

        personal = self.personal_data()
        return store if personal is None else SealedEventStore(store, personal, connect, for_state=for_state)

    def commands(self, store: EventStore | None = None) -> CustomerCommands:
        """The Customer's command handlers, on the container's store or `store`."""
        from chalicelib.usecases.commands import CustomerCommands

        def make(on: EventStore) -> CustomerCommands:
            return CustomerCommands(on, max_retries=self.settings.command_max_retries,
                                    snapshot_every=self.settings.customer_snapshot_every or None,
                                    on_retry=lambda: metrics.count("CommandRetries"))

        if store is not None:
            return make(store)
        return self._once("commands", lambda: make(self.store(for_state=True)))

    def open_event(self) -> Callable[[RecordedEvent], RecordedEvent]:
        """Makes a stored event's personal data readable, on the container's connection."""
        personal = self.personal_data()
        if personal is None:
            return lambda event: event
        return lambda event: personal.open_recorded(event, lambda: self.connections().connection())

    # Personal data.

    def personal_data(self) -> PersonalData | None:
        """Encryption of personal data (KMS_KEY_ID); None when not configured."""
        settings = self.settings
        if not settings.kms_key_id:
            return None

        def make() -> PersonalData:
            from chalicelib.domain.customer import Customer, registry
            from chalicelib.personal.email_hash import EmailHash, email_hash_key
            from chalicelib.personal.keyring import KeyRing
            from chalicelib.personal.sealing import Declared, PersonalData

            secret = Secret(settings.email_hash_secret_arn, self.aws)
            keys = KeyRing(lambda: self.database().connect(autocommit=True), lambda: self.aws("kms"),
                           settings.kms_key_id)
            email_hash = EmailHash(lambda: email_hash_key(secret.value()))
            return PersonalData(keys, email_hash, Declared.of(registry, Customer))

        return self._once("personal-data", make)

    def erasure_log(self) -> ErasureLog:
        """Where erasures are recorded before they are made (ERASURE_LOG_BUCKET)."""
        from chalicelib.personal.erasure_log import ErasureLog

        return ErasureLog(self.settings.require_erasure_log(), self.aws)

    def email_hash(self) -> Callable[[str], str] | None:
        personal = self.personal_data()
        return personal.email_hash if personal else None

    # Who calls.

    def verifier(self) -> Verifier:
        if self._verifier is not None:
            return self._verifier

        def make() -> Verifier:
            from chalicelib.auth import TokenVerifier

            issuer, jwks_url = self.settings.require_auth()
            # The issuer's keys are cached in it, fetched again as they age.
            return TokenVerifier(issuer, self.settings.auth_audience, jwks_url,
                                 leeway_seconds=self.settings.auth_leeway_seconds,
                                 audience_claim=self.settings.auth_audience_claim,
                                 refresh_seconds=self.settings.auth_jwks_refresh_seconds)

        return self._once("verifier", make)

    # Kafka, dead letters, health.

    def publisher(self) -> Publish:
        """One producer per container, kept by warm invocations."""
        if self.injected_publish is not None:
            return self.injected_publish

        def make() -> Publish:
            from chalicelib.infra.kafka_publisher import KafkaPublisher

            settings = self.settings
            signing = self.message_signing()
            return KafkaPublisher(settings.require_kafka(), settings.kafka_topic, settings.event_source,
                                  max_message_bytes=settings.kafka_max_message_bytes, security=self.kafka_security,
                                  sign=signing.sign if signing else None)

        return self._once("publisher", make)

    def message_signing(self) -> MessageSigning | None:
        """The key the relay signs messages with and the projection checks
        them by (MESSAGE_SIGNING_SECRET_ARN); None when not configured."""
        arn = self.settings.message_signing_secret_arn
        if not arn:
            return None

        def make() -> MessageSigning:
            from chalicelib.infra.message_signing import MessageSigning

            return MessageSigning(Secret(arn, self.aws))

        return self._once("message-signing", make)

    def kafka_security(self) -> dict[str, Any]:
        """kafka-python's TLS and SASL settings (KAFKA_SECURITY_PROTOCOL, ...)."""
        from chalicelib.infra.kafka_security import security_settings

        settings = self.settings
        secret = Secret(settings.kafka_sasl_secret_arn, self.aws) if settings.kafka_sasl_secret_arn else None
        return security_settings(settings.kafka_security_protocol, settings.kafka_sasl_mechanism,
                                 cafile=settings.kafka_ssl_cafile, sasl_secret=secret)

    def dead_letter_queue(self) -> DeadLetterQueue | None:
        from chalicelib.infra.dead_letters import DeadLetterQueue

        url = self.settings.projection_dlq_url
        return DeadLetterQueue(url, self.aws) if url else None

    def health_check(self) -> HealthCheck:
        def make() -> HealthCheck:
            from chalicelib.usecases.health import HealthCheck, Limits

            settings = self.settings
            limits = Limits(settings.health_max_outbox_age_seconds, settings.health_max_projection_lag_seconds)
            return HealthCheck(lambda: self.connections().connection(), limits, settings.health_cache_seconds)

        return self._once("health-check", make)

    def close(self) -> None:
        with self._lock:
            for name in ("publisher", "connections"):
                part = self._made.pop(name, None)
                if part is not None:
                    part.close()
            self._made.clear()
