"""The key store: per-subject keys, crypto-shredding with tombstones, master keys and rotation.

The store semantics run against every backend: the embedded SQLite file and a real PostgreSQL
(a throwaway server on loopback, started once per session from the machine's binaries, which
infra/bootstrap.sh installs; skipped, with the reason, only if they are absent).
"""

from __future__ import annotations

import base64
import itertools
import multiprocessing
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from api.sdk.localpg import LocalPostgres, PostgresUnavailable
from pipelines.io.keystore import (
    InMemoryKeyStore,
    KeyStore,
    KeyStoreError,
    MasterKeyError,
    PostgresKeyStore,
    SqliteKeyStore,
    SubjectErasedError,
    derive_subject_keys,
    load_master_keys,
    master_key_id,
    open_keystore,
    parse_master_keys,
    write_master_key_file,
)
from schemas.events import pii_subject, protect_event
from schemas.samples import EventGenerator
from schemas.settings import Settings
from transforms.pii import SealError, SubjectKeys, unseal

MASTER = bytes(range(32))
OTHER_MASTER = bytes(range(1, 33))


def material(keys: SubjectKeys) -> tuple[str, bytes, bytes]:
    return keys.key_id, keys.enc_key, keys.mac_key


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[LocalPostgres]:
    """One PostgreSQL for the session; each test gets databases of its own (`Backend.location`)."""
    try:
        server = LocalPostgres()
    except PostgresUnavailable as exc:
        pytest.skip(f"PostgreSQL key store not tested: {exc}")
    with server:
        yield server


_databases = itertools.count()


