"""The key store: per-subject keys, crypto-shredding with tombstones, master keys and rotation."""

from __future__ import annotations

import base64
import multiprocessing
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from pipelines.io.keystore import (
    InMemoryKeyStore,
    KeyStore,
    KeyStoreError,
    MasterKeyError,
    SqliteKeyStore,
    SubjectErasedError,
    derive_subject_keys,
    load_master_keys,
    master_key_id,
    open_keystore,
    parse_master_keys,
    write_master_key_file,
)
from runners.settings import Settings
from schemas.events import pii_subject, protect_event
from schemas.samples import EventGenerator
from transforms.pii import SealError, SubjectKeys, unseal

MASTER = bytes(range(32))
OTHER_MASTER = bytes(range(1, 33))


def material(keys: SubjectKeys) -> tuple[str, bytes, bytes]:
    return keys.key_id, keys.enc_key, keys.mac_key


@pytest.fixture(params=["sqlite", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[KeyStore]:
    if request.param == "sqlite":
        opened: KeyStore = SqliteKeyStore(tmp_path / "keystore.sqlite", [MASTER])
    else:
        opened = InMemoryKeyStore()
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


def test_key_seed_derives_the_same_keys_in_every_fresh_store(tmp_path: Path) -> None:
    seed = b"ci-replay-1"
    stores = [
        SqliteKeyStore(tmp_path / "a.sqlite", [MASTER], key_seed=seed),
        SqliteKeyStore(tmp_path / "b.sqlite", [OTHER_MASTER], key_seed=seed),
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


def test_without_a_seed_keys_are_random(tmp_path: Path) -> None:
    a = SqliteKeyStore(tmp_path / "a.sqlite", [MASTER])
    b = SqliteKeyStore(tmp_path / "b.sqlite", [MASTER])
    assert material(a.get_or_create("t_1", "u_1")) != material(b.get_or_create("t_1", "u_1"))
    a.close()
    b.close()


def test_a_store_made_with_random_keys_refuses_a_seed_and_back(tmp_path: Path) -> None:
    SqliteKeyStore(tmp_path / "random.sqlite", [MASTER]).close()
    SqliteKeyStore(tmp_path / "seeded.sqlite", [MASTER], key_seed=b"s1").close()

    with pytest.raises(KeyStoreError, match="AUDITLOG_KEY_SEED"):
        SqliteKeyStore(tmp_path / "random.sqlite", [MASTER], key_seed=b"s1")
    with pytest.raises(KeyStoreError, match="predictable"):
        SqliteKeyStore(tmp_path / "seeded.sqlite", [MASTER])
    with pytest.raises(KeyStoreError, match="different AUDITLOG_KEY_SEED"):
        SqliteKeyStore(tmp_path / "seeded.sqlite", [MASTER], key_seed=b"s2")


# --------------------------------------------------------------------------- SQLite specifics


def test_keys_survive_reopening_and_are_stored_only_wrapped(tmp_path: Path) -> None:
    path = tmp_path / "keystore.sqlite"
    with SqliteKeyStore(path, [MASTER]) as first:
        keys = first.get_or_create("t_1", "u_1")

    with SqliteKeyStore(path, [MASTER]) as second:
        assert material(second.get("t_1", "u_1")) == material(keys)  # type: ignore[arg-type]

    raw = path.read_bytes() + _wal(path)
    assert keys.enc_key not in raw and keys.mac_key not in raw
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_wrong_master_key_is_refused_at_open_and_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "keystore.sqlite"
    with SqliteKeyStore(path, [MASTER]) as store:
        store.get_or_create("t_1", "u_1")

    with pytest.raises(MasterKeyError, match=f"{master_key_id(OTHER_MASTER)} does not open.*{master_key_id(MASTER)}"):
        SqliteKeyStore(path, [OTHER_MASTER])

    with SqliteKeyStore(path, [MASTER]) as store:
        assert store.active_master_ids() == [master_key_id(MASTER)]
        assert store.get("t_1", "u_1") is not None


def test_missing_master_key_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(MasterKeyError, match="needs a master key"):
        SqliteKeyStore(tmp_path / "keystore.sqlite", [])
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
        assert store.path == tmp_path / "home" / "keystore.sqlite"
        assert store.master_id == kid
        store.get_or_create("t_1", "u_1")
    env = Settings(home=tmp_path / "home", master_key=base64.b64encode(MASTER).decode())
    with pytest.raises(MasterKeyError, match="does not open"):
        open_keystore(env)


def test_settings_never_print_secrets() -> None:
    settings = Settings(master_key="c2VjcmV0", key_seed="ci-seed")
    assert "c2VjcmV0" not in repr(settings) and "ci-seed" not in repr(settings)


def test_destroy_leaves_no_wrapped_key_bytes_in_the_file_or_its_log(tmp_path: Path) -> None:
    path = tmp_path / "keystore.sqlite"
    with SqliteKeyStore(path, [MASTER]) as store:
        store.get_or_create_many([("t_1", f"u_{i}") for i in range(50)])
        wrapped = _wrapped_blob(store, "t_1", "u_7")
        assert wrapped in path.read_bytes() + _wal(path)  # the test can see the bytes it looks for

        store.destroy("t_1", "u_7")

        assert wrapped not in path.read_bytes() + _wal(path)
        assert store.get("t_1", "u_8") is not None


def test_an_erasure_in_another_process_reaches_this_cache(tmp_path: Path) -> None:
    path = tmp_path / "keystore.sqlite"
    reader = SqliteKeyStore(path, [MASTER], erasure_check_s=0)
    eraser = SqliteKeyStore(path, [MASTER])
    reader.get_or_create("t_1", "u_1")  # now cached

    eraser.destroy("t_1", "u_1")

    assert reader.get("t_1", "u_1") is None
    with pytest.raises(SubjectErasedError):
        reader.get_or_create("t_1", "u_1")
    reader.close()
    eraser.close()


def test_the_loser_of_a_creation_race_reads_the_winners_keys(tmp_path: Path) -> None:
    path = tmp_path / "keystore.sqlite"
    winner = SqliteKeyStore(path, [MASTER])
    loser = SqliteKeyStore(path, [MASTER])
    keys = winner.get_or_create("t_1", "u_1")

    # As if `loser` had looked just before `winner` inserted: it goes straight to the insert.
    result = loser._create([("t_1", "u_1")])

    assert material(result[("t_1", "u_1")]) == material(keys)  # type: ignore[arg-type]
    winner.close()
    loser.close()


def _race(path: str, subjects: list[tuple[str, str]], barrier: object, out: object) -> None:
    store = SqliteKeyStore(Path(path), [MASTER], cache_size=0)
    barrier.wait()  # type: ignore[attr-defined]
    got = {f"{t}/{s}": store.get_or_create(t, s).enc_key.hex() for t, s in subjects}
    store.close()
    out.put(got)  # type: ignore[attr-defined]


def test_processes_racing_for_new_subjects_get_the_same_keys(tmp_path: Path) -> None:
    path = tmp_path / "keystore.sqlite"
    SqliteKeyStore(path, [MASTER]).close()
    subjects = [("t_1", f"u_{i}") for i in range(60)]
    ctx = multiprocessing.get_context("fork")
    barrier, out = ctx.Barrier(3), ctx.Queue()
    workers = [ctx.Process(target=_race, args=(str(path), subjects, barrier, out)) for _ in range(3)]
    for w in workers:
        w.start()
    results = [out.get(timeout=60) for _ in workers]
    for w in workers:
        w.join(timeout=30)
        assert w.exitcode == 0

    assert results[0] == results[1] == results[2]
    with SqliteKeyStore(path, [MASTER]) as store:
        assert {f"{t}/{s}": store.get(t, s).enc_key.hex() for t, s in subjects} == results[0]  # type: ignore[union-attr]


def test_cache_is_bounded(tmp_path: Path) -> None:
    with SqliteKeyStore(tmp_path / "keystore.sqlite", [MASTER], cache_size=10) as store:
        for i in range(50):
            store.get_or_create("t_1", f"u_{i}")
        assert len(store._cache) == 10
        assert store.get("t_1", "u_0") is not None  # evicted, read back from the file


def test_a_wrapped_key_moved_to_another_subject_does_not_open(tmp_path: Path) -> None:
    path = tmp_path / "keystore.sqlite"
    with SqliteKeyStore(path, [MASTER]) as store:
        store.get_or_create_many([("t_1", "victim"), ("t_1", "attacker")])
        victim = _wrapped_blob(store, "t_1", "victim")
        store._db.execute("UPDATE wrapped_keys SET wrapped = ? WHERE subject_id = 'attacker'", (victim,))
    with SqliteKeyStore(path, [MASTER]) as store, pytest.raises(KeyStoreError, match="altered or damaged"):
        store.get("t_1", "attacker")


# --------------------------------------------------------------------------- master rotation


def test_rotation_keeps_every_key_readable_under_both_masters_then_retires_the_old(tmp_path: Path) -> None:
    path = tmp_path / "keystore.sqlite"
    subjects = [(f"t_{i % 3}", f"u_{i}") for i in range(2500)]  # more than one re-wrap batch
    rotating = SqliteKeyStore(path, [MASTER])
    before = {s: material(k) for s, k in rotating.get_or_create_many(subjects).items()}  # type: ignore[arg-type]
    old_only = SqliteKeyStore(path, [MASTER], cache_size=0)

    assert rotating.rotate_master(OTHER_MASTER) == 2500

    new_only = SqliteKeyStore(path, [OTHER_MASTER], cache_size=0)
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
        SqliteKeyStore(path, [MASTER])
    with pytest.raises(MasterKeyError, match="was retired"):
        rotating.rotate_master(MASTER)
    for s in (rotating, old_only, new_only):
        s.close()


def test_readers_keep_working_while_the_master_rotates(tmp_path: Path) -> None:
    path = tmp_path / "keystore.sqlite"
    subjects = [("t_1", f"u_{i}") for i in range(3000)]
    rotating = SqliteKeyStore(path, [MASTER])
    expected = {s: material(k) for s, k in rotating.get_or_create_many(subjects).items()}  # type: ignore[arg-type]
    reader = SqliteKeyStore(path, [MASTER], cache_size=0)
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


def test_rotate_with_retire_previous_leaves_only_the_new_master(tmp_path: Path) -> None:
    path = tmp_path / "keystore.sqlite"
    with SqliteKeyStore(path, [MASTER]) as store:
        keys = store.get_or_create("t_1", "u_1")
        old_wrap = _wrapped_blob(store, "t_1", "u_1")
        store.rotate_master(OTHER_MASTER, retire_previous=True)
        assert store.active_master_ids() == [master_key_id(OTHER_MASTER)]
    assert old_wrap not in path.read_bytes() + _wal(path)
    with SqliteKeyStore(path, [OTHER_MASTER]) as store:
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


def _wrapped_blob(store: SqliteKeyStore, tenant: str, subject: str) -> bytes:
    row = store._db.execute(
        "SELECT wrapped FROM wrapped_keys WHERE tenant_id = ? AND subject_id = ?", (tenant, subject)
    ).fetchone()
    return bytes(row[0])
