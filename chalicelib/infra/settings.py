"""Configuration, read from environment variables only (set per stage in
.chalice/config.json on AWS, filled by the local stack on a laptop)."""

from __future__ import annotations

import os
from dataclasses import dataclass


class ConfigurationError(RuntimeError):
    pass


KAFKA_SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
KAFKA_SASL_MECHANISMS = ("AWS_MSK_IAM", "SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")


@dataclass(frozen=True)
class Settings:
    database_url: str
    db_pool_max_size: int
    command_max_retries: int
    kafka_bootstrap_servers: str | None
    kafka_topic: str
    kafka_max_message_bytes: int
    event_source: str
    relay_max_seconds: float
    relay_batch_size: int
    outbox_retention_hours: float
    customer_snapshot_every: int
    idempotency_ttl_hours: float
    health_max_outbox_age_seconds: float
    auth_issuer: str | None
    auth_audience: str
    auth_jwks_url: str | None
    auth_audience_claim: str
    auth_leeway_seconds: float
    health_max_projection_lag_seconds: float
    # With a secret, DATABASE_URL only adds connection options (sslmode);
    # user, password, host, port and dbname come from the secret.
    database_secret_arn: str | None = None
    database_iam_auth: bool = False
    # RDS Proxy: the API and the projection connect through it, the relay never.
    database_proxy_endpoint: str | None = None
    health_cache_seconds: float = 5.0
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str | None = None
    kafka_sasl_secret_arn: str | None = None
    kafka_ssl_cafile: str | None = None
    projection_dlq_url: str | None = None
    # Personal data is encrypted under keys from this KMS key; without it,
    # stored in clear (and erasure refuses to run).
    kms_key_id: str | None = None
    email_hash_secret_arn: str | None = None
    # The relay signs what it publishes with its key; the projection then
    # refuses records it did not sign.
    message_signing_secret_arn: str | None = None
    # Where erasures are recorded before they are made, out of the database's
    # reach: a restored database has them re-applied from there.
    erasure_log_bucket: str | None = None
    # Relays side by side, each draining its share of the outbox.
    relay_shards: int = 1
    # A key the issuer withdraws stops working within this time.
    auth_jwks_refresh_seconds: float = 300.0
    # Events per batch of a backfill (one send, one checkpoint).
    backfill_batch_size: int = 500
    # Backfills go only to topics of this prefix (what their function may
    # write to on AWS); any topic without it.
    backfill_topic_prefix: str | None = None
    # The projection's consumer group (its event source mapping's): the
    # console shows its lag per partition.
    projection_group_id: str = "customer-service-projection"
    # The console signs in at the issuer (OpenID Connect, code flow with
    # PKCE) as this public client; without them it cannot sign anyone in.
    console_client_id: str | None = None
    auth_authorize_url: str | None = None
    auth_token_url: str | None = None

    @staticmethod
    def from_env() -> Settings:
        url = os.environ.get("DATABASE_URL", "").strip()
        secret_arn = os.environ.get("DATABASE_SECRET_ARN", "").strip() or None
        if not url and not secret_arn:
            raise ConfigurationError(
                "neither DATABASE_SECRET_ARN nor DATABASE_URL is set: use `make run` for a local stack,"
                " or point one of them at your PostgreSQL"
            )
        _check_database_url(url)
        protocol = (os.environ.get("KAFKA_SECURITY_PROTOCOL", "").strip() or "PLAINTEXT").upper()
        if protocol not in KAFKA_SECURITY_PROTOCOLS:
            raise ConfigurationError(f"KAFKA_SECURITY_PROTOCOL must be one of {', '.join(KAFKA_SECURITY_PROTOCOLS)},"
                                     f" not {protocol!r}")
        mechanism = os.environ.get("KAFKA_SASL_MECHANISM", "").strip().upper() or None
        if protocol.startswith("SASL_") and mechanism not in KAFKA_SASL_MECHANISMS:
            raise ConfigurationError(f"KAFKA_SECURITY_PROTOCOL {protocol} needs KAFKA_SASL_MECHANISM, one of"
                                     f" {', '.join(KAFKA_SASL_MECHANISMS)}")
        sasl_secret = os.environ.get("KAFKA_SASL_SECRET_ARN", "").strip() or None
        if mechanism in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512") and not sasl_secret:
            raise ConfigurationError(f"KAFKA_SASL_MECHANISM {mechanism} needs KAFKA_SASL_SECRET_ARN, a secret"
                                     " holding username and password")
        if mechanism == "AWS_MSK_IAM" and protocol != "SASL_SSL":
            raise ConfigurationError("KAFKA_SASL_MECHANISM AWS_MSK_IAM needs KAFKA_SECURITY_PROTOCOL SASL_SSL")
        kms_key_id = os.environ.get("KMS_KEY_ID", "").strip() or None
        email_hash_secret = os.environ.get("EMAIL_HASH_SECRET_ARN", "").strip() or None
        if kms_key_id and not email_hash_secret:
            raise ConfigurationError("KMS_KEY_ID needs EMAIL_HASH_SECRET_ARN: emails are compared by a keyed hash"
                                     " whose key is in that secret")
        issuer = os.environ.get("AUTH_ISSUER", "").strip().rstrip("/") or None
        relay_shards = _int("RELAY_SHARDS", 1)
        if not 1 <= relay_shards <= MAX_RELAY_SHARDS:
            raise ConfigurationError(f"RELAY_SHARDS must be from 1 to {MAX_RELAY_SHARDS} (the outbox's buckets),"
                                     f" not {relay_shards}")
        jwks_refresh = _int("AUTH_JWKS_REFRESH_SECONDS", 300)
        if not MIN_JWKS_REFRESH_SECONDS <= jwks_refresh <= MAX_JWKS_REFRESH_SECONDS:
            raise ConfigurationError(f"AUTH_JWKS_REFRESH_SECONDS must be from {MIN_JWKS_REFRESH_SECONDS} to"
                                     f" {MAX_JWKS_REFRESH_SECONDS}: a withdrawn key must stop working within"
                                     " ten minutes, and the issuer must not be asked at every request")
        return Settings(
            database_url=url,
            # One connection per container: a Lambda container serves one
            # invocation at a time. The threaded local server sets more.
            db_pool_max_size=_int("DB_POOL_MAX_SIZE", 1),
            command_max_retries=_int("COMMAND_MAX_RETRIES", 5),
            kafka_bootstrap_servers=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip() or None,
            kafka_topic=os.environ.get("KAFKA_TOPIC", "").strip() or "customer-events",
            kafka_max_message_bytes=_int("KAFKA_MAX_MESSAGE_BYTES", 1_000_000),
            event_source=os.environ.get("EVENT_SOURCE", "").strip() or "/customer-service",
            relay_max_seconds=float(_int("RELAY_MAX_SECONDS", 55)),
            relay_batch_size=max(1, _int("RELAY_BATCH_SIZE", 500)),
            outbox_retention_hours=float(_int("OUTBOX_RETENTION_HOURS", 168)),
            customer_snapshot_every=_int("CUSTOMER_SNAPSHOT_EVERY", 100),
            idempotency_ttl_hours=float(_int("IDEMPOTENCY_TTL_HOURS", 24)),
            health_max_outbox_age_seconds=float(_int("HEALTH_MAX_OUTBOX_AGE_SECONDS", 120)),
            health_max_projection_lag_seconds=float(_int("HEALTH_MAX_PROJECTION_LAG_SECONDS", 120)),
            auth_issuer=issuer,
            auth_audience=os.environ.get("AUTH_AUDIENCE", "").strip() or "customer-service",
            auth_jwks_url=os.environ.get("AUTH_JWKS_URL", "").strip()
            or (f"{issuer}/.well-known/jwks.json" if issuer else None),
            auth_audience_claim=os.environ.get("AUTH_AUDIENCE_CLAIM", "").strip() or "aud",
            auth_leeway_seconds=float(_int("AUTH_LEEWAY_SECONDS", 30)),
            database_secret_arn=secret_arn,
            database_iam_auth=_flag("DATABASE_IAM_AUTH"),
            database_proxy_endpoint=os.environ.get("DATABASE_PROXY_ENDPOINT", "").strip() or None,
            health_cache_seconds=float(_int("HEALTH_CACHE_SECONDS", 5)),
            kafka_security_protocol=protocol,
            kafka_sasl_mechanism=mechanism if protocol.startswith("SASL_") else None,
            kafka_sasl_secret_arn=sasl_secret,
            kafka_ssl_cafile=os.environ.get("KAFKA_SSL_CAFILE", "").strip() or None,
            projection_dlq_url=os.environ.get("PROJECTION_DLQ_URL", "").strip() or None,
            kms_key_id=kms_key_id,
            email_hash_secret_arn=email_hash_secret,
            message_signing_secret_arn=os.environ.get("MESSAGE_SIGNING_SECRET_ARN", "").strip() or None,
            auth_jwks_refresh_seconds=float(jwks_refresh),
            relay_shards=relay_shards,
            erasure_log_bucket=os.environ.get("ERASURE_LOG_BUCKET", "").strip() or None,
            backfill_batch_size=max(1, _int("BACKFILL_BATCH_SIZE", 500)),
            backfill_topic_prefix=os.environ.get("BACKFILL_TOPIC_PREFIX", "").strip() or None,
            projection_group_id=os.environ.get("PROJECTION_GROUP_ID", "").strip() or "customer-service-projection",
            console_client_id=os.environ.get("CONSOLE_CLIENT_ID", "").strip() or None,
            auth_authorize_url=os.environ.get("AUTH_AUTHORIZE_URL", "").strip()
            or (f"{issuer}/authorize" if issuer else None),
            auth_token_url=os.environ.get("AUTH_TOKEN_URL", "").strip() or (f"{issuer}/token" if issuer else None),
        )

    def require_auth(self) -> tuple[str, str]:
        if not self.auth_issuer or not self.auth_jwks_url:
            raise ConfigurationError(
                "AUTH_ISSUER is not set: every data route needs a token issuer; `make run` sets up a development one"
            )
        return self.auth_issuer, self.auth_jwks_url

    def require_kms(self) -> str:
        if not self.kms_key_id:
            raise ConfigurationError("KMS_KEY_ID is not set: personal data is stored in clear, so it cannot be"
                                     " erased; `make run` and the template set it")
        return self.kms_key_id

    def require_email_hash_secret(self) -> str:
        if not self.email_hash_secret_arn:
            raise ConfigurationError("KMS_KEY_ID needs EMAIL_HASH_SECRET_ARN: emails are compared by a keyed hash"
                                     " whose key is in that secret")
        return self.email_hash_secret_arn

    def require_erasure_log(self) -> str:
        if not self.erasure_log_bucket:
            raise ConfigurationError("ERASURE_LOG_BUCKET is not set: an erasure is recorded outside the database"
                                     " before it is made, so that a restored database can have it made again;"
                                     " `make run` and the template set it")
        return self.erasure_log_bucket

    def require_kafka(self) -> str:
        if not self.kafka_bootstrap_servers:
            raise ConfigurationError(
                "KAFKA_BOOTSTRAP_SERVERS is not set: use `make run` for a local stack, or set it to your brokers"
            )
        return self.kafka_bootstrap_servers


def _check_database_url(url: str) -> None:
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict

    try:
        conninfo_to_dict(url)
    except ProgrammingError as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else "not readable"
        raise ConfigurationError(f"DATABASE_URL is not a PostgreSQL connection string ({reason}): use the form"
                                 " postgresql://user:password@host:port/dbname") from None


def _flag(name: str) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    if raw in ("", "0", "false", "no"):
        return False
    if raw in ("1", "true", "yes"):
        return True
    raise ConfigurationError(f"{name} must be true or false, not {raw!r}")


MIN_JWKS_REFRESH_SECONDS, MAX_JWKS_REFRESH_SECONDS = 10, 600
MAX_RELAY_SHARDS = 32  # the outbox's buckets (migration 016)


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be an integer, not {raw!r}") from None
    if value < 0:
        raise ConfigurationError(f"{name} must not be negative")
    return value