class Backend:
    """Opens key stores of one kind at fresh locations: a SQLite file, or a PostgreSQL database."""

    def __init__(self, kind: str, tmp_path: Path, server: LocalPostgres | None) -> None:
        self.kind = kind
        self.tmp_path = tmp_path
        self.server = server
        self.location = self.new_location()

    def new_location(self) -> str:
        if self.server is None:
            return str(self.tmp_path / f"keystore-{next(_databases)}.sqlite")
        import psycopg

        name = f"ks_{next(_databases)}"
        with psycopg.connect(self.server.dsn, autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {name}")
        return self.server.dsn.rsplit("/", 1)[0] + "/" + name

    def open(self, masters: list[bytes], location: str | None = None, **options: Any) -> Any:
        where = location or self.location
        if self.server is None:
            return SqliteKeyStore(Path(where), masters, **options)
        return PostgresKeyStore(where, masters, **options)


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    server = request.getfixturevalue("postgres_server") if request.param == "postgres" else None
    return Backend(request.param, tmp_path, server)


@pytest.fixture(params=["sqlite", "postgres", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[KeyStore]:
    if request.param == "memory":
        opened: KeyStore = InMemoryKeyStore()
    else:
        server = request.getfixturevalue("postgres_server") if request.param == "postgres" else None
        opened = Backend(request.param, tmp_path, server).open([MASTER])
    with opened:
        yield opened


# --------------------------------------------------------------------------- both stores


def test_get_or_create_then_get_returns_the_same_keys(store: KeyStore) -> None:
    assert store.get("t_1", "u_1") is None

    keys = store.get_or_create("t_1", "u_1")

    assert material(store.get_or_create("t_1", "u_1")) == material(keys)
    assert material(store.get("t_1", "u_1")) == material(keys)  # type: ignore[arg-type]
    assert material(store.get_or_create("t_2", "u_1")) != material(keys)  # subjects are per tenant
    assert len(keys.key_id) == 16 and not store.is_erased("t_1", "u_1")


def test_destroy_leaves_a_tombstone_and_refuses_new_keys(store: KeyStore) -> None:
    store.get_or_create("t_1", "u_1")

    assert store.destroy("t_1", "u_1") is True
    assert store.get("t_1", "u_1") is None
    assert store.is_erased("t_1", "u_1")
    with pytest.raises(SubjectErasedError, match="u_1.*erased"):
        store.get_or_create("t_1", "u_1")
    assert store.destroy("t_1", "u_1") is False  # nothing left to destroy
    assert store.get_or_create("t_1", "u_2")  # other subjects are untouched


def test_subjects_lists_a_tenants_live_subjects_for_lookups(store: KeyStore) -> None:
    for subject in ("u2", "u1", "u3"):
        store.get_or_create("t1", subject)
    store.get_or_create("t2", "u9")
    store.destroy("t1", "u2")
    assert store.subjects("t1") == ["u1", "u3"]
    assert store.subjects("t2") == ["u9"]
    assert store.subjects("t3") == []


def test_erasure_before_first_event_still_holds(store: KeyStore) -> None:
    assert store.destroy("t_1", "u_new") is False
    with pytest.raises(SubjectErasedError):
        store.get_or_create("t_1", "u_new")


def test_get_or_create_many_maps_erased_subjects_to_none(store: KeyStore) -> None:
    cached = store.get_or_create("t_1", "u_cached")
    store.destroy("t_1", "u_gone")

    result = store.get_or_create_many([("t_1", "u_cached"), ("t_1", "u_new"), ("t_1", "u_gone")])

    assert material(result[("t_1", "u_cached")]) == material(cached)  # type: ignore[arg-type]
    assert result[("t_1", "u_gone")] is None
    assert material(result[("t_1", "u_new")]) == material(store.get("t_1", "u_new"))  # type: ignore[arg-type]


def test_sealed_values_open_with_the_stored_key_and_not_after_destroy(store: KeyStore) -> None:
    event = next(e for e in EventGenerator(seed=3) if "email" in e["actor"])
    tenant, subject = event["tenant_id"], pii_subject(event)
    document = protect_event(event, store.get_or_create(tenant, subject))
    assert document["pii"]

    stored = store.get(tenant, subject)
    assert stored is not None
    for path, sealed in document["pii"].items():
        expected = event
        for part in path.split("."):
            expected = expected[part]
        assert unseal(stored, tenant, event["event_id"], path, sealed) == expected
        assert sealed["kid"] == stored.key_id

    store.destroy(tenant, subject)

    assert store.get(tenant, subject) is None
    with pytest.raises(SubjectErasedError):
        store.get_or_create(tenant, subject)
    stranger = store.get_or_create(tenant, "someone_else")
    with pytest.raises(SealError):
        unseal(stranger, tenant, event["event_id"], "actor.email", document["pii"]["actor.email"])


# --------------------------------------------------------------------------- determinism


def test_key_seed_derives_the_same_keys_in_every_fresh_store(backend: Backend) -> None:
    seed = b"ci-replay-1"
    stores = [
        backend.open([MASTER], key_seed=seed),
        backend.open([OTHER_MASTER], backend.new_location(), key_seed=seed),
        InMemoryKeyStore(key_seed=seed),
    ]
    subjects = [("t_1", "u_1"), ("t_1", "u_2"), ("t_2", "u_1")]

    got = [[material(s.get_or_create(*subject)) for subject in subjects] for s in stores]

    assert got[0] == got[1] == got[2]
    assert len({m for m in got[0]}) == 3
    assert material(InMemoryKeyStore(key_seed=b"other").get_or_create("t_1", "u_1")) != got[0][0]
    for s in stores:
        s.close()


def test_derived_keys_are_hkdf_sha256_of_tenant_nul_subject() -> None:
    okm = HKDF(
        algorithm=hashes.SHA256(), length=72, salt=b"auditlog/keystore/subject-keys/1", info=b"t_1\x00u_1"
    ).derive(b"seed")

    keys = derive_subject_keys(b"seed", "t_1", "u_1")

    assert (keys.enc_key, keys.mac_key, keys.key_id) == (okm[:32], okm[32:64], okm[64:].hex())


def test_without_a_seed_keys_are_random(backend: Backend) -> None:
    a = backend.open([MASTER])
    b = backend.open([MASTER], backend.new_location())
    assert material(a.get_or_create("t_1", "u_1")) != material(b.get_or_create("t_1", "u_1"))
    a.close()
    b.close()


def test_a_store_made_with_random_keys_refuses_a_seed_and_back(backend: Backend) -> None:
    random_store, seeded = backend.location, backend.new_location()
    backend.open([MASTER], random_store).close()
    backend.open([MASTER], seeded, key_seed=b"s1").close()

    with pytest.raises(KeyStoreError, match="AUDITLOG_KEY_SEED"):
        backend.open([MASTER], random_store, key_seed=b"s1")
    with pytest.raises(KeyStoreError, match="predictable"):
        backend.open([MASTER], seeded)
    with pytest.raises(KeyStoreError, match="different AUDITLOG_KEY_SEED"):
        backend.open([MASTER], seeded, key_seed=b"s2")


# --------------------------------------------------------------------------- SQL stores


def test_keys_survive_reopening_and_are_stored_only_wrapped(backend: Backend) -> None:
    with backend.open([MASTER]) as first:
        keys = first.get_or_create("t_1", "u_1")

    with backend.open([MASTER]) as second:
        assert material(second.get("t_1", "u_1")) == material(keys)  # type: ignore[arg-type]
        stored = b"".join(bytes(cell) for row in _all_rows(second) for cell in row if isinstance(cell, bytes))
        assert _wrapped_blob(second, "t_1", "u_1") in stored  # the test sees every byte column
        assert keys.enc_key not in stored and keys.mac_key not in stored

    if backend.kind == "sqlite":
        path = Path(backend.location)
        raw = path.read_bytes() + _wal(path)
        assert keys.enc_key not in raw and keys.mac_key not in raw
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_wrong_master_key_is_refused_at_open_and_changes_nothing(backend: Backend) -> None:
    with backend.open([MASTER]) as store:
        store.get_or_create("t_1", "u_1")

    with pytest.raises(MasterKeyError, match=f"{master_key_id(OTHER_MASTER)} does not open.*{master_key_id(MASTER)}"):
        backend.open([OTHER_MASTER])

    with backend.open([MASTER]) as store:
        assert store.active_master_ids() == [master_key_id(MASTER)]
        assert store.get("t_1", "u_1") is not None


def test_missing_master_key_is_a_clear_error(backend: Backend, tmp_path: Path) -> None:
    with pytest.raises(MasterKeyError, match="needs a master key"):
        backend.open([])
    with pytest.raises(MasterKeyError, match="keys master generate --out FILE.*AUDITLOG_MASTER_KEY_FILE"):
        load_master_keys(Settings(home=tmp_path))
    with pytest.raises(MasterKeyError, match="does not exist.*keys master generate"):
        load_master_keys(Settings(home=tmp_path, master_key_file=str(tmp_path / "nope.key")))
    with pytest.raises(MasterKeyError, match="only one"):
        load_master_keys(Settings(home=tmp_path, master_key_file="x", master_key="y"))
    assert not (tmp_path / "keystore.sqlite").exists()


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("", "holds no master key"),
        ("# only a comment\n", "holds no master key"),
        ("not base64!!", "entry 1 is not base64"),
        (base64.b64encode(b"short").decode(), "entry 1 decodes to 5 bytes, not 32"),
    ],
)
def test_malformed_master_keys_are_named(text: str, error: str) -> None:
    with pytest.raises(MasterKeyError, match=error):
        parse_master_keys(text, "AUDITLOG_MASTER_KEY")


def test_master_key_file_is_0600_refuses_overwrite_and_opens_the_store(tmp_path: Path) -> None:
    path, kid = write_master_key_file(tmp_path / "secrets" / "master.key")

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [master_key_id(k) for k in parse_master_keys(path.read_text(), "test")] == [kid]
    with pytest.raises(FileExistsError, match="--force"):
        write_master_key_file(path)

    settings = Settings(home=tmp_path / "home", master_key_file=str(path))
    with open_keystore(settings) as store:
        assert isinstance(store, SqliteKeyStore)
        assert store.path == tmp_path / "home" / "keystore.sqlite"
        assert store.master_id == kid
        store.get_or_create("t_1", "u_1")
    env = Settings(home=tmp_path / "home", master_key=base64.b64encode(MASTER).decode())
    with pytest.raises(MasterKeyError, match="does not open"):
        open_keystore(env)


def test_open_keystore_picks_postgresql_by_url_and_refuses_other_urls(
    postgres_server: LocalPostgres, tmp_path: Path
) -> None:
    url = Backend("postgres", tmp_path, postgres_server).location
    settings = Settings(home=tmp_path, master_key=base64.b64encode(MASTER).decode(), keystore_url=url)
    with open_keystore(settings, erasure_check_s=0) as store:
        assert isinstance(store, PostgresKeyStore)
        keys = store.get_or_create("t_1", "u_1")
    with PostgresKeyStore(url, [MASTER]) as again:
        assert material(again.get("t_1", "u_1")) == material(keys)  # type: ignore[arg-type]
    assert not (tmp_path / "keystore.sqlite").exists()
    with pytest.raises(KeyStoreError, match="must be a postgresql:// URL"):
        open_keystore(settings.replace(keystore_url="mysql://u:secret@h/db"))
    secret = url.replace("auditlog@", "auditlog:hunter2@")
    with pytest.raises(Exception) as raised:  # noqa: PT011 - any error: what matters is its text
        PostgresKeyStore(secret.replace(f":{postgres_server.port}/", ":1/"), [MASTER], connect_timeout_s=1)
    assert "hunter2" not in str(raised.value)
    assert "hunter2" not in repr(settings.replace(keystore_url=secret))


def test_settings_never_print_secrets() -> None:
    settings = Settings(master_key="c2VjcmV0", key_seed="ci-seed")
    assert "c2VjcmV0" not in repr(settings) and "ci-seed" not in repr(settings)


def test_destroy_leaves_no_wrapped_key_behind(backend: Backend) -> None:
    with backend.open([MASTER]) as store:
        store.get_or_create_many([("t_1", f"u_{i}") for i in range(50)])
        wrapped = _wrapped_blob(store, "t_1", "u_7")
        path = Path(backend.location)
        if backend.kind == "sqlite":
            assert wrapped in path.read_bytes() + _wal(path)  # the test can see the bytes it looks for

        store.destroy("t_1", "u_7")

        assert _rows_of(store, "t_1", "u_7") == {"subject_keys": 0, "wrapped_keys": 0, "erasures": 1}
        if backend.kind == "sqlite":
            assert wrapped not in path.read_bytes() + _wal(path)
        assert store.get("t_1", "u_8") is not None


def test_an_erasure_in_another_process_reaches_this_cache(backend: Backend) -> None:
    reader = backend.open([MASTER], erasure_check_s=0)
    eraser = backend.open([MASTER])
    reader.get_or_create("t_1", "u_1")  # now cached

    eraser.destroy("t_1", "u_1")

    assert reader.get("t_1", "u_1") is None
    with pytest.raises(SubjectErasedError):
        reader.get_or_create("t_1", "u_1")
    reader.close()
    eraser.close()


def test_the_loser_of_a_creation_race_reads_the_winners_keys(backend: Backend) -> None:
    winner = backend.open([MASTER])
    loser = backend.open([MASTER])
    keys = winner.get_or_create("t_1", "u_1")

    # As if `loser` had looked just before `winner` inserted: it goes straight to the insert.
    result = loser._create([("t_1", "u_1")])

    assert material(result[("t_1", "u_1")]) == material(keys)  # type: ignore[arg-type]
    winner.close()
    loser.close()


def _open_in_child(kind: str, location: str, **options: Any) -> Any:
    if kind == "sqlite":
        return SqliteKeyStore(Path(location), [MASTER], **options)
    return PostgresKeyStore(location, [MASTER], **options)


def _race(kind: str, location: str, subjects: list[tuple[str, str]], barrier: Any, out: Any) -> None:
    store = _open_in_child(kind, location, cache_size=0)
    barrier.wait()
    got = {f"{t}/{s}": store.get_or_create(t, s).enc_key.hex() for t, s in subjects}
    store.close()
    out.put(got)


def test_processes_racing_for_new_subjects_get_the_same_keys(backend: Backend) -> None:
    backend.open([MASTER]).close()
    subjects = [("t_1", f"u_{i}") for i in range(60)]
    ctx = multiprocessing.get_context("fork")
    barrier, out = ctx.Barrier(4), ctx.Queue()
    workers = [
        ctx.Process(target=_race, args=(backend.kind, backend.location, subjects, barrier, out)) for _ in range(4)
    ]
    for w in workers:
        w.start()
    results = [out.get(timeout=60) for _ in workers]
    for w in workers:
        w.join(timeout=30)
        assert w.exitcode == 0

    assert results[0] == results[1] == results[2] == results[3]
    with backend.open([MASTER]) as store:
        assert {f"{t}/{s}": store.get(t, s).enc_key.hex() for t, s in subjects} == results[0]  # type: ignore[union-attr]
        assert sum(_rows_of(store, t, s)["subject_keys"] for t, s in subjects) == len(subjects)


def _create_while_erased(kind: str, location: str, subjects: list[tuple[str, str]], barrier: Any, out: Any) -> None:
    """Asks for each subject's keys as the eraser destroys it; records what each call got, in order."""
    try:
        store = _open_in_child(kind, location, cache_size=0, erasure_check_s=0)
        seen: dict[str, str] = {}
        for tenant, subject in subjects:
            outcomes = ""
            barrier.wait(timeout=60)  # every process meets here for each subject: one collision each
            for _ in range(3):
                try:
                    store.get_or_create(tenant, subject)
                    outcomes += "k"
                except SubjectErasedError:
                    outcomes += "e"
            seen[f"{tenant}/{subject}"] = outcomes
        store.close()
        out.put(seen)
    except BaseException as exc:
        barrier.abort()  # the others stop waiting for this process
        out.put(repr(exc))


def _erase_all(kind: str, location: str, subjects: list[tuple[str, str]], barrier: Any, out: Any) -> None:
    try:
        store = _open_in_child(kind, location)
        destroyed = 0
        for tenant, subject in subjects:
            barrier.wait(timeout=60)
            destroyed += store.destroy(tenant, subject)
        store.close()
        out.put(destroyed)
    except BaseException as exc:
        barrier.abort()
        out.put(repr(exc))


def test_an_erasure_racing_with_creation_leaves_no_key_after_its_tombstone(backend: Backend) -> None:
    backend.open([MASTER]).close()
    subjects = [("t_1", f"u_{i}") for i in range(150)]
    ctx = multiprocessing.get_context("fork")
    barrier, created, erased = ctx.Barrier(4), ctx.Queue(), ctx.Queue()
    args = (backend.kind, backend.location, subjects, barrier)
    creators = [ctx.Process(target=_create_while_erased, args=(*args, created)) for _ in range(3)]
    eraser = ctx.Process(target=_erase_all, args=(*args, erased))
    for p in (*creators, eraser):
        p.start()
    histories = [created.get(timeout=120) for _ in creators]
    destroyed = erased.get(timeout=120)
    for p in (*creators, eraser):
        p.join(timeout=30)
    assert all(isinstance(h, dict) for h in histories) and isinstance(destroyed, int), (histories, destroyed)

    for history in histories:
        for subject, outcomes in history.items():
            # Once a process saw the tombstone, it never got keys for that subject again.
            assert "ek" not in outcomes, f"{subject}: keys after the erasure ({outcomes})"
    with backend.open([MASTER]) as store:
        for tenant, subject in subjects:
            assert store.is_erased(tenant, subject)
            assert _rows_of(store, tenant, subject) == {"subject_keys": 0, "wrapped_keys": 0, "erasures": 1}
            with pytest.raises(SubjectErasedError):
                store.get_or_create(tenant, subject)


def test_cache_is_bounded(backend: Backend) -> None:
    with backend.open([MASTER], cache_size=10) as store:
        for i in range(50):
            store.get_or_create("t_1", f"u_{i}")
        assert len(store._cache) == 10
        assert store.get("t_1", "u_0") is not None  # evicted, read back from the database


def test_a_wrapped_key_moved_to_another_subject_does_not_open(backend: Backend) -> None:
    with backend.open([MASTER]) as store:
        store.get_or_create_many([("t_1", "victim"), ("t_1", "attacker")])
        victim = _wrapped_blob(store, "t_1", "victim")
        store._db.execute("UPDATE wrapped_keys SET wrapped = ? WHERE subject_id = 'attacker'", (victim,))
    with backend.open([MASTER]) as store, pytest.raises(KeyStoreError, match="altered or damaged"):
        store.get("t_1", "attacker")


# --------------------------------------------------------------------------- master rotation


def test_rotation_keeps_every_key_readable_under_both_masters_then_retires_the_old(backend: Backend) -> None:
    subjects = [(f"t_{i % 3}", f"u_{i}") for i in range(2500)]  # more than one re-wrap batch
    rotating = backend.open([MASTER])
    before = {s: material(k) for s, k in rotating.get_or_create_many(subjects).items()}  # type: ignore[arg-type]
    old_only = backend.open([MASTER], cache_size=0)

    assert rotating.rotate_master(OTHER_MASTER) == 2500

    new_only = backend.open([OTHER_MASTER], cache_size=0)
    assert rotating.master_id == master_key_id(OTHER_MASTER)
    assert {s: material(new_only.get(*s)) for s in subjects} == before  # type: ignore[arg-type]
    assert {s: material(old_only.get(*s)) for s in subjects} == before  # type: ignore[arg-type]

    # A process still on the old key alone creates a subject: only the old master wraps it.
    straggler = material(old_only.get_or_create("t_9", "late"))
    with pytest.raises(MasterKeyError, match="rotation is under way"):
        new_only.get("t_9", "late")

    assert rotating.retire_master(master_key_id(MASTER)) == 1

    assert material(new_only.get("t_9", "late")) == straggler  # type: ignore[arg-type]
    assert rotating.active_master_ids() == [master_key_id(OTHER_MASTER)]
    with pytest.raises(MasterKeyError, match="retired"):
        old_only.get_or_create("t_9", "later")
    with pytest.raises(MasterKeyError, match="was retired"):
        backend.open([MASTER])
    with pytest.raises(MasterKeyError, match="was retired"):
        rotating.rotate_master(MASTER)
    for s in (rotating, old_only, new_only):
        s.close()


def test_readers_keep_working_while_the_master_rotates(backend: Backend) -> None:
    subjects = [("t_1", f"u_{i}") for i in range(3000)]
    rotating = backend.open([MASTER])
    expected = {s: material(k) for s, k in rotating.get_or_create_many(subjects).items()}  # type: ignore[arg-type]
    reader = backend.open([MASTER], cache_size=0)
    errors: list[BaseException] = []
    reads = 0
    stop = threading.Event()

    def read_loop() -> None:
        nonlocal reads
        try:
            while not stop.is_set():
                subject = subjects[reads % len(subjects)]
                assert material(reader.get(*subject)) == expected[subject]  # type: ignore[arg-type]
                reads += 1
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    thread = threading.Thread(target=read_loop)
    thread.start()
    try:
        rotating.rotate_master(OTHER_MASTER, retire_previous=False)
    finally:
        stop.set()
        thread.join()

    assert not errors and reads > 0
    rotating.close()
    reader.close()


def test_an_erasure_during_a_rotation_leaves_no_wrapped_copy(backend: Backend) -> None:
    subjects = [("t_1", f"u_{i}") for i in range(1500)]
    rotating = backend.open([MASTER])
    rotating.get_or_create_many(subjects)
    eraser = backend.open([MASTER])
    victims = subjects[::7]

    thread = threading.Thread(target=lambda: [eraser.destroy(*s) for s in victims])
    thread.start()
    try:
        rotating.rotate_master(OTHER_MASTER)
    finally:
        thread.join()

    for subject in victims:
        assert _rows_of(rotating, *subject) == {"subject_keys": 0, "wrapped_keys": 0, "erasures": 1}
    assert rotating.get(*subjects[1]) is not None
    rotating.close()
    eraser.close()


def test_rotate_with_retire_previous_leaves_only_the_new_master(backend: Backend) -> None:
    with backend.open([MASTER]) as store:
        keys = store.get_or_create("t_1", "u_1")
        old_wrap = _wrapped_blob(store, "t_1", "u_1")
        store.rotate_master(OTHER_MASTER, retire_previous=True)
        assert store.active_master_ids() == [master_key_id(OTHER_MASTER)]
        masters = store._db.execute("SELECT master_id FROM wrapped_keys").fetchall()
        assert [m[0] for m in masters] == [master_key_id(OTHER_MASTER)]
    if backend.kind == "sqlite":
        path = Path(backend.location)
        assert old_wrap not in path.read_bytes() + _wal(path)
    with backend.open([OTHER_MASTER]) as store:
        assert material(store.get("t_1", "u_1")) == material(keys)  # type: ignore[arg-type]


def test_in_memory_rotation_only_checks_the_key() -> None:
    store = InMemoryKeyStore()
    store.get_or_create("t_1", "u_1")
    assert store.rotate_master(OTHER_MASTER) == 1
    with pytest.raises(MasterKeyError):
        store.rotate_master(b"short")


# --------------------------------------------------------------------------- helpers


def _wal(path: Path) -> bytes:
    wal = Path(f"{path}-wal")
    return wal.read_bytes() if wal.exists() else b""


def _wrapped_blob(store: Any, tenant: str, subject: str) -> bytes:
    row = store._db.execute(
        "SELECT wrapped FROM wrapped_keys WHERE tenant_id = ? AND subject_id = ?", (tenant, subject)
    ).fetchone()
    return bytes(row[0])


def _rows_of(store: Any, tenant: str, subject: str) -> dict[str, int]:
    """How many rows each table holds for a subject, read straight from the database."""
    return {
        table: store._db.execute(
            f"SELECT COUNT(*) FROM {table} WHERE tenant_id = ? AND subject_id = ?", (tenant, subject)
        ).fetchone()[0]
        for table in ("subject_keys", "wrapped_keys", "erasures")
    }


def _all_rows(store: Any) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = []
    for table in ("meta", "masters", "subject_keys", "wrapped_keys", "erasures"):
        rows += [tuple(r) for r in store._db.execute(f"SELECT * FROM {table}").fetchall()]  # noqa: S608
    return rows
