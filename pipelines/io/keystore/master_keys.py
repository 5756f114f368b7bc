"""Master-key files and variables: reading the keys the settings name, parsing them, writing a new one."""

from __future__ import annotations

import base64
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from pipelines.io.keystore.errors import MasterKeyError
from pipelines.io.keystore.wrapping import MASTER_KEY_SIZE, master_key_id

if TYPE_CHECKING:
    from schemas.settings import Settings

__all__ = ["load_master_keys", "parse_master_keys", "write_master_key_file"]

log = logging.getLogger("pipelines.io.keystore")  # the package's logger: log lines keep their name


def parse_master_keys(text: str, source: str) -> list[bytes]:
    """Reads base64 master keys, one per line (or comma-separated); `#` lines are comments.

    The first key wraps new subject keys; the others are accepted for unwrapping during a
    rotation. `source` names where the text came from, for error messages.
    """
    keys: list[bytes] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        for token in line.replace(",", " ").split():
            try:
                key = base64.b64decode(token, validate=True)
            except ValueError:
                raise MasterKeyError(
                    f"{source}: entry {len(keys) + 1} is not base64; a master key is 32 random bytes "
                    "in base64 (make one with `auditlog keys master generate --out FILE`)"
                ) from None
            if len(key) != MASTER_KEY_SIZE:
                raise MasterKeyError(
                    f"{source}: entry {len(keys) + 1} decodes to {len(key)} bytes, not {MASTER_KEY_SIZE}; "
                    "make a master key with `auditlog keys master generate --out FILE`"
                )
            keys.append(key)
    if not keys:
        raise MasterKeyError(f"{source} holds no master key")
    return keys


def load_master_keys(settings: Settings) -> list[bytes]:
    """The master keys named by settings: AUDITLOG_MASTER_KEY_FILE, or AUDITLOG_MASTER_KEY."""
    if settings.master_key_file and settings.master_key:
        raise MasterKeyError("both AUDITLOG_MASTER_KEY_FILE and AUDITLOG_MASTER_KEY are set; set only one of them")
    if settings.master_key_file:
        path = Path(settings.master_key_file).expanduser()
        source = f"master key file {path} (AUDITLOG_MASTER_KEY_FILE)"
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise MasterKeyError(
                f"{source} does not exist; create it with `auditlog keys master generate --out {path}`"
            ) from None
        except OSError as exc:
            raise MasterKeyError(f"{source} cannot be read: {exc.strerror}") from None
        if path.stat().st_mode & 0o077:
            log.warning("%s is readable by other users; chmod 600 it", source)
        return parse_master_keys(text, source)
    if settings.master_key:
        return parse_master_keys(settings.master_key, "AUDITLOG_MASTER_KEY")
    raise MasterKeyError(
        "the key store needs a master key and none is set: run `auditlog keys master generate --out FILE` "
        "once, then set AUDITLOG_MASTER_KEY_FILE=FILE (or AUDITLOG_MASTER_KEY to its base64)"
    )


def write_master_key_file(path: Path, force: bool = False) -> tuple[Path, str]:
    """Writes a new random master key (base64, mode 0600); returns (path, master key id).

    Refuses to overwrite an existing file unless `force`: losing a master key loses every PII key.
    """
    key = os.urandom(MASTER_KEY_SIZE)
    kid = master_key_id(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise FileExistsError(
            f"{path} already exists; it may be the only copy of a master key. Pass --force to replace it"
        ) from None
    with os.fdopen(fd, "w") as f:
        f.write(f"# auditlog key-store master key, id {kid}. Keep it secret; back it up.\n")
        f.write(base64.b64encode(key).decode() + "\n")
    os.chmod(path, 0o600)
    return path, kid
