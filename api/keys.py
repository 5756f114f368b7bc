"""API keys: who may call the gateway (and the query API), for one tenant or admin, with scopes.

A key is shown once, when it is made, and stored only as SHA-256 of its secret::

    auditlog apikeys create --tenant t_1000 --scope write --label billing-service   # prints alk_<id>_<secret>
    auditlog apikeys create --tenant t_1000 --label auditor                         # --scope read, the default
    auditlog apikeys create --scope admin --label ops                               # (or --admin)
    auditlog apikeys list
    auditlog apikeys revoke <key id>

A key reads `alk_<key id>_<secret>`: the key id (12 hex digits) finds the row, the secret
(32 random bytes, base64url) is what proves possession. The secret has 256 bits of entropy, so a
plain SHA-256 is the right hash (a slow password hash protects guessable secrets, which these
are not), and it is compared in constant time. Callers present a key as `authorization: Bearer
<key>` (or the bare key, e.g. in an `x-api-key` header); every server does the same::

    store = ApiKeyStore.open(settings)              # settings.apikeys_path, SQLite
    principal = store.authenticate(header_value)    # AuthenticationError -> UNAUTHENTICATED / 401
    principal.require("write")                      # MissingScopeError -> PERMISSION_DENIED / 403
    principal.authorize(event["tenant_id"])         # PermissionDeniedError -> PERMISSION_DENIED / 403

Scopes. `read` lets a key read its tenant through the query API, `write` lets it record its
tenant's events through the gateway; a key may hold both (`--scope read --scope write`). `admin`
is a key of no tenant that reads and writes every tenant (what admin keys always did). Keys made
before scopes existed have none stored (NULL) and keep working as they did: a tenant key reads
and writes its tenant (read+write), an admin key is admin.

The store is one small SQLite file (WAL, busy timeout): several gateway processes and the
command line share it. Successful authentications are cached for `cache_ttl_s` seconds (by the
SHA-256 of the whole key, never the key itself), so a revocation takes effect everywhere within
that time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import sqlite3
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from transforms.errors import AuditlogError

if TYPE_CHECKING:
    from schemas.settings import Settings

__all__ = [
    "KEY_PREFIX",
    "ApiKey",
    "ApiKeyError",
    "ApiKeyStore",
    "AuthenticationError",
    "MissingScopeError",
    "PermissionDeniedError",
    "Principal",
    "SCOPES",
    "presented_key_id",
]

KEY_PREFIX = "alk"
KEY_ID_BYTES = 6
SECRET_BYTES = 32
DEFAULT_CACHE_TTL_S = 5.0
CACHE_CAPACITY = 10_000
BUSY_TIMEOUT_S = 10.0
_TENANT_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")  # the event schema's tenant_id
SCOPES = ("read", "write", "admin")
LEGACY_TENANT_SCOPES = frozenset({"read", "write"})
"""What a tenant key made before scopes existed may do: read and write, as it always could."""
_TOKEN_PATTERN = re.compile(rf"^{KEY_PREFIX}_([0-9a-f]{{{2 * KEY_ID_BYTES}}})_([A-Za-z0-9_-]{{43}})$")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    key_id TEXT PRIMARY KEY,
    secret_sha256 BLOB NOT NULL,
    tenant_id TEXT,                      -- NULL for an admin key
    admin INTEGER NOT NULL CHECK (admin IN (0, 1)),
    label TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL,
    revoked_at TEXT,
    scopes TEXT,                         -- space-separated; NULL: made before scopes (see the docstring)
    CHECK ((admin = 1 AND tenant_id IS NULL) OR (admin = 0 AND tenant_id IS NOT NULL))
) WITHOUT ROWID;
"""


class ApiKeyError(AuditlogError, RuntimeError):
    """An API key cannot be made or changed as asked."""


class AuthenticationError(ApiKeyError):
    """No key, a malformed key, or a key that is unknown or revoked (gRPC UNAUTHENTICATED, HTTP 401)."""


class PermissionDeniedError(ApiKeyError):
    """A valid key asked for another tenant's data, or lacks a scope (gRPC PERMISSION_DENIED, HTTP 403)."""


class MissingScopeError(PermissionDeniedError):
    """A valid key without the scope a call needs (`scope`: read or write)."""

    def __init__(self, message: str, scope: str) -> None:
        super().__init__(message)
        self.scope = scope


def effective_scopes(stored: str | None, admin: bool) -> frozenset[str]:
    """The scopes of a stored key; NULL (a key made before scopes) reads as it always worked."""
    if stored is None:
        return frozenset({"admin"}) if admin else LEGACY_TENANT_SCOPES
    return frozenset(stored.split())


