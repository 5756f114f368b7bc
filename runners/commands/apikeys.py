"""`auditlog apikeys`: make, list and revoke the API keys of the gateway and the query API.

    auditlog apikeys create --tenant t_1000 --scope write --label billing-service  # prints the key, once
    auditlog apikeys create --tenant t_1000 --label auditor                        # --scope read (default)
    auditlog apikeys create --tenant t_1000 --scope read --scope write             # both
    auditlog apikeys create --scope admin --label ops                              # every tenant (= --admin)
    auditlog apikeys list
    auditlog apikeys revoke 3f2a9c01be47

Keys are stored hashed in settings.apikeys_path (AUDITLOG_APIKEYS_FILE, default
HOME/apikeys.sqlite); see `api/keys.py`. A revoked key stops working everywhere within seconds.

Scopes: `read` (the query API and the UI), `write` (the gRPC gateway), `admin` (a key of no
tenant that reads and writes every tenant). Keys made before scopes existed keep what they could
do: tenant keys read and write, admin keys are admin.
"""

from __future__ import annotations

import argparse
import sys

from runners.argtypes import IncompleteError, UsageError
from schemas.settings import Settings


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "apikeys",
        help="create, list and revoke API keys (tenant-scoped or admin)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = p.add_subparsers(dest="apikeys_action", metavar="ACTION", required=True)
    create = actions.add_parser("create", help="make a key and print it (shown only this once)")
    create.add_argument("--tenant", metavar="TENANT", help="the one tenant the key may act on")
    create.add_argument(
        "--scope",
        dest="scopes",
        action="append",
        choices=("read", "write", "admin"),
        metavar="read|write|admin",
        help="what the key may do: read (query API, the default), write (gateway), admin (every tenant, no "
        "--tenant); repeat for several",
    )
    create.add_argument("--admin", action="store_true", help="the same as --scope admin")
    create.add_argument("--label", default="", help="what the key is for, shown by `list`")
    listing = actions.add_parser("list", help="every key: id, scope, label, created, revoked")
    listing.add_argument("--active", action="store_true", help="only keys that are not revoked")
    revoke = actions.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("key_id", metavar="KEY_ID", help="the 12-hex-digit id `list` shows")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from api.keys import ApiKeyStore

    with ApiKeyStore.open(settings) as store:
        if args.apikeys_action == "create":
            scopes = tuple(args.scopes or ()) + (("admin",) if args.admin else ())
            if args.tenant is None and "admin" not in scopes:
                raise UsageError(
                    "say whose key it is: --tenant TENANT (with --scope read and/or write), or --scope admin"
                )
            record, token = store.create(tenant_id=args.tenant, label=args.label, scopes=scopes)
            print(token)
            print(
                f"key {record.key_id} ({record.scope}) created; it is shown only now, store it as a secret",
                file=sys.stderr,
            )
            return 0
        if args.apikeys_action == "list":
            rows = store.list(include_revoked=not args.active)
            print(f"{'KEY ID':<14}{'SCOPE':<32}{'CREATED':<22}{'REVOKED':<22}LABEL")
            for key in rows:
                print(f"{key.key_id:<14}{key.scope:<32}{key.created_at:<22}{key.revoked_at or '-':<22}{key.label}")
            return 0
        if store.revoke(args.key_id):
            print(f"key {args.key_id} revoked")
            return 0
        raise IncompleteError(f"no active key {args.key_id!r} in {store.path}")
