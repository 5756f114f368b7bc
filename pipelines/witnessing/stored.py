"""Where cosigned checkpoints and refusals live in the archive, and how to list them."""

from __future__ import annotations

import re
from hashlib import sha256
from typing import Any

from pipelines.io.archive import COSIGNED_DIR, REFUSALS_DIR, log_prefix
from transforms.cosignature import CosignatureVerifier

COSIG_SUFFIX = ".cosig"
REFUSAL_SUFFIX = ".refused"
_COSIG_NAME = re.compile(r"(\d{15})\.(.+)\.([0-9a-f]{8})\.cosig")
_UNSAFE = re.compile(r"[^A-Za-z0-9._=-]")


def safe_name(name: str) -> str:
    return _UNSAFE.sub("_", name)


def cosigned_key(log_id: str, tree_size: int, witness: CosignatureVerifier) -> str:
    name = f"{tree_size:015d}.{safe_name(witness.name)}.{witness.key_id:08x}{COSIG_SUFFIX}"
    return f"{log_prefix(log_id)}{COSIGNED_DIR}/{name}"


def refusal_key(log_id: str, tree_size: int, witness: CosignatureVerifier, note: str) -> str:
    digest = sha256(note.encode()).hexdigest()[:16]
    return (
        f"{log_prefix(log_id)}{REFUSALS_DIR}/{tree_size:015d}.{safe_name(witness.name)}."
        f"{witness.key_id:08x}.{digest}{REFUSAL_SUFFIX}"
    )


def list_cosigned(archive: Any, log_id: str) -> dict[tuple[str, str], list[int]]:
    """{(witness name as stored, key id hex): [tree sizes cosigned, ascending]} of one log."""
    prefix = f"{log_prefix(log_id)}{COSIGNED_DIR}/"
    out: dict[tuple[str, str], list[int]] = {}
    for key in archive.keys(prefix):
        match = _COSIG_NAME.fullmatch(key[len(prefix) :])
        if match:
            out.setdefault((match.group(2), match.group(3)), []).append(int(match.group(1)))
    for sizes in out.values():
        sizes.sort()
    return out


def list_refusals(archive: Any, log_id: str) -> list[str]:
    return list(archive.keys(f"{log_prefix(log_id)}{REFUSALS_DIR}/"))
