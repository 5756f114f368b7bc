"""An export's signed manifest (pipelines/export.py): what it lists, how it is signed, what verify-export catches.

MANIFEST.note is a C2SP signed note whose text is the canonical JSON of the files (name, SHA-256,
bytes, rows), the query and each log's newest checkpoint; `verify_export` checks the signature and
every listed file. No services and no Beam pipeline: the export's files are written here directly.
"""

from __future__ import annotations

import json
import random
import re
from hashlib import sha256
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines.export import (
    CSV_NEUTRALISED,
    MANIFEST_FILE,
    MANIFEST_VERSION,
    ExportQuery,
    ManifestError,
    archive_heads,
    build_manifest,
    run_export,
    sign_manifest,
    verify_export,
)
from pipelines.io.archive.testing import InMemoryArchive
from pipelines.io.clickhouse import NOT_EXPIRED
from transforms.checkpoint import Checkpoint, sign_checkpoint
from transforms.errors import SignatureError
from transforms.merkle import leaf_hash, root
from transforms.note import Signer, open_note

SIGNER = Signer.generate("auditlog.test")
FILES = {
    "events.csv": b"event_id,tenant_id\nevt_1,t_1000\nevt_2,t_1000\n",
    "events.jsonl": b'{"event_id":"evt_1"}\n{"event_id":"evt_2"}\n',
    "events.parquet": b"PAR1 not really parquet PAR1",
}
QUERY = ExportQuery("t_1000", "2026-05-01T00:00:00.000Z", "2026-06-01T00:00:00.000Z", {"result": "FAILURE"})
HEADS = {"audit.events.p1": "note of p1\n", "audit.events.p0": "note of p0\n"}


def write_files(out: Path, names: tuple[str, ...] = tuple(FILES)) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name in names:
        (out / name).write_bytes(FILES[name])


def exported(out: Path, formats: tuple[str, ...] = ("csv", "jsonl", "parquet")) -> dict:
    """The export's files and a signed manifest over them, as `run_export` leaves them."""
    write_files(out, tuple(f"events.{f}" for f in formats))
    manifest = build_manifest(out, QUERY, formats, 2, 0, HEADS)
    (out / MANIFEST_FILE).write_text(sign_manifest(manifest, SIGNER))
    return manifest


# --------------------------------------------------------------------------- what the manifest says


def test_the_manifest_lists_each_file_with_its_hash_size_and_rows(tmp_path: Path) -> None:
    write_files(tmp_path)

    manifest = build_manifest(tmp_path, QUERY, ("jsonl", "csv"), 2, 0, HEADS)

    assert manifest["files"] == [  # in the order of the formats asked for
        {
            "name": "events.jsonl",
            "sha256": "54c2ddec46bdf747981ea8c1bb29d8b323f9587bfd18943a46b9e5255bff658e",
            "bytes": 42,
            "rows": 2,
        },
        {
            "name": "events.csv",
            "sha256": "ea9133004b80e98b8d203da8ba703d5aeb3ce010d5f7ec7d1a80b457cbe753d1",
            "bytes": 45,
            "rows": 2,
        },
    ]
    # (the hashes are `sha256sum` of FILES' bytes)
    assert manifest["version"] == MANIFEST_VERSION == "auditlog-export/v1"
    assert manifest["rows"] == 2 and manifest["proofs"] == 0
    assert manifest["query"] == {
        "tenant_id": "t_1000",
        "start": "2026-05-01T00:00:00.000Z",
        "end": "2026-06-01T00:00:00.000Z",
        "filters": {"result": "FAILURE"},
    }
    assert list(manifest["checkpoints"]) == ["audit.events.p0", "audit.events.p1"]  # sorted by log
    assert manifest["checkpoints"] == HEADS
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", manifest["created_at"]), manifest["created_at"]
    assert manifest["csv"] == CSV_NEUTRALISED  # a CSV is in it: the manifest says how its cells were quoted


def test_a_manifest_without_csv_says_nothing_of_csv_quoting(tmp_path: Path) -> None:
    write_files(tmp_path)

    manifest = build_manifest(tmp_path, ExportQuery("t_1"), ("parquet",), 0, 0, {})

    assert "csv" not in manifest
    assert [f["name"] for f in manifest["files"]] == ["events.parquet"]
    assert manifest["query"] == {"tenant_id": "t_1", "start": None, "end": None, "filters": {}}
    assert manifest["checkpoints"] == {}


