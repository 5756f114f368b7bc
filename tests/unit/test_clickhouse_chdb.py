"""The ClickHouse index on real embedded chDB: schema, idempotent block writes and the readers.

Blocks are built by the ingest job's own per-log step (`LogSequencer`: sample events → validation,
PII sealing, retention stamp, canonical bytes, blocks, checkpoints), written once, the engine
closed and reopened, and everything checked against the blocks. chDB is embedded (a pip package):
no service runs, so these are unit tests (about 10 s)::

    .venv/bin/python -m pytest tests/unit/test_clickhouse_chdb.py
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from hashlib import sha256
from pathlib import Path

import pytest

from pipelines.ingest_core import IngestOptions, LogCursor, LogSequencer, MemoryDedupe, SourceRecord
from pipelines.io.clickhouse import ClickHouse, ClickHouseError, IndexIntegrityError, open_clickhouse
from pipelines.io.clickhouse.index import EVENT_PLACE_SQL
from pipelines.io.keystore import InMemoryKeyStore
from schemas.retention import load_policy
from schemas.samples import EventGenerator, to_record
from schemas.settings import REPO_ROOT
from transforms.blocks import BlockHeader, decode_block_object, verify_chain
from transforms.checkpoint import open_checkpoint
from transforms.merkle import leaf_hash, root
from transforms.note import Signer

ORIGIN = "auditlog.test/chdb"
BIG, SMALL = "big.p0", "small.p0"  # the job names a log <topic>.p<partition>
# The golden runs' policy: periods long enough that no sample event's retention has ended (a row
# past retention is hidden from counts and searches, and TTL may delete it).
LONG_RETENTION = load_policy(REPO_ROOT / "tests" / "testdata" / "recording" / "retention.toml")
TABLES = ("audit_logs", "audit_leaves", "audit_blocks", "audit_checkpoints")


@dataclass(frozen=True)
class Block:
    """A block as the ingest job seals it: header, canonical entries, signed checkpoint."""

    header: BlockHeader
    canonical: list[bytes]
    checkpoint: str


@dataclass
class Written:
    path: Path
    signer: Signer
    blocks: list[Block]
    checkpoints: dict[tuple[str, int], str]  # (log_id, block_index) -> signed note

    def entries(self, block: Block) -> list[bytes]:
        return block.canonical

    def of_log(self, log_id: str) -> list[Block]:
        return [b for b in self.blocks if b.header.log_id == log_id]


def build_blocks(events: int, block_sizes: dict[str, int], signer: Signer, seed: int = 11) -> list[Block]:
    """Sample events spread over logs by Kafka key, sealed by the ingest job's own step, deterministically."""
    generator = EventGenerator(seed=seed, tenants=4)
    keys = InMemoryKeyStore(key_seed=b"chdb-test")
    logs = {}
    for topic, size in block_sizes.items():
        options = IngestOptions(topic=topic, origin_prefix=ORIGIN, block_size=size, retention=LONG_RETENTION)
        logs[topic] = (LogSequencer(options, keys, signer), LogCursor(options.log_id(0)), MemoryDedupe())
    names = sorted(logs)
    blocks: list[Block] = []

    def collect(outputs: list[tuple[str, object]]) -> None:
        for kind, item in outputs:
            if kind == "block":
                header, entries = decode_block_object(item.block_object)  # type: ignore[attr-defined]
                blocks.append(Block(header, list(entries), item.checkpoint))  # type: ignore[attr-defined]

    for offset in range(events):
        key, value = to_record(generator.event())
        sequencer, cursor, dedupe = logs[names[int.from_bytes(sha256(key).digest()[:4], "big") % len(names)]]
        collect(sequencer.step(cursor, dedupe, SourceRecord(0, offset, 0, key, value)))
    for sequencer, cursor, _ in logs.values():
        last = sequencer.seal(cursor)
        collect([("block", last)] if last else [])
    return blocks


def write_all(ch: ClickHouse, written: Written) -> None:
    for block in written.blocks:
        note = written.checkpoints[(block.header.log_id, block.header.block_index)]
        ch.write_block(block.header, written.entries(block), note)


