"""The publisher: asks each witness to cosign each archived checkpoint, in order, with backoff."""

from __future__ import annotations

import base64
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pipelines.io.archive.tiles import TileStore
from pipelines.witnessing.lag import WitnessLag, witness_lag
from pipelines.witnessing.stored import cosigned_key, list_cosigned, refusal_key, safe_name
from pipelines.witnessing.witness import Witness, witnesses_from_settings
from transforms.checkpoint import open_checkpoint
from transforms.cosignature import add_cosignatures, parse_signature_lines
from transforms.errors import AuditlogError, NoteFormatError, VerificationError
from transforms.note import Verifier

log = logging.getLogger("pipelines.witnessing")


@dataclass
class _State:
    known_size: int | None = None  # the witness's size of this log, when it told us
    cosigned_size: int = -1  # the newest size stored as cosigned by it
    refused: str = ""  # why the witness will not cosign this log's archive any more
    error: str = ""  # the last failure to reach it
    failures: int = 0
    retry_at: float = 0.0


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
        self.tiles = TileStore(archive, cache_bytes=8 << 20)  # consistency proofs read a few tiles a level
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
            proof = self._consistency(log_id, old, size, note) if 0 < old < size else []
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

    # ---- proofs from the log's tiles

    def _consistency(self, log_id: str, old: int, size: int, note: str) -> list[bytes]:
        """The consistency proof old -> size from the log's tiles, once they give the checkpoint's root."""
        reader = self.tiles.reader(log_id, size)
        checkpoint = open_checkpoint(note, self.log_verifier, origin=f"{self.origin_prefix}/{log_id}")
        if reader.root() != checkpoint.root:
            raise VerificationError(f"log {log_id}: the tiles do not give the root of the checkpoint at {size}")
        return reader.consistency_proof(old)

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
    from pipelines.ingest_config import archive_spec
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
