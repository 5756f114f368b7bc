"""`auditlog keys generate`: make an Ed25519 checkpoint-signing key pair in signed-note form."""

from __future__ import annotations

import argparse
from pathlib import Path

from runners.argtypes import UsageError
from runners.deployment import with_master_key, write_key_pair
from schemas.settings import Settings
from transforms.errors import NoteFormatError


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    keys = subparsers.add_parser("keys", help="manage checkpoint-signing keys")
    sub = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    gen = sub.add_parser(
        "generate",
        help="generate an Ed25519 key pair",
        description="Writes NAME.key (the private signer key, mode 0600) and NAME.vkey (the public "
        "verifier key, name+keyid+base64, as Go's sumdb/note reads it) into DIR.",
    )
    gen.add_argument("--name", required=True, help="key name, usually the log origin, e.g. auditlog.example/prod")
    gen.add_argument("--out", required=True, type=Path, help="directory to write the two files into")
    gen.add_argument("--force", action="store_true", help="overwrite existing key files")
    gen.set_defaults(handler=generate)
    master = sub.add_parser("master", help="manage the PII key store's master key")
    master_sub = master.add_subparsers(dest="master_command", metavar="ACTION", required=True)
    mgen = master_sub.add_parser(
        "generate",
        help="write a new random master key file (mode 0600)",
        description="Writes 32 random bytes, base64, to FILE (mode 0600); point AUDITLOG_MASTER_KEY_FILE "
        "at it. Back it up: without it no sealed PII can be read again.",
    )
    mgen.add_argument("--out", required=True, type=Path, help="file to write")
    mgen.add_argument("--force", action="store_true", help="overwrite an existing file (its key is lost)")
    mgen.set_defaults(handler=generate_master)
    mrot = master_sub.add_parser(
        "rotate",
        help="wrap every subject key under a new master key too (no downtime)",
        description="Opens the key store with the current master key (AUDITLOG_MASTER_KEY_FILE), registers "
        "the key in --new (from `auditlog keys master generate`) and wraps every subject key under it as "
        "well, in short transactions while other processes keep working. Then put the new key first in the "
        "key file (the old one on the next line), restart the processes one by one, and retire the old key.",
    )
    mrot.add_argument("--new", required=True, type=Path, help="file holding the new master key")
    mrot.set_defaults(handler=rotate_master)
    mret = master_sub.add_parser(
        "retire",
        help="delete every subject key copy wrapped under an old master key",
        description="Once every process runs with the new master key first in its key file: deletes the "
        "copies wrapped under MASTER_ID (keys made under it since the rotation are rewrapped first) and "
        "refuses that key from then on.",
    )
    mret.add_argument("master_id", metavar="MASTER_ID")
    mret.set_defaults(handler=retire_master)


def rotate_master(args: argparse.Namespace, settings: Settings) -> int:
    from pipelines.io.keystore import open_keystore, parse_master_keys

    try:
        new_key = parse_master_keys(args.new.read_text(), f"new master key file {args.new}")[0]
    except FileNotFoundError as exc:
        raise UsageError(
            f"{args.new} does not exist; make it with `auditlog keys master generate --out {args.new}`"
        ) from exc

    # `with open_keystore(...) as store` would type store as the abstract KeyStore (its __enter__),
    # which has no master keys; the opened store is SQL-backed and has them.
    store = open_keystore(with_master_key(settings))
    with store:
        old = store.master_id
        count = store.rotate_master(new_key)
        new = store.master_id
    print(f"master key {new} now wraps all {count} subject keys (beside {old})")
    print(f"next: put {args.new}'s key first in AUDITLOG_MASTER_KEY_FILE and the old key on the line after it,")
    print(f"restart the processes one by one, then run: auditlog keys master retire {old}")
    return 0


def retire_master(args: argparse.Namespace, settings: Settings) -> int:
    from pipelines.io.keystore import open_keystore

    store = open_keystore(with_master_key(settings))
    with store:
        count = store.retire_master(args.master_id)
    print(f"master key {args.master_id} retired ({count} keys made under it since the rotation were rewrapped)")
    print("remove it from every key file; a process still holding only it will now refuse to start")
    return 0


def generate(args: argparse.Namespace, settings: Settings) -> int:
    try:
        private, public = write_key_pair(args.out, args.name, args.force)
    except (FileExistsError, NoteFormatError) as exc:  # a key already there, or a --name a key cannot have
        raise UsageError(str(exc)) from exc
    print(f"private key: {private} (mode 0600, keep it secret)")
    print(f"verifier key: {public}")
    print(public.read_text().strip())
    return 0


def generate_master(args: argparse.Namespace, settings: Settings) -> int:
    from pipelines.io.keystore import write_master_key_file

    try:
        path, master_id = write_master_key_file(args.out, args.force)
    except FileExistsError as exc:
        raise UsageError(str(exc)) from exc
    print(f"master key {master_id} written to {path} (mode 0600): keep it secret, back it up")
    print(f"export AUDITLOG_MASTER_KEY_FILE={path}")
    return 0
