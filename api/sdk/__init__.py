"""The auditlog Python SDK: record audit events directly to Kafka, through the gateway, or via an outbox.

    from api.sdk import AuditClient, SEED_LANES, record_in_transaction

See `api/sdk/client.py` for `AuditClient`, `api/sdk/outbox.py` for the transactional outbox,
`api/sdk/forwarder.py` for its forwarder, and `api/sdk/lanes.py` for routing by action.
"""

from api.sdk.client import AuditClient, DeliveryError, LaneUnavailable
from api.sdk.events import Receipt, new_event_id, wire_event
from api.sdk.forwarder import OutboxForwarder
from api.sdk.gateway_client import GatewayClient, GatewayError
from api.sdk.lanes import DIRECT, GATEWAY, OUTBOX, SEED_LANES, Lanes
from api.sdk.outbox import create_outbox_table, open_outbox, record_in_transaction

__all__ = [
    "DIRECT",
    "GATEWAY",
    "OUTBOX",
    "SEED_LANES",
    "AuditClient",
    "DeliveryError",
    "GatewayClient",
    "GatewayError",
    "LaneUnavailable",
    "Lanes",
    "OutboxForwarder",
    "Receipt",
    "create_outbox_table",
    "new_event_id",
    "open_outbox",
    "record_in_transaction",
    "wire_event",
]