def table_counts(ch: ClickHouse) -> dict[str, int]:
    return {t: ch.query(f"SELECT count() FROM auditlog.{t}")[0][0] for t in TABLES}


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Written:
    """Blocks of two logs written once to a fresh chDB, which is then closed again.

    `big` gets a 2100-leaf block (~2.5 MB of rows: clickhouse-connect sends it as two Native
    blocks of one insert, which dedupe as token_0 and token_1) and a partial one; `small` gets
    100-leaf blocks and a partial last block.
    """
    path = tmp_path_factory.mktemp("chdb") / "data"
    signer = Signer.generate(ORIGIN)
    blocks = build_blocks(6000, {"big": 2100, "small": 100}, signer)
    checkpoints = {(b.header.log_id, b.header.block_index): b.checkpoint for b in blocks}
    result = Written(path, signer, blocks, checkpoints)
    ch = open_clickhouse(f"chdb://{path}")
    try:
        ch.ensure_schema()
        write_all(ch, result)
    finally:
        ch.close()
    return result


@pytest.fixture(scope="module")
def ch(written: Written) -> Iterator[ClickHouse]:
    """The same chDB directory, opened again (so dedup state must have survived a restart)."""
    instance = open_clickhouse(f"chdb://{written.path}")
    try:
        yield instance
    finally:
        instance.close()


def test_schema_creates_the_four_tables(ch: ClickHouse) -> None:
    names = {
        row[0] for row in ch.query("SELECT name FROM system.tables WHERE database = {db:String}", {"db": "auditlog"})
    }
    assert set(TABLES) <= names
    ch.ensure_schema()  # idempotent


def test_every_row_is_there_once(ch: ClickHouse, written: Written) -> None:
    leaves = sum(b.header.leaf_count for b in written.blocks)

    assert table_counts(ch) == {
        "audit_logs": leaves,
        "audit_leaves": leaves,
        "audit_blocks": len(written.blocks),
        "audit_checkpoints": len(written.blocks),
    }
    assert {b.header.log_id for b in written.blocks} == {BIG, SMALL}
    assert max(b.header.leaf_count for b in written.blocks) == 2100


def test_rewriting_every_block_after_a_restart_changes_nothing(ch: ClickHouse, written: Written) -> None:
    before = table_counts(ch)

    write_all(ch, written)
    write_all(ch, written)

    assert table_counts(ch) == before


def test_count_events_per_tenant(ch: ClickHouse, written: Written) -> None:
    import json

    tenants = Counter(json.loads(e)["tenant_id"] for b in written.blocks for e in written.entries(b))

    assert ch.count_events() == sum(tenants.values())
    for tenant, count in tenants.items():
        assert ch.count_events(tenant) == count
    assert ch.count_events("t_nobody") == 0


def test_find_event_returns_its_place_and_bytes(ch: ClickHouse, written: Written) -> None:
    import json

    block = written.of_log(SMALL)[3]
    canonical = written.entries(block)[17]
    doc = json.loads(canonical)

    found = ch.find_event(doc["tenant_id"], doc["event_id"])

    assert found == {
        "tenant_id": doc["tenant_id"],
        "event_id": doc["event_id"],
        "log_id": SMALL,
        "leaf_index": block.header.first_leaf_index + 17,
        "block_index": block.header.block_index,
        "leaf_hash": leaf_hash(canonical),
        "block_hash": block.header.hash(),
        "canonical": canonical,
    }
    assert ch.find_event("t_other", doc["event_id"]) is None
    assert ch.find_event(doc["tenant_id"], "evt_' OR '1'='1") is None


def test_event_place_is_a_point_lookup_on_the_by_event_projection(ch: ClickHouse, written: Written) -> None:
    import json

    block = written.of_log(BIG)[0]
    doc = json.loads(written.entries(block)[-1])
    place = (BIG, block.header.tree_size - 1)

    assert ch.event_place(doc["tenant_id"], doc["event_id"]) == place
    assert ch.event_place("t_other", doc["event_id"]) is None
    # ClickHouse must answer event_place's own query from the projection (it refuses the query otherwise)
    rows = ch.query(
        EVENT_PLACE_SQL + " SETTINGS force_optimize_projection = 1",
        {"tenant": doc["tenant_id"], "event": doc["event_id"]},
    )
    assert rows == [place]
    assert ch.is_retained(doc["tenant_id"], doc["event_id"])
    assert not ch.is_retained("t_other", doc["event_id"])


