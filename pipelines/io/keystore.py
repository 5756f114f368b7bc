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
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import re
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCMSIV
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from transforms.pii import KEY_SIZE, SubjectErased, SubjectKeys

if TYPE_CHECKING:
    from schemas.settings import Settings

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

log = logging.getLogger(__name__)

MASTER_KEY_SIZE = 32
KEY_ID_SIZE = 8
"""Bytes of a subject key id (16 hex digits): a label carried in sealed values, not an index."""
SUBJECT_MATERIAL_SIZE = 2 * KEY_SIZE + KEY_ID_SIZE
WRAP_NONCE_SIZE = 12
DEFAULT_CACHE_SIZE = 100_000
DEFAULT_BUSY_TIMEOUT_S = 30.0
DEFAULT_ERASURE_CHECK_S = 1.0
"""How stale another process's erasure may be in this process's cache, at most."""
REWRAP_BATCH = 1000
STORE_FORMAT = "1"

_CHECK_LABEL = b"auditlog/keystore/key-check/1"
_MASTER_ID_LABEL = b"auditlog/keystore/master-id/1"
_WRAP_INFO = b"auditlog/keystore/wrap/1"
_SEED_SALT = b"auditlog/keystore/subject-keys/1"
_SEED_ID_LABEL = b"auditlog/keystore/seed-id/1"

_SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS masters (
    master_id TEXT PRIMARY KEY,
    check_value BLOB NOT NULL,        -- HMAC-SHA256(master, _CHECK_LABEL): proves a key is this one
    state TEXT NOT NULL CHECK (state IN ('active', 'retired')),
    added_at TEXT NOT NULL,
    retired_at TEXT
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS subject_keys (  -- one row per live subject: the race arbiter
    tenant_id TEXT NOT NULL,
    subject_id TEXT NOT NULL,
    key_id TEXT NOT NULL,
    PRIMARY KEY (tenant_id, subject_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS wrapped_keys (  -- one copy per master during a rotation
    tenant_id TEXT NOT NULL,
    subject_id TEXT NOT NULL,
    master_id TEXT NOT NULL,
    wrapped BLOB NOT NULL,
    PRIMARY KEY (tenant_id, subject_id, master_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS wrapped_keys_by_master ON wrapped_keys (master_id);
CREATE TABLE IF NOT EXISTS erasures (      -- tombstones: these subjects never get a key again
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id TEXT NOT NULL,
    subject_id TEXT NOT NULL,
    key_id TEXT,
    erased_at TEXT NOT NULL,
    UNIQUE (tenant_id, subject_id)
);
"""


POSTGRES_SCHEMA = "keystore"
"""The PostgreSQL schema of the key store's tables, in the database its URL names."""
POSTGRES_CREATE_BATCH = 256
_SETUP_LOCK = 0x6175_6469_746C_6B73  # "auditlks": serialises creating the tables

_POSTGRES_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS masters (
    master_id TEXT PRIMARY KEY,
    check_value BYTEA NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('active', 'retired')),
    added_at TEXT NOT NULL,
    retired_at TEXT
);
CREATE TABLE IF NOT EXISTS subject_keys (
    tenant_id TEXT NOT NULL,
    subject_id TEXT NOT NULL,
    key_id TEXT NOT NULL,
    PRIMARY KEY (tenant_id, subject_id)
);
CREATE TABLE IF NOT EXISTS wrapped_keys (  -- no wrapped copy without its subject's row
    tenant_id TEXT NOT NULL,
    subject_id TEXT NOT NULL,
    master_id TEXT NOT NULL REFERENCES masters (master_id),
    wrapped BYTEA NOT NULL,
    PRIMARY KEY (tenant_id, subject_id, master_id),
    FOREIGN KEY (tenant_id, subject_id) REFERENCES subject_keys (tenant_id, subject_id) ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS wrapped_keys_by_master ON wrapped_keys (master_id);
CREATE TABLE IF NOT EXISTS erasures (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    subject_id TEXT NOT NULL,
    key_id TEXT,
    erased_at TEXT NOT NULL,
    UNIQUE (tenant_id, subject_id)
);
"""

_INSERT_WRAPPED = (
    "INSERT INTO wrapped_keys (tenant_id, subject_id, master_id, wrapped) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (tenant_id, subject_id, master_id) DO UPDATE SET wrapped = excluded.wrapped"
)


class KeyStoreError(RuntimeError):
    """The key store cannot do what was asked: damaged, misconfigured, or in the wrong mode."""


class MasterKeyError(KeyStoreError):
    """The master key is missing, malformed, or not the one the key store was created with."""


class SubjectErasedError(KeyStoreError, SubjectErased):
    """A subject was erased, so it must not get keys again.

    A new key would seal the person's future events under a fresh identity that the same
    actor id links straight back to their erased history: the erasure would be silently undone.
    Callers decide what an event of an erased subject becomes: the ingest job logs it with its PII
    marked erased (schemas.events.protect_event with no keys).
    """

    def __init__(self, tenant_id: str, subject_id: str) -> None:
        self.tenant_id = tenant_id
        self.subject_id = subject_id
        super().__init__(
            f"subject {subject_id!r} of tenant {tenant_id!r} was erased: its keys were destroyed and "
            "it will not get new ones (that would re-link the person); route the event elsewhere"
        )


# --------------------------------------------------------------------------- keys


def _keys_from_material(material: bytes) -> SubjectKeys:
    enc, mac, kid = material[:KEY_SIZE], material[KEY_SIZE : 2 * KEY_SIZE], material[2 * KEY_SIZE :]
    return SubjectKeys(key_id=kid.hex(), enc_key=enc, mac_key=mac)


def random_subject_keys() -> SubjectKeys:
    """New keys from the operating system's CSPRNG: the production default."""
    return _keys_from_material(os.urandom(SUBJECT_MATERIAL_SIZE))


def derive_subject_keys(key_seed: bytes, tenant_id: str, subject_id: str) -> SubjectKeys:
    """Keys derived from a seed: HKDF-SHA256(seed, info = tenant ‖ 0x00 ‖ subject).

    For CI replays only: a fresh stack replaying a recorded topic then seals every event into the
    same bytes (docs/design.md §6). Anyone who knows the seed can read every sealed value, and
    erasure no longer shreds anything, so production must never set AUDITLOG_KEY_SEED. Tenant ids
    cannot contain 0x00 (schema pattern), so the info string is unambiguous.
    """
    info = tenant_id.encode() + b"\x00" + subject_id.encode()
    hkdf = HKDF(algorithm=hashes.SHA256(), length=SUBJECT_MATERIAL_SIZE, salt=_SEED_SALT, info=info)
    return _keys_from_material(hkdf.derive(key_seed))


def _key_mode(key_seed: bytes | None) -> str:
    if key_seed is None:
        return "random"
    return "seeded:" + hmac.new(key_seed, _SEED_ID_LABEL, hashlib.sha256).hexdigest()[:16]


# --------------------------------------------------------------------------- master keys


def master_key_id(master_key: bytes) -> str:
    """The public id of a master key (16 hex digits), stored beside everything it wraps."""
    return hmac.new(master_key, _MASTER_ID_LABEL, hashlib.sha256).hexdigest()[:16]


def parse_master_keys(text: str, source: str) -> list[bytes]:
    """Reads base64 master keys, one per line (or comma-separated); `#` lines are comments.

    The first key wraps new subject keys; the others are accepted for unwrapping during a
    rotation. `source` names where the text came from, for error messages.
    """
    keys: list[bytes] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        for token in line.replace(",", " ").split():
            try:
                key = base64.b64decode(token, validate=True)
            except ValueError:
                raise MasterKeyError(
                    f"{source}: entry {len(keys) + 1} is not base64; a master key is 32 random bytes "
                    "in base64 (make one with `auditlog keys master generate --out FILE`)"
                ) from None
            if len(key) != MASTER_KEY_SIZE:
                raise MasterKeyError(
                    f"{source}: entry {len(keys) + 1} decodes to {len(key)} bytes, not {MASTER_KEY_SIZE}; "
                    "make a master key with `auditlog keys master generate --out FILE`"
                )
            keys.append(key)
    if not keys:
        raise MasterKeyError(f"{source} holds no master key")
    return keys


def load_master_keys(settings: Settings) -> list[bytes]:
    """The master keys named by settings: AUDITLOG_MASTER_KEY_FILE, or AUDITLOG_MASTER_KEY."""
    if settings.master_key_file and settings.master_key:
        raise MasterKeyError("both AUDITLOG_MASTER_KEY_FILE and AUDITLOG_MASTER_KEY are set; set only one of them")
    if settings.master_key_file:
        path = Path(settings.master_key_file).expanduser()
        source = f"master key file {path} (AUDITLOG_MASTER_KEY_FILE)"
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise MasterKeyError(
                f"{source} does not exist; create it with `auditlog keys master generate --out {path}`"
            ) from None
        except OSError as exc:
            raise MasterKeyError(f"{source} cannot be read: {exc.strerror}") from None
        if path.stat().st_mode & 0o077:
            log.warning("%s is readable by other users; chmod 600 it", source)
        return parse_master_keys(text, source)
    if settings.master_key:
        return parse_master_keys(settings.master_key, "AUDITLOG_MASTER_KEY")
    raise MasterKeyError(
        "the key store needs a master key and none is set: run `auditlog keys master generate --out FILE` "
        "once, then set AUDITLOG_MASTER_KEY_FILE=FILE (or AUDITLOG_MASTER_KEY to its base64)"
    )


def write_master_key_file(path: Path, force: bool = False) -> tuple[Path, str]:
    """Writes a new random master key (base64, mode 0600); returns (path, master key id).

    Refuses to overwrite an existing file unless `force`: losing a master key loses every PII key.
    """
    key = os.urandom(MASTER_KEY_SIZE)
    kid = master_key_id(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise FileExistsError(
            f"{path} already exists; it may be the only copy of a master key. Pass --force to replace it"
        ) from None
    with os.fdopen(fd, "w") as f:
        f.write(f"# auditlog key-store master key, id {kid}. Keep it secret; back it up.\n")
        f.write(base64.b64encode(key).decode() + "\n")
    os.chmod(path, 0o600)
    return path, kid


@dataclass(frozen=True)
class _Master:
    """One master key, ready to use: its id, key-check value and wrapping cipher."""

    master_id: str
    check_value: bytes
    cipher: AESGCMSIV = field(repr=False)

    @classmethod
    def of(cls, key: bytes) -> _Master:
        if len(key) != MASTER_KEY_SIZE:
            raise MasterKeyError(f"a master key is {MASTER_KEY_SIZE} bytes, not {len(key)}")
        wrap_key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_WRAP_INFO).derive(key)
        return cls(
            master_id=master_key_id(key),
            check_value=hmac.new(key, _CHECK_LABEL, hashlib.sha256).digest(),
            cipher=AESGCMSIV(wrap_key),
        )


def _wrap_aad(tenant_id: str, subject_id: str, key_id: str, master_id: str) -> bytes:
    # Binding the wrap to its row stops a database writer from swapping keys between subjects.
    parts = [_WRAP_INFO, *(p.encode() for p in (tenant_id, subject_id, key_id, master_id))]
    return b"".join(len(p).to_bytes(4, "big") + p for p in parts)


def _wrap(master: _Master, tenant_id: str, subject_id: str, keys: SubjectKeys) -> bytes:
    nonce = os.urandom(WRAP_NONCE_SIZE)
    aad = _wrap_aad(tenant_id, subject_id, keys.key_id, master.master_id)
    return nonce + master.cipher.encrypt(nonce, keys.enc_key + keys.mac_key, aad)


def _unwrap(master: _Master, tenant_id: str, subject_id: str, key_id: str, blob: bytes) -> SubjectKeys:
    aad = _wrap_aad(tenant_id, subject_id, key_id, master.master_id)
    try:
        plain = master.cipher.decrypt(blob[:WRAP_NONCE_SIZE], blob[WRAP_NONCE_SIZE:], aad)
    except InvalidTag:
        raise KeyStoreError(
            f"the key of subject {subject_id!r} (tenant {tenant_id!r}) wrapped under master "
            f"{master.master_id} does not open: the key store was altered or damaged"
        ) from None
    return SubjectKeys(key_id=key_id, enc_key=plain[:KEY_SIZE], mac_key=plain[KEY_SIZE:])


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# --------------------------------------------------------------------------- the interface


class KeyStore(ABC):
    """Per-subject PII keys. Subjects are (tenant_id, subject_id); the subject is the actor id.

    Implementations are safe to share between threads. `key_seed`, when set, makes new keys a
    function of (seed, tenant, subject) — for CI replays only, see `derive_subject_keys`.
    """

    def __init__(self, key_seed: bytes | None = None) -> None:
        if key_seed is not None and not key_seed:
            raise KeyStoreError("key_seed must be non-empty bytes, or None for random keys")
        self.key_seed = key_seed

    def new_keys(self, tenant_id: str, subject_id: str) -> SubjectKeys:
        """Fresh keys for a subject that has none: random, or derived from `key_seed`."""
        if self.key_seed is not None:
            return derive_subject_keys(self.key_seed, tenant_id, subject_id)
        return random_subject_keys()

    @abstractmethod
    def get_or_create(self, tenant_id: str, subject_id: str) -> SubjectKeys:
        """The subject's keys, created on first use.

        Concurrent callers (threads or processes) for a new subject all get the same keys.

        Raises:
            SubjectErasedError: the subject was erased; it never gets keys again.
        """

    def get_or_create_many(self, subjects: Iterable[tuple[str, str]]) -> dict[tuple[str, str], SubjectKeys | None]:
        """`get_or_create` for a batch of (tenant_id, subject_id); erased subjects map to None.

        Implementations create all missing subjects in one transaction: new subjects cost one
        disk sync per batch instead of one each.
        """
        result: dict[tuple[str, str], SubjectKeys | None] = {}
        for subject in subjects:
            try:
                result[subject] = self.get_or_create(*subject)
            except SubjectErasedError:
                result[subject] = None
        return result

    @abstractmethod
    def get(self, tenant_id: str, subject_id: str) -> SubjectKeys | None:
        """The subject's keys, or None if it never had any or was erased."""

    @abstractmethod
    def destroy(self, tenant_id: str, subject_id: str) -> bool:
        """Crypto-shreds a subject: deletes its keys and leaves a tombstone.

        The tombstone is written even if the subject has no keys yet, so that an erasure request
        that arrives before the person's first event still holds. Returns True if keys existed.
        """

    @abstractmethod
    def subjects(self, tenant_id: str) -> list[str]:
        """The tenant's subjects that hold keys (erased ones are gone), for lookups by a PII value."""

    @abstractmethod
    def is_erased(self, tenant_id: str, subject_id: str) -> bool:
        """True once `destroy` was called for the subject."""

    @abstractmethod
    def rotate_master(self, new_master_key: bytes, retire_previous: bool = False) -> int:
        """Wraps every subject key under a new master key; returns how many keys were re-wrapped."""

    def close(self) -> None:  # noqa: B027 - optional hook: in-memory stores hold nothing
        """Releases files and connections; the default has none."""

    def __enter__(self) -> KeyStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------- in memory


class InMemoryKeyStore(KeyStore):
    """The key store's semantics in a dict: no master key, nothing on disk. For tests."""

    def __init__(self, key_seed: bytes | None = None) -> None:
        super().__init__(key_seed)
        self._keys: dict[tuple[str, str], SubjectKeys] = {}
        self._erased: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def get_or_create(self, tenant_id: str, subject_id: str) -> SubjectKeys:
        subject = (tenant_id, subject_id)
        keys = self._keys.get(subject)
        if keys is not None:
            return keys
        with self._lock:
            if subject in self._erased:
                raise SubjectErasedError(tenant_id, subject_id)
            return self._keys.setdefault(subject, self.new_keys(tenant_id, subject_id))

    def get(self, tenant_id: str, subject_id: str) -> SubjectKeys | None:
        return self._keys.get((tenant_id, subject_id))

    def destroy(self, tenant_id: str, subject_id: str) -> bool:
        with self._lock:
            self._erased.add((tenant_id, subject_id))
            return self._keys.pop((tenant_id, subject_id), None) is not None

    def subjects(self, tenant_id: str) -> list[str]:
        with self._lock:
            return sorted(s for t, s in self._keys if t == tenant_id)

    def is_erased(self, tenant_id: str, subject_id: str) -> bool:
        return (tenant_id, subject_id) in self._erased

    def rotate_master(self, new_master_key: bytes, retire_previous: bool = False) -> int:
        """Checks the key's size; keys here are not wrapped, so there is nothing to re-wrap."""
        _Master.of(new_master_key)
        return len(self._keys)


# --------------------------------------------------------------------------- SQLite


class _LruCache:
    """A bounded, thread-safe least-recently-used map of unwrapped keys."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._data: OrderedDict[tuple[str, str], SubjectKeys] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, subject: tuple[str, str]) -> SubjectKeys | None:
        with self._lock:
            keys = self._data.get(subject)
            if keys is not None:
                self._data.move_to_end(subject)
            return keys

    def put(self, subject: tuple[str, str], keys: SubjectKeys) -> None:
        if self.capacity <= 0:
            return
        with self._lock:
            self._data[subject] = keys
            self._data.move_to_end(subject)
            while len(self._data) > self.capacity:
                self._data.popitem(last=False)

    def pop(self, subject: tuple[str, str]) -> None:
        with self._lock:
            self._data.pop(subject, None)

    def __len__(self) -> int:
        return len(self._data)


class _SqlKeyStore(KeyStore):
    """What the SQL key stores share: the tables, the wrapping, the cache, erasure and rotation.

    Subclasses give the connection and the dialect: how a write transaction is taken
    (`_transaction`), the tables (`_create_schema`), and the locks a database without SQLite's
    one-writer rule needs (`_lock_subjects`, `_lock_erasures`, `_FOR_SHARE`, `_FOR_UPDATE`).
    Every statement here is written with `?` placeholders and runs on both databases.
    """

    _FOR_SHARE = ""
    """Appended to reads that must keep their rows until the transaction ends (PostgreSQL)."""
    _FOR_UPDATE = ""

    def __init__(
        self,
        where: str,
        master_keys: Sequence[bytes],
        *,
        key_seed: bytes | None,
        cache_size: int,
        erasure_check_s: float,
    ) -> None:
        super().__init__(key_seed)
        self.where = where
        if not master_keys:
            raise MasterKeyError(f"key store {where} needs a master key and none was given")
        masters = [_Master.of(k) for k in master_keys]
        self._masters: dict[str, _Master] = {m.master_id: m for m in masters}
        self._primary = masters[0]
        self._cache = _LruCache(cache_size)
        self._erasure_check_s = erasure_check_s
        self._next_erasure_check = 0.0
        self._erasure_seq = 0
        self._lock = threading.RLock()

    # ---- the dialect

    @abstractmethod
    def _transaction(self) -> AbstractContextManager[Any]:
        """A write transaction; yields something with `execute(sql, params)` returning a cursor."""

    @abstractmethod
    def _reading(self) -> AbstractContextManager[Any]:
        """The connection for single-statement reads, held alone by this thread meanwhile."""

    @abstractmethod
    def _create_schema(self, db: Any) -> None:
        """Creates the tables if missing, inside the set-up transaction."""

    def _lock_subjects(self, db: Any, subjects: Sequence[tuple[str, str]]) -> None:  # noqa: B027 - optional hook
        """Serialises creation and erasure of these subjects until the transaction ends."""

    def _lock_erasures(self, db: Any) -> None:  # noqa: B027 - optional hook
        """Makes tombstones commit in `seq` order, so `_sync_erasures` never skips one."""

    def _after_erasure(self) -> None:  # noqa: B027 - optional hook
        """Runs after a destroy or a retirement deleted wrapped keys."""

    # ---- the interface

    def get_or_create(self, tenant_id: str, subject_id: str) -> SubjectKeys:
        subject = (tenant_id, subject_id)
        self._sync_erasures()
        keys = self._cache.get(subject)
        if keys is not None:
            return keys
        keys = self.get_or_create_many([subject])[subject]
        if keys is None:
            raise SubjectErasedError(tenant_id, subject_id)
        return keys

    def get_or_create_many(self, subjects: Iterable[tuple[str, str]]) -> dict[tuple[str, str], SubjectKeys | None]:
        self._sync_erasures()
        result: dict[tuple[str, str], SubjectKeys | None] = {}
        uncached = []
        for subject in dict.fromkeys(subjects):
            keys = self._cache.get(subject)
            if keys is not None:
                result[subject] = keys
            else:
                uncached.append(subject)
        if not uncached:
            return result
        with self._lock:
            missing = []
            for subject in uncached:
                keys = self._load(*subject)
                if keys is None:
                    missing.append(subject)
                else:
                    result[subject] = keys
            if missing:
                result.update(self._create(missing))
        for subject in uncached:
            keys = result[subject]
            if keys is not None:
                self._cache.put(subject, keys)
        return result

    def get(self, tenant_id: str, subject_id: str) -> SubjectKeys | None:
        subject = (tenant_id, subject_id)
        self._sync_erasures()
        keys = self._cache.get(subject)
        if keys is not None:
            return keys
        with self._lock:
            keys = self._load(tenant_id, subject_id)
        if keys is not None:
            self._cache.put(subject, keys)
        return keys

    def destroy(self, tenant_id: str, subject_id: str) -> bool:
        with self._transaction() as db:
            self._lock_erasures(db)
            self._lock_subjects(db, [(tenant_id, subject_id)])
            row = db.execute(
                "SELECT key_id FROM subject_keys WHERE tenant_id = ? AND subject_id = ?",
                (tenant_id, subject_id),
            ).fetchone()
            db.execute("DELETE FROM wrapped_keys WHERE tenant_id = ? AND subject_id = ?", (tenant_id, subject_id))
            db.execute("DELETE FROM subject_keys WHERE tenant_id = ? AND subject_id = ?", (tenant_id, subject_id))
            db.execute(
                "INSERT INTO erasures (tenant_id, subject_id, key_id, erased_at) VALUES (?,?,?,?) "
                "ON CONFLICT DO NOTHING",
                (tenant_id, subject_id, row[0] if row else None, _now()),
            )
        self._cache.pop((tenant_id, subject_id))
        self._after_erasure()
        return row is not None

    def subjects(self, tenant_id: str) -> list[str]:
        with self._reading() as db:
            rows = db.execute("SELECT subject_id FROM subject_keys WHERE tenant_id = ?", (tenant_id,)).fetchall()
        return sorted(str(r[0]) for r in rows)  # code-point order, whatever the database's collation

    def is_erased(self, tenant_id: str, subject_id: str) -> bool:
        with self._reading() as db:
            row = db.execute(
                "SELECT 1 FROM erasures WHERE tenant_id = ? AND subject_id = ?", (tenant_id, subject_id)
            ).fetchone()
        return row is not None

    def rotate_master(self, new_master_key: bytes, retire_previous: bool = False) -> int:
        """Registers a new master key and wraps every subject key under it too.

        Works in batches of short write transactions, so other processes keep reading and
        creating keys (they wait at most one batch) throughout. From now on this store wraps
        new keys under the new master. Keys that other processes create under an older master
        in the meantime are picked up by `retire_master`.

        Args:
            new_master_key: 32 random bytes.
            retire_previous: also retire every other master key at the end (single-process use).

        Returns:
            How many subject keys were wrapped under the new master.

        Raises:
            MasterKeyError: the new key was retired before, or a subject key is wrapped only
                under a master this store does not hold.
        """
        new = _Master.of(new_master_key)
        with self._transaction() as db:
            row = db.execute("SELECT state FROM masters WHERE master_id = ?", (new.master_id,)).fetchone()
            if row is not None and row[0] == "retired":
                raise MasterKeyError(f"master key {new.master_id} was retired from {self.where}; generate a new one")
            if row is None:
                db.execute(
                    "INSERT INTO masters (master_id, check_value, state, added_at) VALUES (?,?,'active',?) "
                    "ON CONFLICT DO NOTHING",
                    (new.master_id, new.check_value, _now()),
                )
        self._masters = {new.master_id: new, **self._masters}
        self._primary = new
        rewrapped = self._rewrap_all(new)
        if retire_previous:
            for master_id in self.active_master_ids():
                if master_id != new.master_id:
                    rewrapped += self.retire_master(master_id)
        return rewrapped

    def retire_master(self, master_id: str) -> int:
        """Deletes every subject key copy wrapped under `master_id` and marks it retired.

        Call it once every process runs with the new master key. Keys that processes created
        under the retiring master since the rotation are first wrapped under this store's
        current master, in the same transaction, so no key is lost. Returns how many were.
        """
        if master_id == self._primary.master_id:
            raise MasterKeyError(
                f"master key {master_id} is the one this store wraps new keys under; "
                "rotate to a new master first, then retire the old one"
            )
        primary = self._primary
        with self._transaction() as db:
            # Locking the master's row waits for key creations under it to commit (they hold it
            # shared) and makes later ones see it retired.
            row = db.execute(
                "SELECT state FROM masters WHERE master_id = ?" + self._FOR_UPDATE, (master_id,)
            ).fetchone()
            if row is None or row[0] != "active":
                raise MasterKeyError(f"master key {master_id} is not an active master of {self.where}")
            stragglers = db.execute(
                "SELECT w.tenant_id, w.subject_id FROM wrapped_keys w WHERE w.master_id = ? AND NOT EXISTS "
                "(SELECT 1 FROM wrapped_keys p WHERE p.tenant_id = w.tenant_id "
                "AND p.subject_id = w.subject_id AND p.master_id = ?)" + self._FOR_SHARE,
                (master_id, primary.master_id),
            ).fetchall()
            for tenant_id, subject_id in stragglers:
                keys = self._load_from(db, tenant_id, subject_id)
                assert keys is not None
                self._insert_wrap(db, primary, tenant_id, subject_id, keys)
            db.execute("DELETE FROM wrapped_keys WHERE master_id = ?", (master_id,))
            db.execute(
                "UPDATE masters SET state = 'retired', retired_at = ? WHERE master_id = ?",
                (_now(), master_id),
            )
        self._masters.pop(master_id, None)
        self._after_erasure()
        return len(stragglers)

    def active_master_ids(self) -> list[str]:
        """Ids of the master keys the store accepts, oldest first."""
        with self._reading() as db:
            rows = db.execute(
                "SELECT master_id FROM masters WHERE state = 'active' ORDER BY added_at, master_id"
            ).fetchall()
        return [r[0] for r in rows]

    @property
    def master_id(self) -> str:
        """The id of the master key this store wraps new subject keys under."""
        return self._primary.master_id

    # ---- internals

    def _setup(self) -> None:
        mode = _key_mode(self.key_seed)
        with self._transaction() as db:
            self._create_schema(db)
            meta = dict(db.execute("SELECT name, value FROM meta").fetchall())
            if not meta:
                for name, value in (("format", STORE_FORMAT), ("key_mode", mode), ("created_at", _now())):
                    db.execute("INSERT INTO meta (name, value) VALUES (?, ?)", (name, value))
            elif meta.get("format") != STORE_FORMAT:
                raise KeyStoreError(
                    f"key store {self.where} has format {meta.get('format')!r}; "
                    f"this auditlog reads format {STORE_FORMAT!r}"
                )
            elif meta.get("key_mode") != mode:
                raise KeyStoreError(_mode_mismatch(self.where, meta.get("key_mode", ""), mode))
            registered = {
                r[0]: (bytes(r[1]), r[2])
                for r in db.execute("SELECT master_id, check_value, state FROM masters").fetchall()
            }
            if not registered:
                db.execute(
                    "INSERT INTO masters (master_id, check_value, state, added_at) VALUES (?,?,'active',?)",
                    (self._primary.master_id, self._primary.check_value, _now()),
                )
                registered[self._primary.master_id] = (self._primary.check_value, "active")
            active = sorted(mid for mid, (_, state) in registered.items() if state == "active")
            for master in self._masters.values():
                known = registered.get(master.master_id)
                if known is None or not hmac.compare_digest(known[0], master.check_value):
                    raise MasterKeyError(
                        f"master key {master.master_id} does not open key store {self.where}: it was set up "
                        f"with master key {' or '.join(active)}. Check AUDITLOG_MASTER_KEY_FILE or "
                        "AUDITLOG_MASTER_KEY; a wrong master key is refused rather than used to make new keys"
                    )
                if known[1] == "retired":
                    raise MasterKeyError(
                        f"master key {master.master_id} was retired from key store {self.where} after a "
                        "rotation; "
                        f"use the current one ({' or '.join(active)}) and drop the old key from the key file"
                    )
            row = db.execute("SELECT COALESCE(MAX(seq), 0) FROM erasures").fetchone()
            self._erasure_seq = int(row[0])

    def _load(self, tenant_id: str, subject_id: str) -> SubjectKeys | None:
        with self._reading() as db:
            return self._load_from(db, tenant_id, subject_id)

    def _load_from(self, db: Any, tenant_id: str, subject_id: str) -> SubjectKeys | None:
        rows = db.execute(
            "SELECT s.key_id, w.master_id, w.wrapped FROM subject_keys s JOIN wrapped_keys w "
            "ON w.tenant_id = s.tenant_id AND w.subject_id = s.subject_id "
            "WHERE s.tenant_id = ? AND s.subject_id = ?",
            (tenant_id, subject_id),
        ).fetchall()
        if not rows:
            return None
        for key_id, master_id, wrapped in rows:
            master = self._masters.get(master_id)
            if master is not None:
                return _unwrap(master, tenant_id, subject_id, key_id, bytes(wrapped))
        held = ", ".join(self._masters)
        wrapped_under = ", ".join(sorted(r[1] for r in rows))
        raise MasterKeyError(
            f"the key of subject {subject_id!r} (tenant {tenant_id!r}) is wrapped only under master key(s) "
            f"{wrapped_under}, and this process holds {held}: a master rotation is under way; list both keys "
            "in the master key file until `retire_master` has run"
        )

    def _create(self, subjects: list[tuple[str, str]]) -> dict[tuple[str, str], SubjectKeys | None]:
        """Inserts new keys in one transaction; where another writer won the race, reads its keys.

        Erased subjects map to None. Keys are made and wrapped before the write lock is taken.
        """
        primary = self._primary
        candidates = []
        for tenant_id, subject_id in subjects:
            keys = self.new_keys(tenant_id, subject_id)
            candidates.append((tenant_id, subject_id, keys, _wrap(primary, tenant_id, subject_id, keys)))
        result: dict[tuple[str, str], SubjectKeys | None] = {}
        with self._transaction() as db:
            state = db.execute(
                "SELECT state FROM masters WHERE master_id = ?" + self._FOR_SHARE, (primary.master_id,)
            ).fetchone()
            if state is None or state[0] != "active":
                raise MasterKeyError(
                    f"master key {primary.master_id} was retired from {self.where}; restart with the current "
                    "master key file"
                )
            self._lock_subjects(db, subjects)
            for tenant_id, subject_id, keys, wrapped in candidates:
                if db.execute(
                    "SELECT 1 FROM erasures WHERE tenant_id = ? AND subject_id = ?", (tenant_id, subject_id)
                ).fetchone():
                    result[(tenant_id, subject_id)] = None
                    continue
                inserted = db.execute(
                    "INSERT INTO subject_keys (tenant_id, subject_id, key_id) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                    (tenant_id, subject_id, keys.key_id),
                ).rowcount
                if inserted:
                    db.execute(_INSERT_WRAPPED, (tenant_id, subject_id, primary.master_id, wrapped))
                    result[(tenant_id, subject_id)] = keys
                else:
                    stored = self._load_from(db, tenant_id, subject_id)
                    assert stored is not None, "a subject row without a wrapped key"
                    result[(tenant_id, subject_id)] = stored
        return result

    def _insert_wrap(self, db: Any, master: _Master, tenant_id: str, subject_id: str, keys: SubjectKeys) -> None:
        db.execute(
            _INSERT_WRAPPED,
            (tenant_id, subject_id, master.master_id, _wrap(master, tenant_id, subject_id, keys)),
        )

    def _rewrap_all(self, new: _Master) -> int:
        """Keyset passes over all subjects until one pass finds nothing left to wrap."""
        total = 0
        while True:
            done_this_pass = 0
            after = ("", "")
            while True:
                with self._transaction() as db:
                    # Rows held shared: an erasure waits for this batch, and a subject erased
                    # before it is skipped, so no wrapped copy outlives its tombstone.
                    rows = db.execute(
                        "SELECT s.tenant_id, s.subject_id FROM subject_keys s "
                        "WHERE (s.tenant_id, s.subject_id) > (?, ?) "
                        "ORDER BY s.tenant_id, s.subject_id LIMIT ?" + self._FOR_SHARE,
                        (*after, REWRAP_BATCH),
                    ).fetchall()
                    if not rows:
                        break
                    for tenant_id, subject_id in rows:
                        has_new = db.execute(
                            "SELECT 1 FROM wrapped_keys WHERE tenant_id = ? AND subject_id = ? AND master_id = ?",
                            (tenant_id, subject_id, new.master_id),
                        ).fetchone()
                        if has_new:
                            continue
                        keys = self._load_from(db, tenant_id, subject_id)
                        if keys is not None:
                            self._insert_wrap(db, new, tenant_id, subject_id, keys)
                            done_this_pass += 1
                    after = tuple(rows[-1])
            total += done_this_pass
            if done_this_pass == 0:
                return total

    def _sync_erasures(self) -> None:
        """Drops from the cache the subjects other processes erased since the last look."""
        now = time.monotonic()
        if now < self._next_erasure_check:
            return
        self._next_erasure_check = now + self._erasure_check_s
        with self._reading() as db:
            rows = db.execute(
                "SELECT seq, tenant_id, subject_id FROM erasures WHERE seq > ? ORDER BY seq",
                (self._erasure_seq,),
            ).fetchall()
        for seq, tenant_id, subject_id in rows:
            self._cache.pop((tenant_id, subject_id))
            self._erasure_seq = seq


class SqliteKeyStore(_SqlKeyStore):
    """The embedded key store: one SQLite file, subject keys wrapped under a master key.

    Several processes may open the same file (WAL mode, `busy_timeout_s`); open the store in the
    process that uses it, never before a fork (SQLite connections do not survive one). Each
    keeps an LRU cache of unwrapped keys for the per-record path; an erasure made by another
    process reaches this cache within `erasure_check_s` seconds (0 checks on every call).

    Deleted key material does not linger: `secure_delete` zeroes deleted cells and freed pages,
    and after an erasure the WAL is checkpointed and truncated, so neither the database's free
    pages nor the log keep the wrapped key. (That stands in for a VACUUM, which would rewrite the
    whole file under an exclusive lock on every erasure; `compact()` runs one on demand.)
    Copies below the file system — SSD remapping, backups, snapshots — are out of its reach.
    """

    def __init__(
        self,
        path: Path,
        master_keys: Sequence[bytes],
        *,
        key_seed: bytes | None = None,
        cache_size: int = DEFAULT_CACHE_SIZE,
        busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
        erasure_check_s: float = DEFAULT_ERASURE_CHECK_S,
    ) -> None:
        """Opens (or creates) the key store at `path`.

        Args:
            path: the SQLite file; created with mode 0600 if missing.
            master_keys: the first wraps new keys; all unwrap. A key that the store was not set
                up with is refused (MasterKeyError), never used to make new keys.
            key_seed: derive new subject keys from this seed (CI replays only).
            cache_size: unwrapped keys kept in memory.
            busy_timeout_s: how long to wait for another process's write lock.
            erasure_check_s: how often to look for erasures made by other processes.
        """
        super().__init__(
            str(path), master_keys, key_seed=key_seed, cache_size=cache_size, erasure_check_s=erasure_check_s
        )
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
        self._db = sqlite3.connect(
            str(self.path), timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
        )
        try:
            self._db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
            self._db.execute("PRAGMA journal_mode = WAL")
            # A key lost after its events were sealed would erase them by accident: fsync each commit.
            self._db.execute("PRAGMA synchronous = FULL")
            self._db.execute("PRAGMA secure_delete = ON")  # per connection: every writer sets it
            self._setup()
        except BaseException:
            self._db.close()
            raise
        if key_seed is not None:
            log.warning(
                "key store %s derives subject keys from AUDITLOG_KEY_SEED: CI replays only, never production",
                self.path,
            )

    def compact(self) -> None:
        """VACUUMs the file: rewrites it without free pages (takes an exclusive lock; seconds per GB)."""
        with self._lock:
            self._db.execute("VACUUM")
        self._flush_log()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ---- the dialect

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: IMMEDIATE takes the write lock up front, so no upgrade deadlocks.

        SQLite has one writer at a time, so the check-then-insert of `_create` and the deletes
        of `destroy` never interleave: the subject and erasure locks are not needed here.
        """
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            yield self._db

    def _create_schema(self, db: Any) -> None:
        for statement in _SQLITE_SCHEMA.split(";\n"):
            if statement.strip():
                db.execute(statement)

    def _after_erasure(self) -> None:
        self._flush_log()

    def _flush_log(self) -> None:
        """Checkpoints the WAL into the file and truncates it, so no old page image keeps a key."""
        with self._lock:
            busy, _, _ = self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if busy:
            log.warning(
                "key store %s: readers kept the WAL busy; erased key pages stay in its -wal file "
                "until the next checkpoint",
                self.path,
            )


class _PgSession:
    """One psycopg connection in autocommit mode, opened again if it broke; `?` placeholders."""

    def __init__(self, url: str, connect_timeout_s: float) -> None:
        self.url = url
        self.connect_timeout_s = connect_timeout_s
        self._conn: Any = None

    def connection(self) -> Any:
        import psycopg

        if self._conn is None or self._conn.closed:
            conn = psycopg.connect(self.url, autocommit=True, connect_timeout=max(1, int(self.connect_timeout_s)))
            conn.execute(f"SET search_path TO {POSTGRES_SCHEMA}")
            self._conn = conn
        return self._conn

    def execute(self, sql: str, params: Sequence[object] = ()) -> Any:
        return self.connection().execute(sql.replace("?", "%s"), tuple(params) or None)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


class PostgresKeyStore(_SqlKeyStore):
    """The shared key store: PostgreSQL, for every TaskManager, gateway and service of a cluster.

    The tables, the wrapping under the master key, the cache, erasure with tombstones and master
    rotation are the SQLite store's (`_SqlKeyStore`); they live in the schema `keystore` of the
    database the URL names. What SQLite gets from its single writer, PostgreSQL gets from locks:

    - get-or-create takes a transaction-scoped advisory lock per subject, then checks the
      tombstone, `INSERT ... ON CONFLICT DO NOTHING` and reads the winner's row, so processes on
      any host that race for a new subject all get the same keys;
    - `destroy` takes the same lock, so an erasure and a creation of one subject never
      interleave: after the tombstone commits, no key for that subject is ever written again.
      Tombstones are written under a table lock, so they commit in `seq` order and every
      process's erasure check sees each one;
    - rotation holds the rows it re-wraps shared (an erasure waits for the batch), and retiring
      a master locks its row, which key creations under it hold shared.

    Erasure deletes every wrapped copy; like any PostgreSQL delete, the row's bytes stay in the
    table's pages until VACUUM reuses them and in the write-ahead log and base backups until those
    expire. They are wrapped under the master key, so keep that key away from database backups.
    """

    _FOR_SHARE = " FOR SHARE"
    _FOR_UPDATE = " FOR UPDATE"

    def __init__(
        self,
        url: str,
        master_keys: Sequence[bytes],
        *,
        key_seed: bytes | None = None,
        cache_size: int = DEFAULT_CACHE_SIZE,
        erasure_check_s: float = DEFAULT_ERASURE_CHECK_S,
        connect_timeout_s: float = 10.0,
        create_batch: int = POSTGRES_CREATE_BATCH,
    ) -> None:
        """Connects to `url` (postgresql://USER[:PASSWORD]@HOST:PORT/DB) and creates the tables if missing.

        Args:
            url: a libpq URL; the store keeps its tables in the schema `keystore` there.
            master_keys: the first wraps new keys; all unwrap (as for `SqliteKeyStore`).
            key_seed: derive new subject keys from this seed (CI replays only).
            cache_size: unwrapped keys kept in memory.
            erasure_check_s: how often to look for erasures made by other processes.
            connect_timeout_s: how long a connection attempt may take.
            create_batch: new subjects per transaction (each holds one advisory lock).
        """
        super().__init__(
            _redact(url), master_keys, key_seed=key_seed, cache_size=cache_size, erasure_check_s=erasure_check_s
        )
        self._create_batch = max(1, create_batch)
        self._session = _PgSession(url, connect_timeout_s)
        try:
            self._setup()
        except BaseException:
            self._session.close()
            raise
        if key_seed is not None:
            log.warning(
                "key store %s derives subject keys from AUDITLOG_KEY_SEED: CI replays only, never production",
                self.where,
            )

    @property
    def _db(self) -> _PgSession:
        return self._session

    def close(self) -> None:
        with self._lock:
            self._session.close()

    # ---- the dialect

    @contextmanager
    def _transaction(self) -> Iterator[_PgSession]:
        """READ COMMITTED: each statement sees what committed before it, locks do the rest."""
        with self._lock, self._session.connection().transaction():
            yield self._session

    @contextmanager
    def _reading(self) -> Iterator[_PgSession]:
        with self._lock:
            yield self._session

    def _create_schema(self, db: Any) -> None:
        # Several TaskManagers may start at once: CREATE ... IF NOT EXISTS is not race-free.
        db.execute("SELECT pg_advisory_xact_lock(?)", (_SETUP_LOCK,))
        db.execute(f"CREATE SCHEMA IF NOT EXISTS {POSTGRES_SCHEMA}")
        for statement in _POSTGRES_SCHEMA.split(";\n"):
            if statement.strip():
                db.execute(statement)

    def _lock_subjects(self, db: Any, subjects: Sequence[tuple[str, str]]) -> None:
        # In one order everywhere, so two batches never wait for each other in a cycle.
        for lock in sorted({_subject_lock(*subject) for subject in subjects}):
            db.execute("SELECT pg_advisory_xact_lock(?)", (lock,))

    def _lock_erasures(self, db: Any) -> None:
        # Blocks other tombstones only (not readers, not key creation): seq order = commit order.
        db.execute("LOCK TABLE erasures IN SHARE ROW EXCLUSIVE MODE")

    def _create(self, subjects: list[tuple[str, str]]) -> dict[tuple[str, str], SubjectKeys | None]:
        result: dict[tuple[str, str], SubjectKeys | None] = {}
        for start in range(0, len(subjects), self._create_batch):
            result.update(super()._create(subjects[start : start + self._create_batch]))
        return result


def _subject_lock(tenant_id: str, subject_id: str) -> int:
    """The advisory lock key of a subject: 64 bits of a keyed BLAKE2b of tenant ‖ 0x00 ‖ subject."""
    digest = hashlib.blake2b(
        tenant_id.encode() + b"\x00" + subject_id.encode(), digest_size=8, person=b"auditlog-subject"
    ).digest()
    return int.from_bytes(digest, "big", signed=True)


def _redact(url: str) -> str:
    """The URL without its password, for messages."""
    return re.sub(r"(://[^:/@]*):[^@]*@", r"\1:***@", url)


def _mode_mismatch(path: str, stored: str, wanted: str) -> str:
    if stored == "random":
        return (
            f"key store {path} holds random subject keys; refusing to open it with AUDITLOG_KEY_SEED set "
            "(new keys would be predictable). Unset AUDITLOG_KEY_SEED, or give replays their own key store"
        )
    if wanted == "random":
        return (
            f"key store {path} was made for replays with AUDITLOG_KEY_SEED and its keys are predictable; "
            "set the same AUDITLOG_KEY_SEED, or use a fresh key store for real data"
        )
    return f"key store {path} was made with a different AUDITLOG_KEY_SEED; set the one it was made with"


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
