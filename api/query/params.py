"""The rules of the query API's path parameters, and the words a 400 uses to state them.

The patterns are the event schema's (schemas/audit_event.schema.json) and the archive's.
"""

from typing import Annotated

from fastapi import Path as PathParam

from api.query.store import QueryError

TENANT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
EVENT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
RESOURCE_TYPE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
LOG_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._=-]{0,127}$"  # and no '..' (check_log_id)
MAX_TREE_SIZE = 2**53 - 1  # exact in JSON; far beyond any log
RULES = {
    "tenant_id": "1-64 of A-Z a-z 0-9 . _ -, starting with a letter or digit",
    "event_id": "1-128 of A-Z a-z 0-9 . _ : -, starting with a letter or digit",
    "resource_type": "1-64 of A-Z a-z 0-9 _ . : -, starting with a letter or digit",
    "resource_id": "1-256 characters",
    "log_id": "1-128 of A-Z a-z 0-9 . _ = -, starting with a letter or digit, no '..'",
    "from": f"a whole number 0..{MAX_TREE_SIZE}",
    "to": f"a whole number 1..{MAX_TREE_SIZE}",
}

Tenant = Annotated[str, PathParam(pattern=TENANT_PATTERN, description=RULES["tenant_id"])]
EventId = Annotated[str, PathParam(pattern=EVENT_ID_PATTERN, description=RULES["event_id"])]
LogId = Annotated[str, PathParam(pattern=LOG_ID_PATTERN, description=RULES["log_id"])]


def check_log_id(log_id: str) -> None:
    if ".." in log_id:
        raise QueryError("log_id", f"log_id {log_id[:64]!r} is not valid: {RULES['log_id']}")