def test_leaf_places_read_a_log_in_leaf_order_for_the_place_index(ch: ClickHouse, written: Written, tmp_path) -> None:
    import json

    from pipelines.io.places import PlaceIndex

    assert BIG in ch.leaf_logs()
    blocks = written.of_log(BIG)
    first = [json.loads(e) for e in written.entries(blocks[0])]
    rows = ch.leaf_places(BIG, 1, 3)
    assert rows == [(i, first[i]["tenant_id"], first[i]["event_id"]) for i in range(1, 4)]
    places = PlaceIndex(tmp_path / "places.sqlite")
    places.sync(ch)
    size = blocks[-1].header.tree_size
    assert places.synced()[BIG] == size
    last = json.loads(written.entries(blocks[-1])[-1])
    assert places.lookup(last["tenant_id"], last["event_id"]) == (BIG, size - 1)


OLD_LEAVES_TABLE = """
import re
from pipelines.io.clickhouse import open_clickhouse
from pipelines.io.clickhouse.schema import schema_statements
ch = open_clickhouse("chdb://{home}")
old = [re.sub(r",\\s*PROJECTION[^\\n]*\\n", "\\n", s) for s in schema_statements()]
ch.ensure_schema(";\\n".join(old))
ch.query("INSERT INTO auditlog.audit_leaves VALUES ('l0', 3, repeat('a', 32), 't_1', 'evt_1', 0)")
assert not ch.query("SELECT count() FROM system.projections WHERE table = 'audit_leaves'")[0][0]
ch.ensure_schema()
assert ch.event_place("t_1", "evt_1") == ("l0", 3)
print(ch.query("SELECT leaf_index FROM auditlog.audit_leaves WHERE tenant_id = 't_1' AND event_id = 'evt_1' "
               "SETTINGS force_optimize_projection = 1"))
"""


def test_a_leaves_table_made_before_the_projection_gets_it_with_its_rows(tmp_path: Path) -> None:
    import subprocess
    import sys

    script = OLD_LEAVES_TABLE.format(home=tmp_path / "old")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr  # in a process of its own: chDB hosts one directory a process
    assert run.stdout.strip() == "[(3,)]"


WIDE_PARTS_TABLE = """
from pipelines.io.clickhouse import open_clickhouse
from pipelines.io.clickhouse.arrow import SealedBlock
from pipelines.io.clickhouse.schema import schema_statements
from pipelines.io.keystore import InMemoryKeyStore
from tests.synthetic import sealed_blocks
from transforms.blocks import decode_block_object
from transforms.merkle import leaf_hash
from transforms.note import Signer

ch = open_clickhouse("chdb://{home}")
old = [s.replace(", min_bytes_for_wide_part = 134217728", "") for s in schema_statements()]
ch.ensure_schema(";\\n".join(old))
settings = "SELECT name, position(create_table_query, 'min_bytes_for_wide_part') > 0 FROM system.tables "
settings += "WHERE database = 'auditlog' AND name IN ('audit_logs', 'audit_leaves') ORDER BY name"
print(ch.query(settings))
ch.ensure_schema()
print(ch.query(settings))
blocks = []
for _, record in sealed_blocks(12_000, 1, 1_000, Signer.generate("t"), InMemoryKeyStore(key_seed=b"t")):
    header, entries = decode_block_object(record.block_object)
    blocks.append(SealedBlock(header, entries, [leaf_hash(e) for e in entries]))
ch.write_blocks(blocks, [None] * len(blocks))
print(ch.query("SELECT table, part_type, data_uncompressed_bytes > 10485760 FROM system.parts "
               "WHERE database = 'auditlog' AND table = 'audit_logs' AND active"))
"""


