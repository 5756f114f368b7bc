"""The retention policy file: schemas/retention.toml by default, or AUDITLOG_RETENTION_POLICY_FILE.

policy = load_policy(settings.retention_policy_path)
policy.stamp("admin.view", "2026-05-01T09:00:00.000Z")   # {"class": "admin-view", "until": ...}
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from transforms.retention import RetentionPolicy, RetentionPolicyError

DEFAULT_POLICY_FILE = Path(__file__).with_name("retention.toml")


def load_policy(path: Path | str | None = None) -> RetentionPolicy:
    """Reads and checks a retention policy TOML file (the shipped default when `path` is empty)."""
    source = Path(path) if path else DEFAULT_POLICY_FILE
    try:
        spec = tomllib.loads(source.read_text())
    except FileNotFoundError:
        raise RetentionPolicyError(
            f"retention policy file {source} does not exist; set AUDITLOG_RETENTION_POLICY_FILE to a TOML "
            f"file like {DEFAULT_POLICY_FILE}"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise RetentionPolicyError(f"retention policy file {source} is not valid TOML: {exc}") from None
    return RetentionPolicy.parse(spec, source=str(source))
