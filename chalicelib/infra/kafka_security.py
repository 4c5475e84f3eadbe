"""kafka-python's TLS and SASL settings, for every client this service
makes (the relay's producer, the dead-letter replay's reader): MSK IAM,
SCRAM or PLAIN over TLS or not (KAFKA_SECURITY_PROTOCOL and its kin)."""

from __future__ import annotations

from typing import Any

from chalicelib.infra.credentials import CredentialsUnavailable, Secret, sasl_user


def security_settings(protocol: str = "PLAINTEXT", mechanism: str | None = None, *, cafile: str | None = None,
                      sasl_secret: Secret | None = None) -> dict[str, Any]:
    """kafka-python's settings for TLS and SASL. AWS_MSK_IAM signs with the
    function's role (botocore's credentials); PLAIN and SCRAM read their
    user from a Secrets Manager secret, anew for each new client, so that a
    rotated password is picked up by the client made after a refusal."""
    config: dict[str, Any] = {"security_protocol": protocol}
    if cafile:
        config["ssl_cafile"] = cafile
    if protocol.startswith("SASL_"):
        config["sasl_mechanism"] = mechanism
        if mechanism != "AWS_MSK_IAM":
            if sasl_secret is None:
                raise CredentialsUnavailable(f"SASL {mechanism} needs a secret with its username and password")
            sasl_secret.refresh(sasl_secret.reads)
            config["sasl_plain_username"], config["sasl_plain_password"] = sasl_user(sasl_secret)
    return config
