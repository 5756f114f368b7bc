"""What `auditlog verify` checks of the witnessing: every stored cosignature and refusal."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipelines.io.archive import ArchiveNotFoundError
from pipelines.witnessing.stored import cosigned_key, list_cosigned, list_refusals, safe_name
from pipelines.witnessing.witness import Witness
from transforms.cosignature import WitnessError, check_cosigned, split_note
from transforms.errors import VerificationError
from transforms.note import Verifier


@dataclass
class WitnessAudit:
    """What `verify_witnessing` found over the archive."""

    cosignatures: int = 0
    checkpoints: int = 0
    problems: list[str] = field(default_factory=list)


def verify_witnessing(
    archive: Any,
    log_verifier: Verifier,
    origin_prefix: str,
    witnesses: list[Witness],
    min_witnesses: int = 0,
    log_ids: list[str] | None = None,
) -> WitnessAudit:
    """Checks every stored cosignature, every recorded refusal, and `min_witnesses` on each checkpoint.

    A stored cosigned note must be the archived checkpoint's exact text, signed by the log's key,
    with a valid cosignature from the witness its key names; one from a witness that is not
    configured is reported (it cannot be checked). A recorded refusal is always a problem: a
    witness saw this archive's log disagree with what it cosigned before.
    """
    audit = WitnessAudit()
    by_id = {(safe_name(w.verifier.name), f"{w.verifier.key_id:08x}"): w for w in witnesses}
    for log_id in log_ids if log_ids is not None else archive.list_logs():
        origin = f"{origin_prefix}/{log_id}"
        sizes = archive.list_checkpoints(log_id)
        audit.checkpoints += len(sizes)
        valid: dict[int, set[str]] = {}
        for (name, key_id), cosigned_sizes in list_cosigned(archive, log_id).items():
            witness = by_id.get((name, key_id))
            for size in cosigned_sizes:
                where = f"log {log_id} size {size}"
                if witness is None:
                    audit.problems.append(f"{where}: cosignature by witness {name}/{key_id}, which is not configured")
                    continue
                try:
                    note = archive.get(cosigned_key(log_id, size, witness.verifier)).decode("utf-8")
                    operator = archive.get_checkpoint(log_id, size)
                    if split_note(note)[0] != split_note(operator)[0]:
                        raise WitnessError("the cosigned text is not the archived checkpoint's")
                    check_cosigned(note, log_verifier, [witness.verifier], 1, origin=origin)
                except (VerificationError, ArchiveNotFoundError, UnicodeDecodeError) as exc:
                    audit.problems.append(f"{where}: cosignature of witness {witness.name} does not verify: {exc}")
                    continue
                audit.cosignatures += 1
                valid.setdefault(size, set()).add(witness.name)
        for key in list_refusals(archive, log_id):
            record = archive.get(key).decode("utf-8", "replace")
            why = next((line[4:] for line in record.splitlines() if line.startswith("why ")), "?")
            witness_line = next((line[8:] for line in record.splitlines() if line.startswith("witness ")), "?")
            audit.problems.append(f"log {log_id}: witness {witness_line.split('+')[0]} refused to cosign: {why}")
        if min_witnesses:
            for size in sizes:
                have = valid.get(size, set())
                if len(have) < min_witnesses:
                    missing = ", ".join(w.name for w in witnesses if w.name not in have) or "none configured"
                    audit.problems.append(
                        f"log {log_id} size {size}: {len(have)} of the required {min_witnesses} witness "
                        f"cosignature(s) (missing: {missing})"
                    )
    return audit
