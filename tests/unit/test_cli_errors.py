"""The command line reports every error once, in runners.cli.main: `error: …` on stderr, nothing on stdout.

Exit 2 when the command cannot do what was asked (bad usage), 1 when a check fails. Every case here
stops before any service is asked, so it needs no Kafka, S3 or ClickHouse.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from runners.cli import main
from transforms.checkpoint import Checkpoint, sign_checkpoint
from transforms.merkle import inclusion_proof, leaf_hash, root
from transforms.note import Signer
from transforms.tlogproof import format_proof

ORIGIN = "auditlog.test/cli"


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A deployment of its own: an empty AUDITLOG_HOME (no keys), none of the caller's AUDITLOG_* settings."""
    for name in [n for n in os.environ if n.startswith("AUDITLOG_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("AUDITLOG_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("AUDITLOG_APIKEYS_FILE", str(tmp_path / "apikeys.sqlite"))
    return tmp_path / "home"


@pytest.fixture
def memory_archive(monkeypatch: pytest.MonkeyPatch) -> None:
    """`hold` reads the archive's holds first: an empty in-memory archive stands in for S3."""
    from pipelines.io.archive.testing import InMemoryArchive

    archive = InMemoryArchive()
    monkeypatch.setattr("pipelines.archive_history.archive_from_spec", lambda spec: archive)


def refused(argv: list[str], capsys: pytest.CaptureFixture[str], code: int = 2) -> str:
    """Runs `auditlog ARGV`, checks the exit status and that stdout is empty; returns the one error line."""
    assert main(argv) == code
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("error: ") and err.count("error: ") == 1, err
    return err


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["search", "--tenant", "t_1", "--limit", "0"], "error: --limit 0 must be between 1 and 1000"),
        (["search", "--tenant", "t_1", "--since", "yesterday"], "--since 'yesterday' is not an ISO-8601 time"),
        (["rebuild"], "error: no verifier key at "),
        (["verify"], "error: no verifier key at "),
        (["produce", "--duplicates", "0.6", "--malformed", "0.5"], "must be less than 1"),
        (["erase", "--tenant", "t_1", "--subject", "u_1", "--reason", " "], "--reason is empty"),
        (["export", "--tenant", "t_1", "--from", "2026-02-01", "--to", "2026-01-01", "--out", "x"], "is not before"),
        (["export", "--tenant", "t_1", "--out", "x"], "error: no signing key at "),
        (["verify-export", ".", "--key", "not-a-key"], "error: --key is not a verifier key"),
        (["verify-proof", "no-such-bundle", "--key", "k"], "error: no proof at no-such-bundle"),
        (["apikeys", "create"], "say whose key it is"),
    ],
)
def test_bad_usage_is_one_error_line_on_stderr_and_exit_2(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert says in refused(argv, capsys)


@pytest.mark.usefixtures("memory_archive")
def test_hold_names_what_is_missing(capsys: pytest.CaptureFixture[str]) -> None:
    assert "--tenant is required" in refused(["hold", "--until", "2099-01-01", "--reason", "case 1"], capsys)
    assert "--reason is missing" in refused(["hold", "--tenant", "t_1", "--until", "2099-01-01"], capsys)
    assert "--until is required" in refused(["hold", "--tenant", "t_1", "--reason", "case 1"], capsys)
    past = ["hold", "--tenant", "t_1", "--until", "2001-01-01", "--reason", "case 1"]
    assert "--until 2001-01-01T00:00:00.000Z is not in the future" in refused(past, capsys)


def test_keys_errors_go_to_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["keys", "generate", "--name", ORIGIN, "--out", str(tmp_path / "keys")]
    assert main(argv) == 0
    capsys.readouterr()
    assert "already exists; pass --force" in refused(argv, capsys)
    rotate = ["keys", "master", "rotate", "--new", str(tmp_path / "no")]
    assert "does not exist; make it with" in refused(rotate, capsys)


def test_revoking_a_key_that_is_not_there_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert "no active key '0123456789ab'" in refused(["apikeys", "revoke", "0123456789ab"], capsys, code=1)


def test_a_tampered_entry_fails_its_check_with_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    signer = Signer.generate(ORIGIN)
    entries = [f'{{"n":{i}}}'.encode() for i in range(5)]
    hashes = [leaf_hash(e) for e in entries]
    signed = sign_checkpoint(Checkpoint(ORIGIN, len(hashes), root(hashes)), signer)
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "proof.tlog-proof").write_text(format_proof(3, inclusion_proof(hashes, 3), signed))
    (bundle / "entry.json").write_bytes(entries[3])
    key = signer.verifier().encode()
    assert main(["verify-proof", str(bundle), "--key", key]) == 0
    assert capsys.readouterr().out.startswith("verified: entry entry.json is leaf 3")

    (bundle / "entry.json").write_bytes(entries[3].replace(b"3", b"4"))
    assert main(["verify-proof", str(bundle), "--key", key]) == 1
    out, err = capsys.readouterr()
    assert out.startswith("NOT VERIFIED: RootMismatchError") and err == ""


def test_the_job_parallelism_is_one_locally_and_two_on_a_cluster_unless_set() -> None:
    """0 (the default) picks per place: the local mini-cluster's subtasks would share one interpreter's GIL."""
    from schemas.settings import Settings

    auto = Settings.from_env({})
    assert (auto.job_parallelism(local=True), auto.job_parallelism(local=False)) == (1, 2)
    set_to_4 = Settings.from_env({"AUDITLOG_PARALLELISM": "4"})
    assert (set_to_4.job_parallelism(local=True), set_to_4.job_parallelism(local=False)) == (4, 4)
    assert Settings.from_env(auto.to_env()).job_parallelism(local=True) == 1
    with pytest.raises(SystemExit, match="AUDITLOG_PARALLELISM=-1 is negative"):
        Settings.from_env({"AUDITLOG_PARALLELISM": "-1"}).job_parallelism(local=True)
