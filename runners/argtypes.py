"""Argument types shared by the subcommands: each refuses a bad value with what was wrong."""

from __future__ import annotations

import argparse


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
