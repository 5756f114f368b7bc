"""`RecordEventRequest` <-> the JSON event of `schemas/audit_event.schema.json`.

proto3 strings cannot be absent, so an empty optional string (email, name, client_ip,
user_agent, request_id, metadata_json) means "not given"; empty required strings are kept and
rejected by the schema, which names the field. `occurred_at_timestamp` is Unix milliseconds.
"""

from __future__ import annotations

import json
from typing import Any

from api.gateway import audit_pb2
from api.sdk.events import Receipt, time_from_millis
from schemas.events import MISSING, EventValidationError, loads_json

PROTO_FIELD = {"metadata": "metadata_json"}
"""Schema paths whose name differs in the request message."""


def proto_field(schema_path: str) -> str:
    """The request message's name for a schema path (`metadata` travels as `metadata_json`)."""
    return PROTO_FIELD.get(schema_path, schema_path)


def event_from_request(request: audit_pb2.RecordEventRequest) -> dict[str, Any]:
    """The event dict of a request, not yet validated.

    Raises:
        EventValidationError: metadata_json is not a JSON object, or occurred_at_timestamp is out of range.
    """
    actor = request.actor
    actor_obj: dict[str, Any] = {"id": actor.id, "type": actor.type}
    if actor.email:
        actor_obj["email"] = actor.email
    if actor.name:
        actor_obj["name"] = actor.name
    event: dict[str, Any] = {
        "event_id": request.event_id,
        "tenant_id": request.tenant_id,
        "actor": actor_obj,
        "action": request.action,
        "resource": {"id": request.resource.id, "type": request.resource.type},
        "result": request.result,
    }
    which = request.WhichOneof("occurred")
    if which == "occurred_at":
        event["occurred_at"] = request.occurred_at
    elif which == "occurred_at_timestamp":
        event["occurred_at"] = time_from_millis(request.occurred_at_timestamp, "occurred_at_timestamp")
    if request.client_ip:
        event["client_ip"] = request.client_ip
    if request.user_agent:
        event["user_agent"] = request.user_agent
    if request.request_id:
        event["request_id"] = request.request_id
    if request.metadata_json:
        try:
            metadata = loads_json(request.metadata_json)
        except json.JSONDecodeError as exc:
            raise EventValidationError(
                "metadata_json",
                request.metadata_json[:40],
                f"is not JSON ({exc.msg} at {exc.pos})",
                request.event_id or None,
            ) from None
        if not isinstance(metadata, dict):
            raise EventValidationError(
                "metadata_json", request.metadata_json[:40], "is not a JSON object", request.event_id or None
            )
        event["metadata"] = metadata
    if "occurred_at" not in event:
        raise EventValidationError(
            "occurred_at",
            MISSING,
            "is required but missing (set occurred_at or occurred_at_timestamp)",
            request.event_id or None,
        )
    return event


def request_from_event(event: dict[str, Any]) -> audit_pb2.RecordEventRequest:
    """A request carrying a wire event (the SDK's gateway lane); occurred_at goes as a string."""
    actor = event["actor"]
    request = audit_pb2.RecordEventRequest(
        event_id=event["event_id"],
        tenant_id=event["tenant_id"],
        actor=audit_pb2.Actor(
            id=actor["id"], type=actor["type"], email=actor.get("email", ""), name=actor.get("name", "")
        ),
        action=event["action"],
        resource=audit_pb2.Resource(id=event["resource"]["id"], type=event["resource"]["type"]),
        result=event["result"],
        client_ip=event.get("client_ip", ""),
        user_agent=event.get("user_agent", ""),
        request_id=event.get("request_id", ""),
        occurred_at=event["occurred_at"],
    )
    if "metadata" in event:
        request.metadata_json = json.dumps(event["metadata"], ensure_ascii=False, separators=(",", ":"))
    return request


def response_from_receipt(receipt: Receipt) -> audit_pb2.RecordEventResponse:
    return audit_pb2.RecordEventResponse(
        event_id=receipt.event_id,
        verification_hash=receipt.verification_hash,
        status=True,
        duplicate=receipt.duplicate,
        partition=receipt.partition,
        offset=receipt.offset,
    )


def receipt_from_response(response: audit_pb2.RecordEventResponse) -> Receipt:
    return Receipt(
        response.event_id,
        "gateway",
        response.verification_hash,
        response.partition,
        response.offset,
        response.duplicate,
    )
