"""How a Beam pipeline's results reach the command that launched it: files the pipeline writes.

A step runs wherever the runner puts it: in the launching process (DirectRunner), in an SDK worker
process beside it (Prism, Flink with an EXTERNAL or PROCESS environment) or on another machine
(Dataflow). So results never travel through the launching process's memory; the last step writes
each result as one JSON file into a results directory of the run, and the launcher reads the
directory once the run has finished:

    results = new_results_dir(base)                       # base: a folder or a URL Beam can write
    pcoll | "(name, dict)" >> ... | beam.ParDo(WriteResults(results))
    ... run the pipeline ...
    for data in read_results(results): ...
    remove_results(results)

Files go through Beam's FileSystems: a local folder serves the local runners and workers on the
same host; a bucket (gs://, s3://) serves workers elsewhere. A retried bundle writes the same
file again with the same bytes, so a result is never counted twice.
"""

from __future__ import annotations

import json
import tempfile
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

SUFFIX = ".result.json"


def new_results_dir(base: str | None = None) -> str:
    """A fresh, empty results directory under `base` (default: a temporary local folder)."""
    if not base:
        return tempfile.mkdtemp(prefix="auditlog-beam-results-")
    path = FileSystems.join(base, f"run-{uuid.uuid4().hex}")
    FileSystems.mkdirs(path)
    return path


def result_path(results_dir: str, name: str) -> str:
    return FileSystems.join(results_dir, quote(name, safe="") + SUFFIX)


class WriteResults(beam.DoFn):
    """(name, JSON-able dict) → the file `name`.result.json in the results directory; yields its path."""

    def __init__(self, results_dir: str):
        self.results_dir = results_dir

    def process(self, element: tuple[str, dict[str, Any]]) -> Iterator[str]:
        name, data = element
        path = result_path(self.results_dir, name)
        with FileSystems.create(path, mime_type="application/json") as out:
            out.write(json.dumps(data, sort_keys=True).encode())
        yield path


def read_results(results_dir: str) -> list[dict[str, Any]]:
    """Every result the run wrote, in the order of their names."""
    (matched,) = FileSystems.match([FileSystems.join(results_dir, "*" + SUFFIX)])
    out = []
    for path in sorted(m.path for m in matched.metadata_list):
        with FileSystems.open(path) as f:
            out.append(json.loads(f.read()))
    return out


def remove_results(results_dir: str) -> None:
    """Deletes a results directory once read (nothing if it is gone)."""
    if FileSystems.exists(results_dir):
        FileSystems.delete([results_dir])


__all__ = ["WriteResults", "new_results_dir", "read_results", "remove_results", "result_path"]
