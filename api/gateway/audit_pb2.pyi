# ruff: noqa
# Generated from schemas/audit.proto by `python -m api.gateway.codegen`; do not edit.
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Actor(_message.Message):
    __slots__ = ("id", "type", "email", "name")
    ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    EMAIL_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    id: str
    type: str
    email: str
    name: str
    def __init__(self, id: _Optional[str] = ..., type: _Optional[str] = ..., email: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class Resource(_message.Message):
    __slots__ = ("id", "type")
    ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    id: str
    type: str
    def __init__(self, id: _Optional[str] = ..., type: _Optional[str] = ...) -> None: ...

class RecordEventRequest(_message.Message):
    __slots__ = ("tenant_id", "event_id", "action", "client_ip", "user_agent", "metadata_json", "occurred_at_timestamp", "occurred_at", "actor", "resource", "result", "request_id")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    CLIENT_IP_FIELD_NUMBER: _ClassVar[int]
    USER_AGENT_FIELD_NUMBER: _ClassVar[int]
    METADATA_JSON_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    event_id: str
    action: str
    client_ip: str
    user_agent: str
    metadata_json: str
    occurred_at_timestamp: int
    occurred_at: str
    actor: Actor
    resource: Resource
    result: str
    request_id: str
    def __init__(self, tenant_id: _Optional[str] = ..., event_id: _Optional[str] = ..., action: _Optional[str] = ..., client_ip: _Optional[str] = ..., user_agent: _Optional[str] = ..., metadata_json: _Optional[str] = ..., occurred_at_timestamp: _Optional[int] = ..., occurred_at: _Optional[str] = ..., actor: _Optional[_Union[Actor, _Mapping]] = ..., resource: _Optional[_Union[Resource, _Mapping]] = ..., result: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class RecordEventResponse(_message.Message):
    __slots__ = ("event_id", "verification_hash", "status", "duplicate", "partition", "offset")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    VERIFICATION_HASH_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    verification_hash: str
    status: bool
    duplicate: bool
    partition: int
    offset: int
    def __init__(self, event_id: _Optional[str] = ..., verification_hash: _Optional[str] = ..., status: bool = ..., duplicate: bool = ..., partition: _Optional[int] = ..., offset: _Optional[int] = ...) -> None: ...

class RecordEventsRequest(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[RecordEventRequest]
    def __init__(self, events: _Optional[_Iterable[_Union[RecordEventRequest, _Mapping]]] = ...) -> None: ...

class RecordEventsResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[RecordEventResponse]
    def __init__(self, results: _Optional[_Iterable[_Union[RecordEventResponse, _Mapping]]] = ...) -> None: ...