def test_a_listed_file_that_is_not_there_cannot_be_listed(tmp_path: Path) -> None:
    write_files(tmp_path, ("events.csv",))

    with pytest.raises(FileNotFoundError, match="events.jsonl"):
        build_manifest(tmp_path, QUERY, ("csv", "jsonl"), 2, 0, {})


def test_the_signed_manifest_is_its_canonical_json_on_one_line(tmp_path: Path) -> None:
    manifest = exported(tmp_path)

    note = open_note((tmp_path / MANIFEST_FILE).read_text(), SIGNER.verifier())

    assert note.text.endswith("\n") and note.text.count("\n") == 1
    assert json.loads(note.text) == manifest
    # RFC 8785: keys sorted, no spaces
    assert note.text == json.dumps(manifest, sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "\n"
    assert note.text.startswith('{"checkpoints":{"audit.events.p0":')
    assert [s.name for s in note.verified] == ["auditlog.test"]


# --------------------------------------------------------------------------- verify-export


def test_an_untouched_export_verifies_and_gives_back_its_manifest(tmp_path: Path) -> None:
    manifest = exported(tmp_path)

    assert verify_export(tmp_path, SIGNER.verifier()) == manifest


def test_extra_files_beside_the_export_are_not_its_concern(tmp_path: Path) -> None:
    manifest = exported(tmp_path, ("csv",))
    (tmp_path / "notes.txt").write_text("mine")

    assert verify_export(tmp_path, SIGNER.verifier()) == manifest


def test_no_manifest(tmp_path: Path) -> None:
    write_files(tmp_path)

    with pytest.raises(ManifestError) as caught:
        verify_export(tmp_path, SIGNER.verifier())
    assert str(caught.value) == f"no MANIFEST.note in {tmp_path}"


def test_an_altered_file_is_named_with_both_hashes(tmp_path: Path) -> None:
    manifest = exported(tmp_path)
    changed = FILES["events.csv"].replace(b"evt_2", b"evt_3")
    (tmp_path / "events.csv").write_bytes(changed)

    with pytest.raises(ManifestError) as caught:
        verify_export(tmp_path, SIGNER.verifier())
    listed = manifest["files"][0]["sha256"]
    assert str(caught.value) == (
        f"events.csv was altered: SHA-256 {sha256(changed).hexdigest()}, the manifest says {listed}"
    )


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    exported(tmp_path)
    (tmp_path / "events.jsonl").unlink()

    with pytest.raises(ManifestError) as caught:
        verify_export(tmp_path, SIGNER.verifier())
    assert str(caught.value) == "events.jsonl is listed in the manifest but missing"


def test_a_manifest_signed_by_another_key_is_refused(tmp_path: Path) -> None:
    exported(tmp_path)
    other = Signer.generate("auditlog.test")  # the same name, another key

    with pytest.raises(SignatureError, match="no signature from a known key"):
        verify_export(tmp_path, other.verifier())


def test_an_edited_manifest_text_no_longer_verifies(tmp_path: Path) -> None:
    exported(tmp_path)
    note = tmp_path / MANIFEST_FILE
    text = note.read_text()
    assert '"rows":2,' in text
    note.write_text(text.replace('"rows":2,', '"rows":3,', 1))

    with pytest.raises(SignatureError, match="does not verify"):
        verify_export(tmp_path, SIGNER.verifier())


def test_a_note_of_another_kind_signed_by_the_same_key_is_not_a_manifest(tmp_path: Path) -> None:
    # e.g. a checkpoint, or an export manifest of a future version: the key signs more than manifests
    write_files(tmp_path)
    manifest = build_manifest(tmp_path, QUERY, ("csv",), 2, 0, {})
    (tmp_path / MANIFEST_FILE).write_text(sign_manifest({**manifest, "version": "auditlog-export/v2"}, SIGNER))

    with pytest.raises(ManifestError) as caught:
        verify_export(tmp_path, SIGNER.verifier())
    assert str(caught.value) == f"{tmp_path / MANIFEST_FILE}: not an auditlog-export/v1 manifest"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    fmt=st.sampled_from(["csv", "jsonl", "parquet"]),
    size=st.integers(min_value=1, max_value=20_000),  # drawn apart, so that large files are as likely as small
    seed=st.integers(min_value=0),
    position=st.integers(min_value=0),
    flip=st.integers(min_value=1, max_value=255),
)
def test_any_changed_byte_of_any_listed_file_is_caught(
    tmp_path_factory: pytest.TempPathFactory, fmt: str, size: int, seed: int, position: int, flip: int
) -> None:
    content = random.Random(seed).randbytes(size)
    out = tmp_path_factory.mktemp("export")
    write_files(out)
    (out / f"events.{fmt}").write_bytes(content)
    (out / MANIFEST_FILE).write_text(
        sign_manifest(build_manifest(out, QUERY, ("csv", "jsonl", "parquet"), 1, 0, {}), SIGNER)
    )
    assert verify_export(out, SIGNER.verifier())["files"]
    changed = bytearray(content)
    changed[position % len(changed)] ^= flip
    (out / f"events.{fmt}").write_bytes(bytes(changed))

    with pytest.raises(ManifestError, match=rf"^events\.{fmt} was altered: SHA-256 [0-9a-f]{{64}}, "):
        verify_export(out, SIGNER.verifier())