@dataclass(frozen=True)
class Principal:
    """Who a request acts as: one tenant's key, or an admin key (tenant_id None), and its scopes.

    `scopes` defaults to what a key made before scopes could do (admin, or read+write).
    """

    key_id: str
    tenant_id: str | None
    admin: bool
    scopes: frozenset[str] | None = None

    def __post_init__(self) -> None:
        if self.scopes is None:
            object.__setattr__(self, "scopes", effective_scopes(None, self.admin))

    def has_scope(self, scope: str) -> bool:
        """An admin key holds every scope; a tenant key what it was made with."""
        return self.admin or scope in (self.scopes or ())

    def require(self, scope: str) -> None:
        """Returns if this key holds `scope` (read or write); raises MissingScopeError otherwise."""
        if not self.has_scope(scope):
            held = " ".join(sorted(self.scopes or ())) or "none"
            raise MissingScopeError(
                f"API key {self.key_id} lacks the {scope} scope (it has: {held}); make a key with "
                f"`auditlog apikeys create --tenant {self.tenant_id} --scope {scope}`",
                scope,
            )

    def may_access(self, tenant_id: str) -> bool:
        return self.admin or self.tenant_id == tenant_id

    def authorize(self, tenant_id: str) -> None:
        """Returns if this principal may act on `tenant_id`; raises PermissionDeniedError otherwise."""
        if not self.may_access(tenant_id):
            raise PermissionDeniedError(
                f"API key {self.key_id} belongs to tenant {self.tenant_id!r} and may not act on tenant "
                f"{tenant_id!r}; use that tenant's key, or an admin key"
            )


@dataclass(frozen=True)
class ApiKey:
    """One stored key, without its secret: what `list` shows."""

    key_id: str
    tenant_id: str | None
    admin: bool
    label: str
    created_at: str
    revoked_at: str | None
    scopes: frozenset[str] = frozenset()

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    @property
    def scope(self) -> str:
        if self.admin:
            return "admin"
        return f"tenant {self.tenant_id} {'+'.join(s for s in SCOPES if s in self.scopes)}"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def parse_authorization(header: str | None) -> str:
    """The key inside an `authorization` value (`Bearer <key>`) or a bare key.

    Raises:
        AuthenticationError: nothing given, or not of the form alk_<id>_<secret>.
    """
    if not header or not header.strip():
        raise AuthenticationError(
            "no API key: send `authorization: Bearer alk_...` (make one with `auditlog apikeys create`)"
        )
    token = header.strip()
    scheme, _, rest = token.partition(" ")
    if rest and scheme.lower() == "bearer":
        token = rest.strip()
    if not _TOKEN_PATTERN.match(token):
        shown = token[:8] + "..." if len(token) > 8 else token
        raise AuthenticationError(
            f"malformed API key {shown!r}: expected `Bearer {KEY_PREFIX}_<12 hex>_<43 base64url>`"
        )
    return token


def presented_key_id(header: str | None) -> str | None:
    """The key id of a presented key of the right form (known or not), else None; never raises.

    For records of refused requests: the id says which key was tried, the secret is never kept.
    """
    try:
        token = parse_authorization(header)
    except AuthenticationError:
        return None
    match = _TOKEN_PATTERN.match(token)
    return match.group(1) if match else None


