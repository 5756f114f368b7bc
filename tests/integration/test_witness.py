"""Witnessed checkpoints against the real witness: litewitness (torchwood v0.6.1) behind its ssh-agent.

The witness runs through `Stack.up(["witness"])` in a home of its own; logs are built with the ingest
job's own per-log code (tests/synthetic.py) into an in-memory WORM archive, and the operator's key is
in the test's hands, so it can sign a second history (a split view) and show it to the same witness.

- every checkpoint is cosigned, bundles verify with `verify-proof --min-witnesses 1`, and the
  cosignatures open with Go's golang.org/x/mod/sumdb/note;
- a split view is refused by the witness, nothing is stored as cosigned, and both the archive check
  (`auditlog verify`'s witness part) and `verify-proof --min-witnesses 1` fail saying why;
- a witness down for a minute (AUDITLOG_TEST_WITNESS_OUTAGE_S) does not hold up the writer, and
  every checkpoint is cosigned once it is back.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from infra.stack import Stack
from infra.witness import register_log
from pipelines.io.archive.testing import InMemoryArchive
from pipelines.prover import Prover
from pipelines.witnessing import (
    LagMetrics,
    Publisher,
    PublisherThread,
    list_cosigned,
    verify_witnessing,
    witnesses_from_settings,
)
from runners.cli import main as cli_main
from schemas.settings import Settings
from tests.synthetic import EVIDENCE, ORIGIN, build_logs, sealed_blocks
from transforms.note import Signer

pytestmark = pytest.mark.integration

OUTAGE_S = float(os.environ.get("AUDITLOG_TEST_WITNESS_OUTAGE_S", "60"))
GO_DIR = Path(__file__).resolve().parents[1] / "interop" / "go"


@pytest.fixture
def witness_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A new witness for each test (a witness remembers each origin's key and size for good)."""
    offset = int(os.environ.get("AUDITLOG_TEST_PORT_OFFSET", "10000"))
    home = tmp_path_factory.mktemp("witness-home")
    settings = Settings.from_env(home=home, witness_port=Settings().witness_port + offset + 1, witnesses="")
    stack = Stack(settings, say=lambda line: None)
    stack.up(["witness"])
    try:
        yield settings
    finally:
        stack.down(["witness"])


def _publisher(settings: Settings, archive: Any, signer: Signer) -> Publisher:
    witnesses = witnesses_from_settings(settings)
    assert len(witnesses) == 1
    vkey = signer.verifier().encode()
    return Publisher(
        archive,
        signer.verifier(),
        vkey,
        ORIGIN,
        witnesses,
        register=lambda w, origin, key: register_log(settings, origin, key),
        timeout_s=2,
        max_backoff_s=2,
    )


def _bundle(archive: Any, signer: Signer, log_id: str, index: int, folder: Path) -> Path:
    prover = Prover(archive, None, signer.verifier(), ORIGIN)  # the event's place is known: no index lookup
    size, _ = archive.latest_checkpoint(log_id)
    entry = prover.tiles.entries(log_id, index, 1, size)[0]  # the event's bytes, from its entry bundle
    proof = prover.proof_at("t", "e", log_id, index, entry)
    folder.mkdir(parents=True)
    (folder / "proof.tlog-proof").write_text(proof.text)
    (folder / "entry.json").write_bytes(entry)
    return folder


def _cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = cli_main(list(argv))
    return rc, out.getvalue()