# --------------------------------------------------------------------------- the query, the heads, the refusals


def test_an_export_query_takes_only_the_known_filters() -> None:
    with pytest.raises(ValueError) as caught:
        ExportQuery("t_1000", filters={"actor_id": "u", "colour": "red", "tenant_id": "t_2"})
    assert str(caught.value) == (
        "unknown export filter(s) ['colour', 'tenant_id']; "
        "use ['action', 'actor_id', 'resource_id', 'resource_type', 'result']"
    )


def test_the_export_query_binds_every_value() -> None:
    sql, params = ExportQuery(
        "t_1000", "2026-05-01T00:00:00.000Z", None, {"result": "x' OR 1=1 --", "action": "a"}
    ).where()

    assert sql.startswith("tenant_id = {tenant:String} AND occurred_at >= parseDateTime64BestEffort({start:String}")
    assert "{end:String}" not in sql and "OR 1=1" not in sql
    assert sql.endswith(f" AND {NOT_EXPIRED}")  # rows past their retention are never exported
    assert sql.index("{f_action:String}") < sql.index("{f_result:String}")
    assert params == {
        "tenant": "t_1000",
        "start": "2026-05-01T00:00:00.000Z",
        "f_action": "a",
        "f_result": "x' OR 1=1 --",
    }


def test_archive_heads_are_each_logs_newest_checkpoint(tmp_path: Path) -> None:
    archive = InMemoryArchive()
    signer = Signer.generate("auditlog.test/a")
    leaves = [leaf_hash(f"e{i}".encode()) for i in range(9)]
    notes = {size: sign_checkpoint(Checkpoint("auditlog.test/a", size, root(leaves[:size])), signer) for size in (4, 9)}
    for size, note in notes.items():
        archive.put_checkpoint("a", size, note)
    archive.put_checkpoint("b", 2, "b at 2\n")
    archive.put_block("c", 0, b"a block, no checkpoint yet")

    assert archive_heads(archive) == {"a": notes[9], "b": "b at 2\n"}
    assert archive_heads(InMemoryArchive()) == {}


def test_an_unknown_format_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    out = tmp_path / "out"

    with pytest.raises(ValueError) as caught:
        run_export(ExportQuery("t_1"), out, ("csv", "xlsx", "pdf"), f"chdb://{tmp_path}/index", SIGNER, {})
    assert str(caught.value) == "unknown export format(s) ['pdf', 'xlsx']; use ['csv', 'jsonl', 'parquet']"
    assert not out.exists()


def test_an_export_never_overwrites_another(tmp_path: Path) -> None:
    before = exported(tmp_path)
    note = (tmp_path / MANIFEST_FILE).read_bytes()

    with pytest.raises(FileExistsError) as caught:
        run_export(ExportQuery("t_1"), tmp_path, ("csv",), f"chdb://{tmp_path}/index", SIGNER, {})
    assert str(caught.value) == f"{tmp_path} already holds an export (MANIFEST.note); choose an empty --out"
    assert (tmp_path / MANIFEST_FILE).read_bytes() == note and verify_export(tmp_path, SIGNER.verifier()) == before
