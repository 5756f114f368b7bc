"""The sequencer's background archiver (pipelines/ingest_operators.py: BackgroundArchiver).

The archive here is a stand-in that records puts and can be held or made to fail: these are the
error and ordering paths; the real S3 archive is exercised by the ingest integration tests.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

pytest.importorskip("pyflink")

from pipelines.ingest_core import SealedBlockRecord  # noqa: E402
from pipelines.ingest_operators import BackgroundArchiver  # noqa: E402


class Archive:
    def __init__(self, fail_at: int | None = None) -> None:
        self.put: list[int] = []
        self.fail_at = fail_at
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()  # a put has started

    def put_sealed_block(self, block: SealedBlockRecord, evidence: Any) -> None:
        self.entered.set()
        self.gate.wait(5)
        if block.block_index == self.fail_at:
            raise ConnectionError(f"S3 down at block {block.block_index}")
        self.put.append(block.block_index)


def block(index: int) -> SealedBlockRecord:
    return SealedBlockRecord("t.p0", index, index + 1, b"{}", "")


def test_blocks_go_in_order_and_wait_returns_when_all_are_archived() -> None:
    archive = Archive()
    archiver = BackgroundArchiver(archive, None, ahead=2)
    for i in range(10):
        archiver.put(block(i))
    archiver.wait()

    assert archive.put == list(range(10))
    archiver.close()


def test_put_holds_the_sequencer_when_it_is_too_far_ahead() -> None:
    archive = Archive()
    archive.gate.clear()
    archiver = BackgroundArchiver(archive, None, ahead=2)
    archiver.put(block(0))
    archiver.put(block(1))
    third = threading.Thread(target=archiver.put, args=(block(2),))
    third.start()
    third.join(0.3)

    assert third.is_alive()  # two blocks queued and none archived: the third put waits
    archive.gate.set()
    third.join(5)
    archiver.wait()
    assert archive.put == [0, 1, 2]
    archiver.close()


def test_a_failed_put_fails_wait_and_no_later_block_is_archived() -> None:
    archive = Archive(fail_at=1)
    archive.gate.clear()
    archiver = BackgroundArchiver(archive, None, ahead=10)
    for i in range(4):
        archiver.put(block(i))
    archive.gate.set()

    with pytest.raises(ConnectionError, match="S3 down at block 1"):
        archiver.wait()
    assert archive.put == [0]  # blocks 2 and 3 were queued after the failed one: never put
    with pytest.raises(RuntimeError, match=r"t.p0/2 not archived: an earlier put failed \(S3 down at block 1\)"):
        archiver.put(block(5))
        archiver.wait()
    archiver.close()


def test_close_reports_a_failure_instead_of_raising(capsys: pytest.CaptureFixture[str]) -> None:
    archiver = BackgroundArchiver(Archive(fail_at=0), None)
    archiver.put(block(0))
    archiver.close()

    assert "a block was not archived before the operator closed" in capsys.readouterr().err


def test_close_finishes_the_put_under_way_and_drops_the_queued_ones(capsys: pytest.CaptureFixture[str]) -> None:
    archive = Archive()
    archive.gate.clear()
    archiver = BackgroundArchiver(archive, None, ahead=10)
    for i in range(3):
        archiver.put(block(i))
    assert archive.entered.wait(5)  # block 0 is being put
    closing = threading.Thread(target=archiver.close)
    closing.start()
    closing.join(0.2)
    archive.gate.set()
    closing.join(5)

    assert not closing.is_alive()
    assert archive.put == [0]  # blocks 1 and 2 were sealed after the last checkpoint: a restart re-derives them
    assert "t.p0/1 not archived: the operator closed" in capsys.readouterr().err
