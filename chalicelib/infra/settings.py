"""Configuration, read from environment variables only (set per stage in
.chalice/config.json on AWS, filled by the local stack on a laptop)."""

from __future__ import annotations

import os
from dataclasses import dataclass


class ConfigurationError(RuntimeError):
    pass


@dataclass(frozen=True)
class Settings:
    database_url: str
    db_pool_max_size: int
    command_max_retries: int

    @staticmethod
    def from_env() -> Settings:
        url = os.environ.get("DATABASE_URL", "").strip()
        if not url:
            raise ConfigurationError(
                "DATABASE_URL is not set: use `make run` for a local stack, or set it to your PostgreSQL"
            )
        return Settings(
            database_url=url,
            db_pool_max_size=_int("DB_POOL_MAX_SIZE", 4),
            command_max_retries=_int("COMMAND_MAX_RETRIES", 5),
        )


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
