"""Argument types shared by the subcommands: each refuses a bad value with what was wrong.

A rule argparse cannot check alone (two flags together, a file the value names) is refused by the
command with a `UsageError`, which `runners/cli.py` prints to stderr with exit status 2.
"""

from __future__ import annotations

import argparse

from schemas.events import EventValidationError, normalize_time
from transforms.errors import AuditlogError


class UsageError(AuditlogError):
    """The command line asks for something that cannot be done: a flag's value, a missing file (exit 2)."""


class IncompleteError(AuditlogError):
    """The command ran, but part of what it was asked is not done (exit 1).

    A service that did not start or stop, records Kafka did not acknowledge or delete, a key that
    is not there: the status these commands exited with before errors had one base.
    """

    exit_code = 1


def positive_int(text: str) -> int:
    """A whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} must be at least 1")
    return value


def records_per_second(text: str) -> float:
    """A rate limit: 0 means unlimited."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of records per second") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} must be 0 (unlimited) or more")
    return value


def utc_time(text: str) -> str:
    """An ISO-8601 time with a zone (or a bare date, read as UTC midnight), as canonical UTC `...mmmZ`."""
    candidate = f"{text}T00:00:00Z" if len(text) == 10 else text
    try:
        return normalize_time(candidate)
    except (EventValidationError, ValueError, IndexError):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO-8601 time with a zone; use e.g. 2026-11-01 or 2026-11-01T08:00:00Z"
        ) from None
