"""The gRPC gateway (`auditlog gateway`): AuditLogService.RecordEvent and RecordEvents.

`schemas/audit.proto` defines the service; the stubs beside this file are generated from it
(`python -m api.gateway.codegen`). `intake` is the core (validate, hash, send, answer after the
ack), `server` the grpc.aio and thread-pool servers, `convert` the message <-> event mapping.
"""