def test_an_insert_of_ten_blocks_is_one_compact_part_also_in_tables_made_before(tmp_path: Path) -> None:
    """Over the 10 MB default, the part would be wide: ~45 files created per insert (see clickhouse.sql)."""
    import subprocess
    import sys

    script = WIDE_PARTS_TABLE.format(home=tmp_path / "old")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    before, after, parts = run.stdout.strip().splitlines()
    assert before == "[('audit_leaves', 0), ('audit_logs', 0)]"
    assert after == "[('audit_leaves', 1), ('audit_logs', 1)]"
    assert parts == "[('audit_logs', 'Compact', 1)]"


ARROW_INSERTS = """
import clickhouse_connect
from pipelines.io.clickhouse import open_clickhouse
from pipelines.io.clickhouse.arrow import SealedBlock, leaves_table, logs_table
from pipelines.io.keystore import InMemoryKeyStore
from schemas.native import index_columns
from tests.synthetic import sealed_blocks
from transforms.blocks import decode_block_object
from transforms.merkle import leaf_hash
from transforms.note import Signer

blocks = []
for _, record in sealed_blocks(600, 1, 200, Signer.generate("t"), InMemoryKeyStore(key_seed=b"t")):
    header, entries = decode_block_object(record.block_object)
    blocks.append(SealedBlock(header, entries, [leaf_hash(e) for e in entries]))
logs = logs_table(blocks, columns=index_columns("auto"))
digests = []
for way in ("connect", "direct"):
    ch = open_clickhouse("chdb://{home}/" + way)
    ch.ensure_schema()
    for table, data in (("auditlog.audit_leaves", leaves_table(logs)), ("auditlog.audit_logs", logs)):
        for token in ("it's \\\\ a token", "it's \\\\ a token", "another"):  # the second is a repeat
            settings = {{"insert_deduplicate": 1, "insert_deduplication_token": token}}
            if way == "connect":  # clickhouse-connect's own Arrow insert (a file and INSERT ... FROM INFILE)
                clickhouse_connect.driver.client.Client.insert_arrow(ch._conn.client, table, data, settings=settings)
            else:
                ch._conn.insert_arrow(table, data, settings)
    for t in ("auditlog.audit_logs", "auditlog.audit_leaves"):
        digests.append(ch.query(f"SELECT count(), sum(cityHash64(*)) FROM {{t}}")[0])
    ch.close()
print(digests[:2] == digests[2:], digests[2][0])
"""