class ApiKeyStore:
    """API keys in one SQLite file; safe to share between threads and processes."""

    def __init__(self, path: Path, cache_ttl_s: float = DEFAULT_CACHE_TTL_S) -> None:
        self.path = Path(path)
        self.cache_ttl_s = cache_ttl_s
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        self._conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        self._cache: dict[bytes, tuple[float, Principal]] = {}
        with self._lock:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
            self._conn.executescript(_SCHEMA)
            columns = {row[1] for row in self._conn.execute("PRAGMA table_info(api_keys)")}
            if "scopes" not in columns:  # a store made before scopes: its keys keep their powers (NULL)
                try:
                    self._conn.execute("ALTER TABLE api_keys ADD COLUMN scopes TEXT")
                except sqlite3.OperationalError as exc:  # another process added it just now
                    if "duplicate column" not in str(exc):
                        raise

    @classmethod
    def open(cls, settings: Settings, **options: float) -> ApiKeyStore:
        """The store that settings name (`settings.apikeys_path`, AUDITLOG_APIKEYS_FILE)."""
        return cls(settings.apikeys_path, **options)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> ApiKeyStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- administration

    def create(
        self,
        tenant_id: str | None = None,
        admin: bool = False,
        label: str = "",
        scopes: tuple[str, ...] | list[str] | frozenset[str] | None = None,
    ) -> tuple[ApiKey, str]:
        """Makes a key; returns its record and the key itself, which is shown this once only.

        Exactly one of `tenant_id` and `admin` (or `scopes` holding admin) must be given. A tenant
        key's `scopes` are read and/or write (default read).
        """
        chosen = frozenset(scopes or ())
        unknown = sorted(chosen - set(SCOPES))
        if unknown:
            raise ApiKeyError(f"unknown scope(s) {unknown}: a key's scopes are {', '.join(SCOPES)}")
        if "admin" in chosen:
            if tenant_id is not None:
                raise ApiKeyError(
                    f"the admin scope is for keys of no tenant (every tenant); drop --tenant {tenant_id}, or give "
                    "the tenant key --scope read and/or --scope write"
                )
            admin = True
        if admin == (tenant_id is not None):
            raise ApiKeyError("a key is either for one tenant (tenant_id) or admin, not both and not neither")
        chosen = frozenset({"admin"}) if admin else (chosen or frozenset({"read"}))
        if tenant_id is not None and not _TENANT_PATTERN.match(tenant_id):
            raise ApiKeyError(
                f"tenant id {tenant_id!r} is not valid: 1-64 of A-Z a-z 0-9 . _ - , starting with a letter or digit"
            )
        key_id = os.urandom(KEY_ID_BYTES).hex()
        secret = base64.urlsafe_b64encode(os.urandom(SECRET_BYTES)).decode().rstrip("=")
        token = f"{KEY_PREFIX}_{key_id}_{secret}"
        record = ApiKey(key_id, tenant_id, admin, label, _now(), None, chosen)
        stored = " ".join(s for s in SCOPES if s in chosen)
        with self._lock:
            self._conn.execute(
                "INSERT INTO api_keys (key_id, secret_sha256, tenant_id, admin, label, created_at, scopes) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    key_id,
                    hashlib.sha256(secret.encode()).digest(),
                    tenant_id,
                    int(admin),
                    label,
                    record.created_at,
                    stored,
                ),
            )
        return record, token

    def list(self, include_revoked: bool = True) -> list[ApiKey]:
        query = "SELECT key_id, tenant_id, admin, label, created_at, revoked_at, scopes FROM api_keys"
        if not include_revoked:
            query += " WHERE revoked_at IS NULL"
        with self._lock:
            rows = self._conn.execute(query + " ORDER BY created_at, key_id").fetchall()
        return [ApiKey(r[0], r[1], bool(r[2]), r[3], r[4], r[5], effective_scopes(r[6], bool(r[2]))) for r in rows]

    def revoke(self, key_id: str) -> bool:
        """Revokes a key (kept, marked revoked); returns False if there is no active key with that id.

        Other processes stop accepting it within their `cache_ttl_s`.
        """
        with self._lock:
            cur = self._conn.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE key_id = ? AND revoked_at IS NULL", (_now(), key_id)
            )
            self._cache = {d: (t, p) for d, (t, p) in self._cache.items() if p.key_id != key_id}
        return cur.rowcount == 1

    # ---- the per-request path

    def authenticate(self, header: str | None) -> Principal:
        """Who presents this `authorization` value (or bare key).

        Raises:
            AuthenticationError: missing, malformed, unknown, wrong secret or revoked.
        """
        token = parse_authorization(header)
        digest = _token_digest(token)
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and cached[0] > now:
            return cached[1]
        match = _TOKEN_PATTERN.match(token)
        assert match is not None  # parse_authorization checked the form
        key_id, secret = match.group(1), match.group(2)
        with self._lock:
            row = self._conn.execute(
                "SELECT secret_sha256, tenant_id, admin, revoked_at, scopes FROM api_keys WHERE key_id = ?", (key_id,)
            ).fetchone()
        # The same comparison runs whether or not the id exists, so timing tells nothing about ids.
        stored = row[0] if row is not None else b"\x00" * 32
        if not hmac.compare_digest(stored, hashlib.sha256(secret.encode()).digest()) or row is None:
            raise AuthenticationError(f"API key {key_id} is not known here (wrong key, or another deployment's)")
        if row[3] is not None:
            raise AuthenticationError(f"API key {key_id} was revoked at {row[3]}; make a new one")
        principal = Principal(key_id, row[1], bool(row[2]), effective_scopes(row[4], bool(row[2])))
        if self.cache_ttl_s > 0:
            if len(self._cache) >= CACHE_CAPACITY:
                self._cache.clear()
            self._cache[digest] = (now + self.cache_ttl_s, principal)
        return principal
