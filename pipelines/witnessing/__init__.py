"""The witness publisher: asks witnesses to cosign every archived checkpoint (C2SP tlog-witness).

For each log in the WORM archive, each configured witness and each checkpoint it has not cosigned
yet, in tree-size order, the publisher sends::

    POST <witness URL>/add-checkpoint

    old <the witness's last size of this log>
    <consistency proof from that size, one base64 hash a line>
    <blank line>
    <the operator's signed checkpoint note>

The witness answers 200 with its cosignature line(s) (cosignature/v1), which are checked and
stored beside the operator's checkpoint as the cosigned note (the operator's note with the
witness's lines added), with the archive's WORM put rules::

    logs/{log_id}/cosigned/{tree_size:015d}.{witness name}.{key id}.cosig

409 gives the witness's current size (the proof is rebuilt from there and sent again). 422 (the
proof does not connect the witness's last checkpoint to this one) means the archive's log is not
the history the witness cosigned — a split view or a rollback — and is stored as evidence::

    logs/{log_id}/witness-refusals/{tree_size:015d}.{witness name}.{key id}.{note sha256[:16]}.refused

and the publisher stops asking that witness about that log. So does a witness that already holds
a larger size than the archive's newest checkpoint (a rolled-back log). A witness that does not
answer is retried with backoff; it never holds up ingest (the publisher runs in a thread of
`auditlog ingest`, or as `auditlog witness --follow`), and when it returns every checkpoint it
missed is cosigned in order. The consistency proofs are read from the log's tiles in the archive
(a few tiles a level), checked against each signed root.

The package, one module a part (each re-exported here):

    stored      the archive keys of cosigned notes and refusals, and their listing
    witness     Witness: a configured witness (name, URL, cosignature verifier)
    publisher   Publisher, PublisherThread, open_publisher: asking the witnesses
    lag         witness_lag, lag_metrics, LagMetrics: how far each witness is behind
    audit       verify_witnessing: what `auditlog verify` checks of it
"""

from pipelines.witnessing.audit import WitnessAudit, verify_witnessing
from pipelines.witnessing.lag import LagMetrics, WitnessLag, lag_metrics, witness_lag
from pipelines.witnessing.publisher import Publisher, PublisherThread, PublishStats, WitnessTrouble, open_publisher
from pipelines.witnessing.stored import (
    COSIG_SUFFIX,
    REFUSAL_SUFFIX,
    cosigned_key,
    list_cosigned,
    list_refusals,
    refusal_key,
    safe_name,
)
from pipelines.witnessing.witness import Witness, witnesses_from_settings

__all__ = [
    "COSIG_SUFFIX",
    "REFUSAL_SUFFIX",
    "LagMetrics",
    "PublishStats",
    "Publisher",
    "PublisherThread",
    "Witness",
    "WitnessAudit",
    "WitnessLag",
    "WitnessTrouble",
    "cosigned_key",
    "lag_metrics",
    "list_cosigned",
    "list_refusals",
    "open_publisher",
    "refusal_key",
    "safe_name",
    "verify_witnessing",
    "witness_lag",
    "witnesses_from_settings",
]