def test_arrow_inserts_through_python_table_function_store_what_clickhouse_connect_does(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-c", ARROW_INSERTS.format(home=tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO_ROOT,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["True", "1200"]  # 600 rows, twice: a repeated token is deduplicated


def test_leaf_hashes_rebuild_every_block_root_and_the_tree_root(ch: ClickHouse, written: Written) -> None:
    for log_id in (BIG, SMALL):
        blocks = written.of_log(log_id)
        size = blocks[-1].header.tree_size

        leaves = ch.leaf_hashes(log_id, size)

        assert root(leaves) == blocks[-1].header.tree_root
        for block in blocks:
            h = block.header
            assert root(leaves[h.first_leaf_index : h.first_leaf_index + h.leaf_count]) == h.block_root
        headers = ch.block_headers(log_id)
        assert headers == [b.header for b in blocks]
        tree = verify_chain((h, leaves[h.first_leaf_index : h.first_leaf_index + h.leaf_count]) for h in headers)
        assert tree.size == size
        # A prefix is a prefix: the first block's tree head is rebuilt from the first leaves alone.
        assert root(ch.leaf_hashes(log_id, blocks[0].header.tree_size)) == blocks[0].header.tree_root


def test_leaf_hashes_beyond_the_index_is_an_integrity_error(ch: ClickHouse, written: Written) -> None:
    size = written.of_log(SMALL)[-1].header.tree_size

    with pytest.raises(IndexIntegrityError, match=f"leaf {size} is missing"):
        ch.leaf_hashes(SMALL, size + 1)
    assert ch.leaf_hashes(SMALL, 0) == []


def test_checkpoints(ch: ClickHouse, written: Written) -> None:
    verifier = written.signer.verifier()
    blocks = written.of_log(SMALL)
    last, first = blocks[-1].header, blocks[0].header

    latest = ch.latest_checkpoint(SMALL)
    assert latest == (last.tree_size, written.checkpoints[(SMALL, last.block_index)])
    checkpoint = open_checkpoint(latest[1], verifier, origin=f"{ORIGIN}/{SMALL}")
    assert (checkpoint.size, checkpoint.root) == (last.tree_size, last.tree_root)

    assert ch.checkpoint_at_least(SMALL, 1) == (first.tree_size, written.checkpoints[(SMALL, 0)])
    assert ch.checkpoint_at_least(SMALL, first.tree_size + 1)[0] == blocks[1].header.tree_size  # type: ignore[index]
    assert ch.checkpoint_at_least(SMALL, last.tree_size + 1) is None
    assert ch.latest_checkpoint("nope") is None


def test_log_heads(ch: ClickHouse, written: Written) -> None:
    heads = ch.log_heads()

    assert heads == {
        log_id: (written.of_log(log_id)[-1].header.tree_size, written.of_log(log_id)[-1].header.tree_root)
        for log_id in (BIG, SMALL)
    }


def test_query_binds_values_server_side(ch: ClickHouse) -> None:
    rows = ch.query("SELECT {s:String}, {n:UInt64} + 1", {"s": "it's'; DROP TABLE x --", "n": 41})

    assert rows == [("it's'; DROP TABLE x --", 42)]
    with pytest.raises(ValueError, match="placeholders"):
        ch.query("SELECT %(s)s", {"s": "x"})
    with pytest.raises(ClickHouseError, match="query failed"):
        ch.query("SELECT * FROM auditlog.no_such_table")


def test_a_checkpoint_of_another_tree_head_is_refused(ch: ClickHouse, written: Written) -> None:
    one, two = written.of_log(SMALL)[:2]
    before = table_counts(ch)

    with pytest.raises(ValueError, match="checkpoint is for size"):
        ch.write_block(one.header, written.entries(one), written.checkpoints[(SMALL, 1)])
    with pytest.raises(ValueError, match="entries"):
        ch.write_block(two.header, written.entries(one)[:3])
    assert table_counts(ch) == before


def test_one_chdb_directory_per_process(ch: ClickHouse, written: Written, tmp_path: Path) -> None:
    same = open_clickhouse(f"chdb://{written.path}/")  # another spelling of the same directory
    assert same is ch
    same.close()  # drops the extra reference only
    assert ch.count_events() > 0

    with pytest.raises(ClickHouseError, match="already open"):
        open_clickhouse(f"chdb://{tmp_path}")
    with pytest.raises(ValueError, match="absolute"):
        open_clickhouse("chdb://relative/dir")


def test_another_process_is_told_the_directory_is_in_use(ch: ClickHouse, written: Written, tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from pipelines.io.clickhouse import open_clickhouse, open_clickhouse_unless_held, ChdbHeldError\n"
        "try:\n    open_clickhouse(sys.argv[1])\n"
        "except ChdbHeldError as exc:\n    print('HELD', exc)\n"
        "print('OPENED', open_clickhouse_unless_held(sys.argv[1]) is not None)\n"
    )

    def run(url: str) -> str:
        done = subprocess.run(
            [sys.executable, "-c", code, url], capture_output=True, text=True, timeout=120, cwd=REPO_ROOT
        )
        return done.stdout + done.stderr

    held = run(f"chdb://{written.path}")
    assert "HELD" in held and "locked by one process at a time" in held and "OPENED False" in held, held
    free = run(f"chdb://{tmp_path / 'free'}")
    assert "HELD" not in free and "OPENED True" in free, free


def test_server_urls_use_the_native_protocol_with_the_same_code() -> None:
    # No ClickHouse server is obtainable here: this checks the URL handling and that a refused
    # connection surfaces as ClickHouseError, not the SQL against a live server.
    server = open_clickhouse("clickhouse://127.0.0.1:1/auditlog")
    try:
        assert server.kind == "native"
        with pytest.raises(ClickHouseError, match="query failed"):
            server.count_events()
    finally:
        server.close()
    with pytest.raises(ClickHouseError, match="database 'auditlog'"):
        open_clickhouse("clickhouse://127.0.0.1:1/other")
    with pytest.raises(ValueError, match="expected chdb"):
        open_clickhouse("http://127.0.0.1:8123")
