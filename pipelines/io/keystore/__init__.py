"""The key store: one pair of PII keys per (tenant, subject), and crypto-shredding (docs/design.md §9).

The ingest job seals each event's personal data with its actor's keys (`transforms.pii`).
Erasing a person destroys their keys: every sealed value of theirs becomes unreadable and every
lookup hash unlinkable, while the leaves, and so every proof, stay exactly as they were.

Three implementations of one interface, `KeyStore`:

- `SqliteKeyStore`, the embedded default: one SQLite file (`settings.keystore_path`, by default
  HOME/keystore.sqlite). Subject keys are stored only wrapped (AES-256-GCM-SIV, bound to tenant,
  subject, key id and master id) under a 32-byte master key read from AUDITLOG_MASTER_KEY_FILE
  or AUDITLOG_MASTER_KEY. Safe for several processes on one host: WAL, a busy timeout, and a
  race-free `get_or_create` (INSERT ... ON CONFLICT DO NOTHING; the loser reads the winner).
- `PostgresKeyStore`, the shared store for more than one host (AUDITLOG_KEYSTORE_URL=
  postgresql://...): the same tables, wrapping, cache, tombstones and rotation (both are
  `_SqlKeyStore`), with advisory and row locks where SQLite has its single writer.
- `InMemoryKeyStore`: the same semantics in a dict, no master key, for tests.

Usage::

    auditlog keys master generate --out /secure/master.key     # once; mode 0600
    export AUDITLOG_MASTER_KEY_FILE=/secure/master.key

    store = open_keystore(Settings.from_env())
    keys = store.get_or_create(event["tenant_id"], pii_subject(event))
    document = protect_event(event, keys)
    store.destroy(tenant_id, subject_id)     # right to erasure: crypto-shred, leave a tombstone

Master-key rotation without downtime (every step keeps every process working):

1. `store.rotate_master(new_key)` from a process holding the current key: registers the new
   master and wraps every subject key under it as well, in short batches.
2. Roll every process to a key file listing the new key first and the old one second (the first
   key wraps new subject keys; all listed keys unwrap).
3. `store.retire_master(old_id)` once no process runs with the old key alone: re-wraps keys that
   such processes created meanwhile, deletes every copy wrapped under the old key and marks it
   retired (a process that still presents it gets a clear error). Then drop the old line.

`rotate_master(new_key, retire_previous=True)` does 1 and 3 at once when a single process uses
the store.

The package, one module a part (each re-exported here, so `from pipelines.io.keystore import X`
is the way in):

    errors        KeyStoreError and its kinds
    subject_keys  new subject keys: random, or derived from a seed for CI replays
    wrapping      master keys in use: ids, key-check values, wrapping subject keys under them
    master_keys   master-key files and variables: reading, parsing, writing a new key
    base          KeyStore, the interface
    memory        InMemoryKeyStore (used by `auditlog demo` as well as by tests)
    sql           _SqlKeyStore: what the SQLite and PostgreSQL stores share, rotation included
    sqlite        SqliteKeyStore, the embedded default
    postgres      PostgresKeyStore, the shared store
    opening       open_keystore: the store the settings name
"""

from pipelines.io.keystore.base import KeyStore
from pipelines.io.keystore.errors import KeyStoreError, MasterKeyError, SubjectErasedError
from pipelines.io.keystore.master_keys import load_master_keys, parse_master_keys, write_master_key_file
from pipelines.io.keystore.memory import InMemoryKeyStore
from pipelines.io.keystore.opening import open_keystore
from pipelines.io.keystore.postgres import PostgresKeyStore
from pipelines.io.keystore.sql import DEFAULT_CACHE_SIZE
from pipelines.io.keystore.sqlite import SqliteKeyStore
from pipelines.io.keystore.subject_keys import derive_subject_keys, random_subject_keys
from pipelines.io.keystore.wrapping import MASTER_KEY_SIZE, master_key_id

__all__ = [
    "DEFAULT_CACHE_SIZE",
    "MASTER_KEY_SIZE",
    "InMemoryKeyStore",
    "KeyStore",
    "KeyStoreError",
    "MasterKeyError",
    "PostgresKeyStore",
    "SqliteKeyStore",
    "SubjectErasedError",
    "derive_subject_keys",
    "load_master_keys",
    "master_key_id",
    "open_keystore",
    "parse_master_keys",
    "random_subject_keys",
    "write_master_key_file",
]