def _go_cosig_verify(tmp_path: Path, requests: list[dict[str, str]]) -> list[dict[str, Any]]:
    go = shutil.which("go")
    if go is None:
        pytest.skip("no go binary for the interop check")
    binary = tmp_path / "interop"
    env = {**os.environ, "GOFLAGS": "-mod=mod -buildvcs=false", "GOPROXY": "off", "GOTOOLCHAIN": "local"}
    subprocess.run([go, "build", "-o", str(binary), "."], cwd=GO_DIR, env=env, check=True, timeout=300)
    run = subprocess.run([str(binary)], input=json.dumps(requests), capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    return list(json.loads(run.stdout))


def test_every_checkpoint_is_cosigned_and_bundles_verify(witness_settings: Settings, tmp_path: Path) -> None:
    archive = InMemoryArchive()
    signer = Signer.generate(ORIGIN)
    built = build_logs(archive, None, 600, logs=2, block_size=50, signer=signer)
    publisher = _publisher(witness_settings, archive, signer)
    witness = publisher.witnesses[0]
    assert publisher.sync_once() == built.blocks
    vkey = witness.verifier.encode()
    notes = []
    for log_id in built.log_ids:
        sizes = archive.list_checkpoints(log_id)
        cosigned = list_cosigned(archive, log_id)
        assert list(cosigned.values()) == [sizes], f"log {log_id}: not every checkpoint is cosigned"
        notes += [archive.get(k).decode() for k in archive.keys(f"logs/{log_id}/cosigned/")]
    audit = verify_witnessing(archive, signer.verifier(), ORIGIN, [witness], min_witnesses=1)
    assert audit.problems == [] and audit.cosignatures == built.blocks
    lag = publisher.lag()
    assert len(lag) == len(built.log_ids) and all(row.checkpoints_behind == 0 for row in lag), lag

    # Proof bundles carry the cosignature and verify with --min-witnesses 1.
    bundle = _bundle(archive, signer, built.log_ids[0], 7, tmp_path / "proof")
    rc, out = _cli(
        "verify-proof", str(bundle), "--key", signer.verifier().encode(), "--witness", vkey, "--min-witnesses", "1"
    )
    assert rc == 0, out
    assert f"cosigned by witness {witness.verifier.name}" in out and "1 of 1 witness(es) cosigned" in out

    # Go's sumdb/note opens every cosigned note with the witness's and the log's keys.
    answers = _go_cosig_verify(
        tmp_path, [{"op": "cosig-verify", "vkey": vkey, "vkey2": signer.verifier().encode(), "msg": n} for n in notes]
    )
    assert len(answers) == len(notes) == built.blocks and all(a.get("ok") is True for a in answers), answers


def test_split_view_is_refused_and_caught(witness_settings: Settings, tmp_path: Path) -> None:
    signer = Signer.generate(ORIGIN)  # the operator's key, in the test's hands
    honest = InMemoryArchive()
    build_logs(honest, None, 300, logs=1, block_size=50, signer=signer, seed=1)
    assert _publisher(witness_settings, honest, signer).sync_once() == 6
    # The same log, same origin and key, another history: what the operator shows a second auditor.
    forked = InMemoryArchive()
    build_logs(forked, None, 300, logs=1, block_size=50, signer=signer, seed=2)
    log_id = forked.list_logs()[0]
    assert forked.get_checkpoint(log_id, 300) != honest.get_checkpoint(log_id, 300)
    publisher = _publisher(witness_settings, forked, signer)
    assert publisher.sync_once() == 0
    assert publisher.stats.refused == 1
    assert list_cosigned(forked, log_id) == {}, "a split view was stored as cosigned"
    witness = publisher.witnesses[0]
    audit = verify_witnessing(forked, signer.verifier(), ORIGIN, [witness], min_witnesses=1)
    text = "\n".join(audit.problems)
    assert f"witness {witness.verifier.name} refused to cosign: HTTP 422" in text and "split view" in text, text
    assert "0 of the required 1 witness cosignature(s)" in text
    gauges = _gauges(LagMetrics(forked, [witness], max_age_s=0)())
    assert gauges["auditlog_witness_refusals"] == 1 and gauges["auditlog_witness_cosigned_tree_size"] == -1, gauges

    bundle = _bundle(forked, signer, log_id, 3, tmp_path / "forked")
    key, wkey = signer.verifier().encode(), witness.verifier.encode()
    rc, out = _cli("verify-proof", str(bundle), "--key", key, "--witness", wkey, "--min-witnesses", "1")
    assert rc == 1 and "NOT VERIFIED: WitnessError" in out and witness.verifier.name in out, out
    assert "no cosignature from this witness" in out

    # A rollback: the log re-signed at a smaller size than the witness has seen.
    rolled = InMemoryArchive()
    for _, block in sealed_blocks(120, 1, 50, signer, _keys(), seed=3):
        rolled.put_sealed_block(block, EVIDENCE)
    publisher = _publisher(witness_settings, rolled, signer)
    assert publisher.sync_once() == 0 and list_cosigned(rolled, log_id) == {}
    audit = verify_witnessing(rolled, signer.verifier(), ORIGIN, [witness], min_witnesses=0)
    assert any("refused to cosign" in p for p in audit.problems), audit.problems


def _gauges(text: str) -> dict[str, int]:
    """{gauge name: value} of a /metrics text holding one witness on one log."""
    samples = [line for line in text.splitlines() if line and not line.startswith("#")]
    values = {line.split("{", 1)[0]: int(line.rsplit(" ", 1)[1]) for line in samples}
    assert len(values) == len(samples), f"more than one witness or log: {samples}"
    return values


def _keys() -> Any:
    from pipelines.io.keystore import InMemoryKeyStore

    return InMemoryKeyStore(key_seed=b"auditlog-synthetic")


def test_witness_down_for_a_minute(witness_settings: Settings) -> None:
    archive = InMemoryArchive()
    signer = Signer.generate(ORIGIN)
    blocks = iter(sealed_blocks(100_000, 1, 20, signer, _keys(), seed=4))
    publisher = _publisher(witness_settings, archive, signer)
    thread = PublisherThread(publisher, interval_s=0.5)
    thread.start()
    stack = Stack(witness_settings, say=lambda line: None)
    written = 0
    slowest = 0.0

    def write(seconds: float) -> None:
        nonlocal written, slowest
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            began = time.monotonic()
            archive.put_sealed_block(next(blocks)[1], EVIDENCE)
            slowest = max(slowest, time.monotonic() - began)
            written += 1
            time.sleep(0.25)

    try:
        write(3)
        stack.down(["witness"])
        before = written
        write(OUTAGE_S)
        during = written - before
        lag = publisher.lag()[0]
        assert lag.checkpoints_behind > 0 and lag.error, lag
        gauges = _gauges(LagMetrics(archive, publisher.witnesses, max_age_s=0)())
        assert gauges["auditlog_witness_checkpoints_behind"] > 0, gauges
        stack.up(["witness"])
        write(3)
        log_id = archive.list_logs()[0]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if list(list_cosigned(archive, log_id).values()) == [archive.list_checkpoints(log_id)]:
                break
            time.sleep(0.5)
    finally:
        thread.stop()
        stack.up(["witness"])
    sizes = archive.list_checkpoints(log_id)
    assert list(list_cosigned(archive, log_id).values()) == [sizes], "cosignatures did not catch up"
    gauges = _gauges(LagMetrics(archive, publisher.witnesses, max_age_s=0)())
    assert gauges["auditlog_witness_checkpoints_behind"] == gauges["auditlog_witness_leaves_behind"] == 0, gauges
    assert gauges["auditlog_witness_cosigned_tree_size"] == sizes[-1], gauges
    assert during >= OUTAGE_S / 0.5, f"the writer slowed down while the witness was down: {during} blocks"
    assert slowest < 1.0
    print(f"witness down {OUTAGE_S:.0f} s: {during} blocks written meanwhile, {len(sizes)} checkpoints all cosigned")
