"""Where verify, rebuild and export run their Beam pipelines: `--runner direct|prism`, then Beam's own flags.

    auditlog verify                       # DirectRunner, in this process (AUDITLOG_BEAM_RUNNER=direct)
    auditlog verify --runner prism        # Prism, SDK workers in processes of their own (infra/beam.py)
    auditlog verify -- --runner=...       # anything else: Beam's flags after --, passed as they are

The same for `auditlog rebuild` and `auditlog export`.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager

from infra.beam import RUNNERS, prism_pipeline_options
from schemas.settings import Settings


def add_runner_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--runner",
        choices=RUNNERS,
        help="run the Beam pipeline on the DirectRunner in this process, or on Beam's Prism runner with its "
        "SDK workers in processes of their own (default AUDITLOG_BEAM_RUNNER, direct); Beam flags after -- "
        "are passed on as they are",
    )
    parser.add_argument("beam_args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)


def beam_args(raw: list[str]) -> list[str]:
    """The Beam flags after `--`."""
    return raw[1:] if raw and raw[0] == "--" else raw


@contextmanager
def pipeline_options(args: argparse.Namespace, settings: Settings) -> Iterator[list[str]]:
    """The Beam options of the command's pipeline, for as long as the pipeline runs (a worker pool may be up)."""
    runner = args.runner or settings.beam_runner
    extra = beam_args(args.beam_args)
    if runner == "direct":
        yield extra
    elif runner == "prism":
        with prism_pipeline_options(settings) as options:
            yield options + extra
    else:
        raise SystemExit(f"AUDITLOG_BEAM_RUNNER={runner!r} is not a runner; choose one of {', '.join(RUNNERS)}")
