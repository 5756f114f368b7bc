"""A tiny PyFlink job for the integration tests: squares 1..N in Python and writes `n:n*n` lines.

It exercises what every real job needs from the standalone cluster: a Python worker in the
TaskManagers (in the mode the job picks), parallelism over both one-slot TaskManagers, and a
finished batch job whose files are committed::

    FLINK_CONF_DIR=... flink run -py tests/integration/square_job.py --output /abs/dir --mode thread
"""

from __future__ import annotations

import argparse

from pyflink.common import Configuration, Encoder, Types
from pyflink.datastream import RuntimeExecutionMode, StreamExecutionEnvironment
from pyflink.datastream.connectors.file_system import BucketAssigner, FileSink

JOB_NAME = "auditlog-it-square"


def square(n: int) -> str:
    return f"{n}:{n * n}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output", required=True, help="absolute folder for the result files")
    parser.add_argument(
        "--mode",
        choices=["thread", "process"],
        default="thread",
        help="python.execution-mode for the job's Python functions",
    )
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--parallelism", type=int, default=2)
    args = parser.parse_args()

    config = Configuration()
    config.set_string("python.execution-mode", args.mode)
    env = StreamExecutionEnvironment.get_execution_environment(config)
    env.set_runtime_mode(RuntimeExecutionMode.BATCH)
    env.set_parallelism(args.parallelism)

    sink = (
        FileSink.for_row_format(args.output, Encoder.simple_string_encoder())
        .with_bucket_assigner(BucketAssigner.base_path_bucket_assigner())
        .build()
    )
    (
        env.from_collection(list(range(1, args.count + 1)), type_info=Types.INT())
        .name("numbers")
        .map(square, output_type=Types.STRING())
        .name("square in python")
        .sink_to(sink)
        .name("files")
    )
    env.execute(f"{JOB_NAME}-{args.mode}")


if __name__ == "__main__":
    main()
