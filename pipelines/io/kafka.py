"""The Kafka client config for the stack's broker (or the brokers in `settings.kafka_bootstrap_servers`).

Here, not in infra/, so that commands and tests that read or write topics need not import the code
that starts the local stack.
"""

from __future__ import annotations

from typing import Any

from schemas.settings import Settings

__all__ = ["kafka_client_config"]


def kafka_client_config(settings: Settings, **extra: Any) -> dict[str, Any]:
    """confluent_kafka client config for the stack's broker, plus `extra` keys."""
    return {"bootstrap.servers": settings.kafka_bootstrap, **extra}
