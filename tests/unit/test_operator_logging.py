"""quiet_library_debug: inside a TaskManager the HTTP libraries' DEBUG records stop at their loggers.

PEMJA (thread mode's embedded interpreter) sets the root logger to DEBUG and forwards each
record to Java; botocore writes dozens per S3 call. Here the root logger is set the same way.
"""

from __future__ import annotations

import logging

import pytest

from pipelines.ingest_operators import CHATTY_LOGGERS, quiet_library_debug


@pytest.fixture
def debug_root():
    root = logging.getLogger()
    saved = root.level, {name: logging.getLogger(name).level for name in CHATTY_LOGGERS}
    root.setLevel(logging.DEBUG)
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET)
    yield root
    root.setLevel(saved[0])
    for name, level in saved[1].items():
        logging.getLogger(name).setLevel(level)


def test_library_debug_is_dropped_and_info_kept(debug_root, caplog):
    quiet_library_debug()
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("botocore.endpoint").debug("Sending http request")
        logging.getLogger("urllib3.connectionpool").debug("Starting new HTTP connection")
        logging.getLogger("botocore.credentials").info("Found credentials")
        logging.getLogger("pipelines.ingest").debug("ours stays at the root's level")
    said = [record.getMessage() for record in caplog.records]
    assert said == ["Found credentials", "ours stays at the root's level"]


def test_a_level_set_by_the_operator_of_the_cluster_is_kept(debug_root):
    logging.getLogger("botocore").setLevel(logging.DEBUG)
    quiet_library_debug()
    assert logging.getLogger("botocore").level == logging.DEBUG
