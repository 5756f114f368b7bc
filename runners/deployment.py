"""What the commands share about this deployment: its keys, and its archive → ClickHouse indexer.

A layer under runners/commands: a command imports these, never another command's helpers.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from schemas.settings import Settings
from transforms.note import Signer, Verifier

if TYPE_CHECKING:
    from pipelines.indexer import ArchiveIndexer, IndexingHalted


def with_master_key(settings: Settings) -> Settings:
    """Settings naming a master key; on the very first local run, makes one under `home`.

    A key store that already exists is never given a new master key: then a missing key is the
    key store's clear error at start, never silent plaintext.
    """
    if settings.master_key_file or settings.master_key:
        return settings
    default = settings.keys_dir / "master.key"
    if not default.exists() and not settings.keystore_path.exists():
        from pipelines.io.keystore import write_master_key_file

        write_master_key_file(default)
        print(f"created the key store's master key {default} (back it up; AUDITLOG_MASTER_KEY_FILE)", file=sys.stderr)
    return settings.replace(master_key_file=str(default))


def key_paths(directory: Path, name: str) -> tuple[Path, Path]:
    stem = name.replace("/", "_")
    return directory / f"{stem}.key", directory / f"{stem}.vkey"


def write_key_pair(directory: Path, name: str, force: bool = False) -> tuple[Path, Path]:
    """Generates a key pair and writes it; returns (private path, public path)."""
    signer = Signer.generate(name)
    directory.mkdir(parents=True, exist_ok=True)
    private, public = key_paths(directory, name)
    if not force and (private.exists() or public.exists()):
        raise FileExistsError(f"{private} or {public} already exists; pass --force to replace the key")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    fd = os.open(private, flags, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(signer.encode() + "\n")
    os.chmod(private, 0o600)
    public.write_text(signer.verifier().encode() + "\n")
    return private, public


def load_or_create_signer(directory: Path, name: str) -> Signer:
    """Loads NAME.key from `directory`, generating the pair on first use."""
    private, _ = key_paths(directory, name)
    if not private.exists():
        write_key_pair(directory, name)
    return Signer.from_key(private.read_text())


def indexer_unless_served(settings: Settings) -> ArchiveIndexer | None:
    """The indexer for this run, or None when another process (`auditlog serve`) holds embedded chDB.

    That process follows the archive itself, so the events still reach ClickHouse (and the UI).
    """
    from pipelines.io.clickhouse import open_clickhouse_unless_held

    clickhouse = open_clickhouse_unless_held(settings.effective_clickhouse_url)
    if clickhouse is None:
        print(
            f"note: {settings.effective_clickhouse_url} is held by another process (normally `auditlog serve`, "
            "which indexes the archive itself); this run writes the archive and leaves ClickHouse to it",
            file=sys.stderr,
        )
        return None
    return open_indexer(settings, clickhouse)


def open_indexer(settings: Settings, clickhouse: Any = None) -> ArchiveIndexer:
    """The archive → ClickHouse indexer of this deployment; it owns `clickhouse` (opened here if not given)."""
    from pipelines.indexer import ArchiveIndexer
    from pipelines.ingest_config import archive_spec
    from pipelines.io.archive import open_archive
    from pipelines.io.clickhouse import open_clickhouse

    clickhouse = clickhouse or open_clickhouse(settings.effective_clickhouse_url)
    clickhouse.ensure_schema()
    verifier = Verifier.from_key(settings.verifier_key_file.read_text())
    return ArchiveIndexer(open_archive(**archive_spec(settings)), clickhouse, verifier, settings.origin, settings.core)


def halted_error(halted: dict[str, str]) -> IndexingHalted | None:
    """The error (exit 1) naming each log the indexer stopped at a block that does not verify; None if none."""
    from pipelines.indexer import IndexingHalted

    if not halted:
        return None
    lines = "".join(f"\n  log {log_id} was not indexed: {why}" for log_id, why in halted.items())
    return IndexingHalted(f"{len(halted)} log(s) stopped at a block that does not verify; run `auditlog verify`{lines}")
