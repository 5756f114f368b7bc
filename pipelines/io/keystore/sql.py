"""_SqlKeyStore: what the SQLite and PostgreSQL key stores share.

The tables, the wrapping, the cache, erasure with tombstones, and master-key rotation; the
subclasses in `sqlite` and `postgres` give the connection and the dialect. Over 400 lines because
it is one class whose transactions, erasure checks and rotation passes work on the same state
(masters, cache, erasure sequence); splitting it would scatter that.
"""

from __future__ import annotations

import hmac
import threading
import time
from abc import abstractmethod
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any

from pipelines.io.keystore.base import KeyStore
from pipelines.io.keystore.errors import KeyStoreError, MasterKeyError, SubjectErasedError
from pipelines.io.keystore.subject_keys import _key_mode
from pipelines.io.keystore.wrapping import _Master, _unwrap, _wrap
from pipelines.io.lru import LRU
from transforms.pii import SubjectKeys

__all__ = ["DEFAULT_CACHE_SIZE", "DEFAULT_ERASURE_CHECK_S", "REWRAP_BATCH", "STORE_FORMAT"]

DEFAULT_CACHE_SIZE = 100_000
DEFAULT_ERASURE_CHECK_S = 1.0
"""How stale another process's erasure may be in this process's cache, at most."""
REWRAP_BATCH = 1000
STORE_FORMAT = "1"

_INSERT_WRAPPED = (
    "INSERT INTO wrapped_keys (tenant_id, subject_id, master_id, wrapped) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (tenant_id, subject_id, master_id) DO UPDATE SET wrapped = excluded.wrapped"
)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


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
        self._cache: LRU[tuple[str, str], SubjectKeys] = LRU(capacity=cache_size)
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
