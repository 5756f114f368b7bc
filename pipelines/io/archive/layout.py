"""The archive's object keys: where each kind of object lives, and reading a key back.

Layout::

    logs/{log_id}/blocks/{block_index:012d}.block            encode_block_object(header, entries)
    logs/{log_id}/checkpoints/{tree_size:015d}.checkpoint    the signed note, UTF-8
    logs/{log_id}/expired/{block_index:012d}.leaves          encode_expired_block(header, leaf hashes, ...)
    logs/{log_id}/resume/{block_index:012d}.resume           where the job resumes after the block (JSON:
                                                             next Kafka offset, tree size, compact range)
    logs/{log_id}/cosigned/…, logs/{log_id}/witness-refusals/…  witnesses' answers (pipelines/witnessing/)
    logs/{log_id}/tile/<L>/<N>[.p/<W>]                      C2SP tlog-tiles hash tiles (pipelines/io/archive/tiles.py)
    logs/{log_id}/tile/entries/<N>[.p/<W>]                  entry bundles: the events' canonical bytes
    holds/{hold_id}.json, holds/{hold_id}.released.json       legal holds (pipelines/retention.py)

Block indexes and tree sizes are zero-padded, so keys sort in log order.
"""

from __future__ import annotations

import re

from transforms.tiles import Tile

__all__ = [
    "BLOCKS_DIR",
    "CHECKPOINTS_DIR",
    "COSIGNED_DIR",
    "EXPIRED_DIR",
    "HOLDS_PREFIX",
    "LOGS_PREFIX",
    "REFUSALS_DIR",
    "RESUME_DIR",
    "TILE_DIR",
    "block_key",
    "checkpoint_key",
    "expired_key",
    "log_prefix",
    "parse_key",
    "resume_key",
    "tile_key",
]

LOGS_PREFIX = "logs/"
BLOCKS_DIR = "blocks"
CHECKPOINTS_DIR = "checkpoints"
EXPIRED_DIR = "expired"
EXPIRED_SUFFIX = ".leaves"
RESUME_DIR = "resume"
RESUME_SUFFIX = ".resume"
COSIGNED_DIR = "cosigned"  # witnesses' cosigned checkpoints (pipelines/witnessing/)
REFUSALS_DIR = "witness-refusals"  # what witnesses refused to cosign, kept as evidence
TILE_DIR = "tile"  # tlog-tiles hash tiles and entry bundles: logs/{log_id}/tile/...
HOLDS_PREFIX = "holds/"
BLOCK_SUFFIX = ".block"
CHECKPOINT_SUFFIX = ".checkpoint"
BLOCK_INDEX_DIGITS = 12
TREE_SIZE_DIGITS = 15

_LOG_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._=-]{0,127}")
_BLOCK_NAME = re.compile(rf"(\d{{{BLOCK_INDEX_DIGITS}}}){re.escape(BLOCK_SUFFIX)}")
_RESUME_NAME = re.compile(rf"(\d{{{BLOCK_INDEX_DIGITS}}}){re.escape(RESUME_SUFFIX)}")
_EXPIRED_NAME = re.compile(rf"(\d{{{BLOCK_INDEX_DIGITS}}}){re.escape(EXPIRED_SUFFIX)}")
_CHECKPOINT_NAME = re.compile(rf"(\d{{{TREE_SIZE_DIGITS}}}){re.escape(CHECKPOINT_SUFFIX)}")


def _check_log_id(log_id: str) -> str:
    if not _LOG_ID.fullmatch(log_id) or ".." in log_id:
        raise ValueError(
            f"log id {log_id!r} cannot name an archive folder: use 1-128 characters from "
            "A-Z a-z 0-9 . _ = - (no '/', not starting with '.' or '-')"
        )
    return log_id


def log_prefix(log_id: str) -> str:
    """Returns `logs/{log_id}/`, the folder of one log."""
    return f"{LOGS_PREFIX}{_check_log_id(log_id)}/"


def block_key(log_id: str, block_index: int) -> str:
    """Returns the key of a block object; requires 0 <= block_index < 10**12."""
    if not 0 <= block_index < 10**BLOCK_INDEX_DIGITS:
        raise ValueError(f"block index {block_index} is outside 0 .. 10^{BLOCK_INDEX_DIGITS}-1")
    return f"{log_prefix(log_id)}{BLOCKS_DIR}/{block_index:0{BLOCK_INDEX_DIGITS}d}{BLOCK_SUFFIX}"


def checkpoint_key(log_id: str, tree_size: int) -> str:
    """Returns the key of a signed checkpoint; requires 0 <= tree_size < 10**15."""
    if not 0 <= tree_size < 10**TREE_SIZE_DIGITS:
        raise ValueError(f"tree size {tree_size} is outside 0 .. 10^{TREE_SIZE_DIGITS}-1")
    return f"{log_prefix(log_id)}{CHECKPOINTS_DIR}/{tree_size:0{TREE_SIZE_DIGITS}d}{CHECKPOINT_SUFFIX}"


def expired_key(log_id: str, block_index: int) -> str:
    """Returns the key of an expired block's header and leaf hashes; requires 0 <= block_index < 10**12."""
    block_key(log_id, block_index)  # checks the log id and the index
    return f"{log_prefix(log_id)}{EXPIRED_DIR}/{block_index:0{BLOCK_INDEX_DIGITS}d}{EXPIRED_SUFFIX}"


def resume_key(log_id: str, block_index: int) -> str:
    """Returns the key of the job's resume point after block `block_index`; requires 0 <= block_index < 10**12."""
    block_key(log_id, block_index)  # checks the log id and the index
    return f"{log_prefix(log_id)}{RESUME_DIR}/{block_index:0{BLOCK_INDEX_DIGITS}d}{RESUME_SUFFIX}"


def tile_key(log_id: str, tile: Tile) -> str:
    """Returns the key of a hash tile or entry bundle: `logs/{log_id}/` and the tile's tlog-tiles path."""
    return f"{log_prefix(log_id)}{tile.path}"


def parse_key(key: str) -> tuple[str, str, int] | None:
    """Returns (log id, kind, block index or tree size) of an auditlog key, else None.

    The kind is "block", "checkpoint", "expired" or "resume".
    """
    if not key.startswith(LOGS_PREFIX):
        return None
    parts = key[len(LOGS_PREFIX) :].split("/")
    if len(parts) != 3:
        return None
    log_id, folder, name = parts
    pattern = {
        BLOCKS_DIR: _BLOCK_NAME,
        CHECKPOINTS_DIR: _CHECKPOINT_NAME,
        EXPIRED_DIR: _EXPIRED_NAME,
        RESUME_DIR: _RESUME_NAME,
    }.get(folder)
    match = pattern.fullmatch(name) if pattern else None
    if match is None:
        return None
    kind = {BLOCKS_DIR: "block", CHECKPOINTS_DIR: "checkpoint", EXPIRED_DIR: "expired", RESUME_DIR: "resume"}[folder]
    return log_id, kind, int(match.group(1))
