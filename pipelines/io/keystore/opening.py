"""open_keystore: the key store the settings name, SQLite or PostgreSQL, with its master keys."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipelines.io.keystore.errors import KeyStoreError
from pipelines.io.keystore.master_keys import load_master_keys
from pipelines.io.keystore.postgres import PostgresKeyStore, _redact
from pipelines.io.keystore.sqlite import SqliteKeyStore

if TYPE_CHECKING:
    from schemas.settings import Settings

__all__ = ["open_keystore"]


def open_keystore(settings: Settings, **options: object) -> SqliteKeyStore | PostgresKeyStore:
    """Opens the key store that settings name, with its master key(s) and optional key seed.

    AUDITLOG_KEYSTORE_URL=postgresql://... selects the shared PostgreSQL store (every
    TaskManager, gateway and service of a cluster); unset, the embedded SQLite file at
    `settings.keystore_path`. `options` pass through to the store (cache_size,
    erasure_check_s; busy_timeout_s for SQLite).
    """
    seed = settings.key_seed.encode() if settings.key_seed else None
    url = settings.keystore_url
    if url:
        if not url.startswith(("postgresql://", "postgres://")):
            raise KeyStoreError(
                f"AUDITLOG_KEYSTORE_URL must be a postgresql:// URL, not {_redact(url)!r}; leave it unset "
                "for the embedded SQLite key store (AUDITLOG_KEYSTORE_FILE)"
            )
        return PostgresKeyStore(url, load_master_keys(settings), key_seed=seed, **options)  # type: ignore[arg-type]
    return SqliteKeyStore(
        settings.keystore_path,
        load_master_keys(settings),
        key_seed=seed,
        **options,  # type: ignore[arg-type]
    )
