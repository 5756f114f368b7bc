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
missed is cosigned in order. Leaf hashes for the proofs come from the archived blocks (or the
leaf hashes `auditlog expire` left in their place), checked against each signed root.
"""

from __future__ import annotations

import base64
import logging
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from hashlib import sha256
from typing import Any

from pipelines.io.archive import COSIGNED_DIR, REFUSALS_DIR, ArchiveNotFoundError, expired_key, log_prefix
from transforms.blocks import decode_block_object, decode_expired_block
from transforms.checkpoint import open_checkpoint
from transforms.cosignature import CosignatureVerifier, add_cosignatures, parse_signature_lines
from transforms.errors import AuditlogError, NoteFormatError, VerificationError
from transforms.merkle import MerkleTree, leaf_hash
from transforms.note import Verifier

log = logging.getLogger(__name__)

COSIG_SUFFIX = ".cosig"
REFUSAL_SUFFIX = ".refused"
_COSIG_NAME = re.compile(r"(\d{15})\.(.+)\.([0-9a-f]{8})\.cosig")
_UNSAFE = re.compile(r"[^A-Za-z0-9._=-]")


def safe_name(name: str) -> str:
    return _UNSAFE.sub("_", name)


def cosigned_key(log_id: str, tree_size: int, witness: CosignatureVerifier) -> str:
    name = f"{tree_size:015d}.{safe_name(witness.name)}.{witness.key_id:08x}{COSIG_SUFFIX}"
    return f"{log_prefix(log_id)}{COSIGNED_DIR}/{name}"


def refusal_key(log_id: str, tree_size: int, witness: CosignatureVerifier, note: str) -> str:
    digest = sha256(note.encode()).hexdigest()[:16]
    return (
        f"{log_prefix(log_id)}{REFUSALS_DIR}/{tree_size:015d}.{safe_name(witness.name)}."
        f"{witness.key_id:08x}.{digest}{REFUSAL_SUFFIX}"
    )


def list_cosigned(archive: Any, log_id: str) -> dict[tuple[str, str], list[int]]:
    """{(witness name as stored, key id hex): [tree sizes cosigned, ascending]} of one log."""
    prefix = f"{log_prefix(log_id)}{COSIGNED_DIR}/"
    out: dict[tuple[str, str], list[int]] = {}
    for key in archive.keys(prefix):
        match = _COSIG_NAME.fullmatch(key[len(prefix) :])
        if match:
            out.setdefault((match.group(2), match.group(3)), []).append(int(match.group(1)))
    for sizes in out.values():
        sizes.sort()
    return out


def list_refusals(archive: Any, log_id: str) -> list[str]:
    return list(archive.keys(f"{log_prefix(log_id)}{REFUSALS_DIR}/"))


@dataclass(frozen=True)
class Witness:
    """A configured witness: a short name, its URL and its cosignature verifier."""

    name: str
    url: str
    verifier: CosignatureVerifier

    @classmethod
    def from_config(cls, name: str, url: str, vkey: str) -> Witness:
        return cls(name, url.rstrip("/"), CosignatureVerifier.from_key(vkey))


def witnesses_from_settings(settings: Any) -> list[Witness]:
    return [Witness.from_config(w.name, w.url, w.vkey) for w in settings.witness_list]


@dataclass
class _State:
    known_size: int | None = None  # the witness's size of this log, when it told us
    cosigned_size: int = -1  # the newest size stored as cosigned by it
    refused: str = ""  # why the witness will not cosign this log's archive any more
    error: str = ""  # the last failure to reach it
    failures: int = 0
    retry_at: float = 0.0


@dataclass
class WitnessLag:
    witness: str
    log_id: str
    newest_size: int
    cosigned_size: int  # -1 when none
    checkpoints_behind: int
    refused: str = ""
    error: str = ""
    refusals: int = 0  # refusals stored as evidence in the archive

    @property
    def leaves_behind(self) -> int:
        return self.newest_size - max(self.cosigned_size, 0)


@dataclass
class PublishStats:
    cosigned: int = 0
    refused: int = 0
    failures: int = 0
    registered: list[str] = field(default_factory=list)


class WitnessTrouble(AuditlogError, OSError):
    """A witness answered, but not usefully (wrong URL or key, unknown log, throttling): retried with backoff."""


class _Refused(Exception):
    pass


class Publisher:
    """Asks each witness to cosign each archived checkpoint, stores what they return."""

    def __init__(
        self,
        archive: Any,
        log_verifier: Verifier,
        log_vkey: str,
        origin_prefix: str,
        witnesses: list[Witness],
        register: Callable[[Witness, str, str], bool] | None = None,
        timeout_s: float = 5.0,
        max_backoff_s: float = 15.0,
    ) -> None:
        self.archive = archive
        self.log_verifier = log_verifier
        self.log_vkey = log_vkey
        self.origin_prefix = origin_prefix
        self.witnesses = witnesses
        self.register = register
        self.timeout_s = timeout_s
        self.max_backoff_s = max_backoff_s
        self.stats = PublishStats()
        self._state: dict[tuple[str, str], _State] = {}
        self._trees: dict[str, tuple[MerkleTree, int]] = {}  # log -> (tree, next block index)
        self._lock = threading.Lock()

    # ---- the loop

    def sync_once(self) -> int:
        """One pass over every log and witness; returns how many checkpoints were cosigned."""
        with self._lock:
            done = 0
            for log_id in self.archive.list_logs():
                sizes = self.archive.list_checkpoints(log_id)
                if not sizes:
                    continue
                stored = list_cosigned(self.archive, log_id)
                for witness in self.witnesses:
                    state = self._state.setdefault((witness.name, log_id), _State())
                    have = stored.get((safe_name(witness.verifier.name), f"{witness.verifier.key_id:08x}"), [])
                    state.cosigned_size = max(have, default=-1)
                    if state.refused or time.monotonic() < state.retry_at:
                        continue
                    try:
                        done += self._publish(witness, log_id, sizes, state)
                        state.error, state.failures = "", 0
                    except (OSError, urllib.error.URLError, TimeoutError) as exc:
                        state.failures += 1
                        state.error = f"{type(exc).__name__}: {exc}"
                        backoff = min(self.max_backoff_s, 0.5 * 2 ** min(state.failures, 8))
                        state.retry_at = time.monotonic() + backoff
                        self.stats.failures += 1
                        log.warning(
                            "witness %s unreachable for log %s (%s); retrying in %.1f s",
                            witness.name,
                            log_id,
                            state.error,
                            backoff,
                        )
            return done

    def follow(self, stop: threading.Event, interval_s: float = 1.0) -> None:
        """Publishes until `stop` is set; an archive or witness outage is waited out, not fatal."""
        while not stop.is_set():
            try:
                self.sync_once()
            except Exception as exc:  # noqa: BLE001 - keep following through archive outages
                log.warning("witness publisher: pass failed, retrying in %.0f s: %s", interval_s, exc)
            stop.wait(interval_s)

    # ---- one witness, one log

    def _publish(self, witness: Witness, log_id: str, sizes: list[int], state: _State) -> int:
        done = 0
        origin = f"{self.origin_prefix}/{log_id}"
        newest = sizes[-1]
        for size in sizes:
            if size <= state.cosigned_size or size == 0:
                continue
            if state.known_size is not None and size < state.known_size:
                continue  # the witness moved past it (another publisher); it cannot be cosigned now
            note = self.archive.get_checkpoint(log_id, size)
            checkpoint = open_checkpoint(note, self.log_verifier, origin=origin)
            try:
                lines = self._add_checkpoint(witness, log_id, origin, size, note, state)
            except _Refused as refusal:
                self._refuse(witness, log_id, size, note, state, str(refusal))
                return done
            if lines is None:
                continue
            cosigned = add_cosignatures(note, lines)
            self.archive.put_immutable(cosigned_key(log_id, size, witness.verifier), cosigned.encode())
            state.cosigned_size = state.known_size = checkpoint.size
            done += 1
            self.stats.cosigned += 1
        if state.known_size is not None and state.known_size > newest and state.cosigned_size < state.known_size:
            if self.archive.list_checkpoints(log_id)[-1:] != [newest]:
                return done  # the archive grew meanwhile (another publisher cosigned it): look again next pass
            self._refuse(
                witness,
                log_id,
                newest,
                self.archive.get_checkpoint(log_id, newest),
                state,
                f"the witness already cosigned size {state.known_size} of {origin}, beyond this archive's "
                f"newest checkpoint {newest}: the log was rolled back or another history was shown",
            )
        return done

    def _add_checkpoint(
        self, witness: Witness, log_id: str, origin: str, size: int, note: str, state: _State
    ) -> list[Any] | None:
        """Sends one add-checkpoint (again after a 409); returns the cosignature lines, or None to skip."""
        old = state.known_size if state.known_size is not None else max(state.cosigned_size, 0)
        registered = False
        for _attempt in range(4):
            if old > size:
                state.known_size = old
                return None
            proof = self._consistency(log_id, old, size) if 0 < old < size else []
            body = f"old {old}\n" + "".join(base64.b64encode(h).decode() + "\n" for h in proof) + "\n" + note
            status, text = self._post(witness, body)
            if status == 200:
                try:
                    answered = parse_signature_lines(text)
                except NoteFormatError as exc:
                    raise WitnessTrouble(f"the witness answered 200 with no signature lines ({exc})") from None
                lines = [s for s in answered if (s.name, s.key_id) == (witness.verifier.name, witness.verifier.key_id)]
                checkpoint_text = note[: note.rfind("\n\n") + 1]
                if not lines or any(witness.verifier.verify(checkpoint_text, s.signature) is None for s in lines):
                    raise WitnessTrouble(
                        f"the witness answered 200 without a valid cosignature from its key (is its vkey "
                        f"configured right?): {text[:200]!r}"
                    )
                return lines
            if status == 409:
                try:
                    old = int(text.strip())
                except ValueError:
                    raise WitnessTrouble(f"409 with a body that is not a size: {text[:200]!r}") from None
                state.known_size = old
                continue
            if status == 403 and "unknown log" in text and self.register is not None and not registered:
                registered = True
                if self.register(witness, origin, self.log_vkey):
                    self.stats.registered.append(origin)
                continue
            if status == 422:
                raise _Refused(
                    f"HTTP 422 ({text.strip()}): the consistency proof from the witness's size {old} to "
                    f"{size} does not hold — the archive's log is not the history the witness cosigned "
                    "(split view or rollback)"
                )
            # Anything else (a wrong URL, a log the witness's operator has not added yet, throttling)
            # is trouble to retry, not evidence: only a 422 says the history does not hold.
            raise WitnessTrouble(f"HTTP {status}: {text.strip()[:200]}")
        raise WitnessTrouble(f"the witness kept changing its size (last {old})")

    def _refuse(self, witness: Witness, log_id: str, size: int, note: str, state: _State, why: str) -> None:
        state.refused = why
        self.stats.refused += 1
        log.error("witness %s refused log %s at size %d: %s", witness.name, log_id, size, why)
        record = f"witness {witness.verifier.encode()}\nurl {witness.url}\nsize {size}\nwhy {why}\n\n{note}"
        self.archive.put_immutable(refusal_key(log_id, size, witness.verifier, note), record.encode())

    def _post(self, witness: Witness, body: str) -> tuple[int, str]:
        request = urllib.request.Request(
            f"{witness.url}/add-checkpoint",
            data=body.encode(),
            method="POST",
            headers={"Content-Type": "text/plain; charset=utf-8"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as answer:
                return answer.status, answer.read(100_000).decode("utf-8", "replace")
        except urllib.error.HTTPError as exc:
            if exc.code >= 500:
                raise OSError(f"HTTP {exc.code} from {witness.url}") from None
            return exc.code, exc.read(100_000).decode("utf-8", "replace")

    # ---- leaf hashes from the archive

    def _consistency(self, log_id: str, old: int, size: int) -> list[bytes]:
        tree = self._tree(log_id, size)
        return tree.consistency_proof(old, size)

    def _tree(self, log_id: str, size: int) -> MerkleTree:
        tree, next_block = self._trees.get(log_id, (MerkleTree(), 0))
        blocks = set(self.archive.list_blocks(log_id))
        while tree.size < size:
            if next_block in blocks:
                header, entries = decode_block_object(self.archive.get_block(log_id, next_block))
                hashes = [leaf_hash(e) for e in entries]
            else:
                try:
                    header, hashes, _ = decode_expired_block(self.archive.get(expired_key(log_id, next_block)))
                except ArchiveNotFoundError:
                    raise VerificationError(f"log {log_id}: block {next_block} is missing from the archive") from None
            if header.first_leaf_index != tree.size:
                raise VerificationError(f"log {log_id}: block {next_block} does not start at leaf {tree.size}")
            tree.extend(hashes)
            if tree.root() != header.tree_root:
                raise VerificationError(f"log {log_id}: block {next_block}'s leaves do not give its tree root")
            next_block += 1
        self._trees[log_id] = (tree, next_block)
        return tree

    # ---- lag

    def lag(self) -> list[WitnessLag]:
        """Per witness and log: the newest checkpoint, the newest cosigned one, what is behind."""
        with self._lock:
            rows = witness_lag(self.archive, self.witnesses)
            for row in rows:
                state = self._state.get((row.witness, row.log_id))
                if state:
                    row.refused, row.error = state.refused, state.error
            return rows


def witness_lag(archive: Any, witnesses: list[Witness]) -> list[WitnessLag]:
    """Lag of each witness on each log, read from the archive alone."""
    rows = []
    for log_id in archive.list_logs():
        sizes = archive.list_checkpoints(log_id)
        if not sizes:
            continue
        stored = list_cosigned(archive, log_id)
        refusals = list_refusals(archive, log_id)
        for witness in witnesses:
            have = stored.get((safe_name(witness.verifier.name), f"{witness.verifier.key_id:08x}"), [])
            newest_cosigned = max(have, default=-1)
            marker = f".{safe_name(witness.verifier.name)}.{witness.verifier.key_id:08x}."
            refused = [k for k in refusals if marker in k]
            rows.append(
                WitnessLag(
                    witness.name,
                    log_id,
                    sizes[-1],
                    newest_cosigned,
                    sum(1 for s in sizes if s > newest_cosigned),
                    refused=f"{len(refused)} refusal(s) recorded" if refused else "",
                    refusals=len(refused),
                )
            )
    return rows


_GAUGES: tuple[tuple[str, str, Callable[[WitnessLag], int]], ...] = (
    (
        "auditlog_witness_checkpoints_behind",
        "Checkpoints of the log newer than the newest one the witness cosigned.",
        lambda r: r.checkpoints_behind,
    ),
    (
        "auditlog_witness_leaves_behind",
        "Leaves between the log's newest checkpoint and the newest one the witness cosigned.",
        lambda r: r.leaves_behind,
    ),
    (
        "auditlog_witness_cosigned_tree_size",
        "Tree size of the newest checkpoint the witness cosigned (-1: none yet).",
        lambda r: r.cosigned_size,
    ),
    (
        "auditlog_witness_refusals",
        "Refusals by the witness stored as evidence in the archive (a split view or a rollback).",
        lambda r: r.refusals,
    ),
)


def lag_metrics(rows: list[WitnessLag]) -> str:
    """Each witness's lag on each log as Prometheus text-format gauges (`auditlog serve`'s /metrics)."""

    def label(value: str) -> str:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    lines = []
    for name, help_text, value in _GAUGES:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
        lines += [f'{name}{{witness="{label(r.witness)}",log="{label(r.log_id)}"}} {value(r)}' for r in rows]
    return "\n".join(lines) + "\n"


class LagMetrics:
    """`lag_metrics` of an archive, read at most every `max_age_s` seconds (scrapes list the archive)."""

    def __init__(self, archive: Any, witnesses: list[Witness], max_age_s: float = 15.0) -> None:
        self.archive = archive
        self.witnesses = witnesses
        self.max_age_s = max_age_s
        self._lock = threading.Lock()
        self._text = ""
        self._read_at = -float("inf")

    def __call__(self) -> str:
        with self._lock:
            if time.monotonic() - self._read_at >= self.max_age_s:
                self._text = lag_metrics(witness_lag(self.archive, self.witnesses))
                self._read_at = time.monotonic()
            return self._text


class PublisherThread:
    """Runs a Publisher in a background thread (beside the indexer in `auditlog ingest`)."""

    def __init__(self, publisher: Publisher, interval_s: float = 1.0) -> None:
        self.publisher = publisher
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=publisher.follow, args=(self._stop, interval_s), daemon=True, name="witness-publisher"
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)


def open_publisher(
    settings: Any,
    archive: Any = None,
    register: Callable[[Witness, str, str], bool] | None = None,
) -> Publisher | None:
    """The publisher of this deployment, or None when no witness is configured.

    `register` makes a log known to a witness that answers "unknown log" (infra.witness's
    `local_registrar` does it for the local witness, whose database is ours to change).
    """
    witnesses = witnesses_from_settings(settings)
    if not witnesses:
        return None
    from pipelines.ingest import archive_spec
    from pipelines.io.archive import open_archive

    vkey = settings.verifier_key_file.read_text().strip()
    return Publisher(
        archive or open_archive(**archive_spec(settings)),
        Verifier.from_key(vkey),
        vkey,
        settings.origin,
        witnesses,
        register=register,
    )


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
    from transforms.cosignature import WitnessError, check_cosigned, split_note

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
