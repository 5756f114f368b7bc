"""`auditlog cut-ticker`: write a cut marker into every partition at the block latency.

The ingest job closes a partition's open block when it reads a cut marker, so blocks close at
most `AUDITLOG_BLOCK_LATENCY_MS` after an event arrives while the block boundaries stay part of
the input (replays cut the same blocks). `auditlog ingest` runs a ticker itself in streaming mode;
run this beside a job submitted to a cluster (`auditlog ingest --cluster`) or deployed on
Kubernetes.
"""

from __future__ import annotations

import argparse
import sys
import time

from schemas.settings import Settings


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "cut-ticker",
        help="write cut markers into every partition so open blocks close within the block latency",
        description="Runs until Ctrl-C, writing a cut marker into each partition of the topic every "
        "AUDITLOG_BLOCK_LATENCY_MS milliseconds.",
    )
    p.add_argument("--topic", help="topic to mark (default: settings.topic)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from runners.commands.ingest import CutTicker

    topic = args.topic or settings.topic
    ticker = CutTicker(settings, topic)
    ticker.start()
    print(f"cut-ticker: marking {topic} every {settings.block_latency_ms} ms (Ctrl-C to stop)", file=sys.stderr)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        ticker.stop()
    return 0
