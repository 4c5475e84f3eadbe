"""The composition root: builds the parts of the service once per
container, on first use, and hands each use case the ones it names
(chalicelib.application does the handing).

Nothing is opened when it is built, and nothing at import (Lambda's cold
start): the connection, the key ring, the token verifier and the Kafka
producer are made when a use case first asks, each once even when many
threads ask at once (`chalice local` serves each request on its own), and a
part that failed to be made is made again by the next caller. Warm
invocations keep them, through `chalicelib.application.current()`.

Tests replace a part through the constructor (a sender that records, a
verifier, AWS clients, units of work on a fake store), the way
eventsourcing's Application lets its parts be replaced.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from chalicelib.infra import db
from chalicelib.infra.aws import AwsClients
from chalicelib.infra.credentials import Secret
from chalicelib.infra.logs import log
from chalicelib.infra.settings import Settings

if TYPE_CHECKING:
    from chalicelib.auth import Caller
    from chalicelib.eventstore.backfill import BackfillRunner
    from chalicelib.eventstore.relay import Sender
    from chalicelib.infra.dead_letters import DeadLetter, DeadLetterQueue
    from chalicelib.infra.kafka_publisher import KafkaPublisher
    from chalicelib.infra.kafka_reader import TopicReader
    from chalicelib.infra.message_signing import MessageSigning
    from chalicelib.personal.erasure_log import ErasureLog
    from chalicelib.personal.sealing import PersonalData
    from chalicelib.usecases.health import HealthCheck
    from chalicelib.usecases.publishing import Relays
    from chalicelib.usecases.unit_of_work import PostgresUnitsOfWork, UnitsOfWork

T = TypeVar("T")

# boto3 clients by service name (chalicelib.infra.aws).
AwsClient = Callable[[str], Any]


class Verifier(Protocol):
    def verify(self, authorization: str | None) -> Caller: ...


class Bootstrap:
    def __init__(self, settings: Settings, *, sender: Sender | None = None, verifier: Verifier | None = None,
                 aws: AwsClient | None = None, command_units: UnitsOfWork | None = None) -> None:
        self.settings = settings
        self.aws: AwsClient = aws or AwsClients()
        self._sender = sender
        self._verifier = verifier
        self._command_units = command_units
        self._made: dict[str, Any] = {}
        # Reentrant: a part made under it may need another (the connections need the database).
        self._lock = threading.RLock()

    def _once(self, name: str, make: Callable[[], T]) -> T:
        """The part `name`, made by `make` the first time it is asked for."""
        part = self._made.get(name)
        if part is None:
            with self._lock:
                part = self._made.get(name)
                if part is None:
                    part = self._made[name] = make()
        made: T = part
        return made

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
                    token: str = self.aws("rds").generate_db_auth_token(DBHostname=host, Port=port, DBUsername=user)
                    return token
            return db.Database(settings.database_url, secret=secret, iam_token=iam_token,
                               proxy_endpoint=settings.database_proxy_endpoint)

        return self._once("database", make)

    def connections(self) -> db.Connections:
        """The container's connection (DB_POOL_MAX_SIZE=1, Lambda) or pool."""
        return self._once("connections", lambda: self.database().connections(self.settings.db_pool_max_size))

    def units(self) -> PostgresUnitsOfWork:
        """Units of work on the container's connections, sealing personal data."""
        def make() -> PostgresUnitsOfWork:
            from chalicelib.usecases.unit_of_work import PostgresUnitsOfWork

            settings = self.settings
            return PostgresUnitsOfWork(self.connections(), self.personal_data(),
                                       snapshot_every=settings.customer_snapshot_every or None,
                                       idempotency_ttl_seconds=settings.idempotency_ttl_hours * 3600)

        return self._once("units", make)

    def command_units(self) -> UnitsOfWork:
        """Where commands run: the units of work, or those a test gave."""
        return self._command_units if self._command_units is not None else self.units()

    # Personal data.

    def personal_data(self) -> PersonalData | None:
        """Encryption of personal data (KMS_KEY_ID); None when not configured."""
        return self.required_personal_data() if self.settings.kms_key_id else None

    def required_personal_data(self) -> PersonalData:
        """Encryption of personal data; ConfigurationError without KMS_KEY_ID."""
        settings = self.settings
        kms_key_id = settings.require_kms()

        def make() -> PersonalData:
            from chalicelib.domain.customer import Customer, registry
            from chalicelib.personal.email_hash import EmailHash, email_hash_key
            from chalicelib.personal.keyring import KeyRing
            from chalicelib.personal.sealing import Declared, PersonalData

            secret = Secret(settings.require_email_hash_secret(), self.aws)
            keys = KeyRing(lambda: self.database().connect(autocommit=True), lambda: self.aws("kms"), kms_key_id)
            email_hash = EmailHash(lambda: email_hash_key(secret.value()))
            return PersonalData(keys, email_hash, Declared.of(registry, Customer))

        return self._once("personal-data", make)

    def erasure_log(self) -> ErasureLog:
        """Where erasures are recorded before they are made (ERASURE_LOG_BUCKET)."""
        from chalicelib.personal.erasure_log import ErasureLog

        return ErasureLog(self.settings.require_erasure_log(), self.aws)

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

    def sender(self) -> Sender:
        """The container's Kafka producer (or a test's sender), measured."""
        def make() -> Sender:
            from chalicelib.usecases.publishing import MeasuredSender

            return MeasuredSender(self._sender if self._sender is not None else self.publisher())

        return self._once("sender", make)

    def publisher(self) -> Sender:
        """One producer per container, kept by warm invocations."""
        return self.topic_publisher(self.settings.kafka_topic)

    def relays(self) -> Relays:
        """What each shard's relay is made of: a direct connection, the sender,
        the events as consumers read them."""
        def make() -> Relays:
            from chalicelib.usecases.publishing import Relays, for_consumers, keys_of_batch

            personal = self.personal_data()
            return Relays(self.database().direct(), self.sender(), for_consumers(personal), keys_of_batch(personal),
                          self.settings)

        return self._once("relays", make)

    def backfill_runner(self) -> BackfillRunner:
        """Backfills run on a direct connection of their own and a producer
        per topic, apart from the live relay's."""
        def make() -> BackfillRunner:
            from chalicelib.eventstore.backfill import BackfillRunner
            from chalicelib.usecases.backfills import as_consumers_read_them, replay_senders

            database = self.database().direct()
            return BackfillRunner(
                lambda: database.connect(autocommit=True, connect_timeout=5,
                                         application_name="customer-service-backfill"),
                replay_senders(self.topic_publisher, self.settings.backfill_topic_prefix),
                as_consumers_read_them(self.personal_data()),
                batch_size=self.settings.backfill_batch_size,
                on_error=lambda error: log("backfill_publish_failed", level="error", error=str(error)))

        return self._once("backfill-runner", make)

    def topic_publisher(self, topic: str) -> KafkaPublisher:
        """A producer of the live messages, to another topic (a backfill's)."""
        def make() -> KafkaPublisher:
            from chalicelib.infra.kafka_publisher import KafkaPublisher

            settings = self.settings
            signing = self.message_signing()
            return KafkaPublisher(settings.require_kafka(), topic, settings.event_source,
                                  max_message_bytes=settings.kafka_max_message_bytes, security=self.kafka_security,
                                  sign=signing.sign if signing else None)

        return self._once(f"publisher-to-{topic}", make)

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

    def keys_at(self, letter: DeadLetter) -> tuple[list[bytes | None], bool]:
        """The keys of a failed batch's records, read back from Kafka by their offsets."""
        from chalicelib.infra.kafka_reader import keys_at

        return keys_at(self.settings.require_kafka(), letter.offsets(), self.kafka_security())

    def topic_reader(self) -> TopicReader | None:
        """The live topic, read for the console (a Kafka client per use);
        None without KAFKA_BOOTSTRAP_SERVERS."""
        from chalicelib.infra.kafka_reader import TopicReader

        settings = self.settings
        if not settings.kafka_bootstrap_servers:
            return None
        return TopicReader(settings.kafka_bootstrap_servers, settings.kafka_topic, self.kafka_security())

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
            for name in [name for name in self._made if name.startswith("publisher-to-")]:
                self._made.pop(name).close()
            connections = self._made.pop("connections", None)
            if connections is not None:
                connections.close()
            self._made.clear()
