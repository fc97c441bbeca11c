"""`fedledger keys new --signing`: an EC P-256 key pair for signing exports (private key mode 0600).

The private key is written once and never printed; the public key (`.pub` beside it) is what
recipients of an export verify with, so it is meant to be published.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    keys = subparsers.add_parser("keys", help="create keys")
    sub = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    new = sub.add_parser("new", help="create a key; `--signing`: an export signing key pair")
    new.add_argument(
        "--signing", action="store_true",
        help="an EC P-256 key pair for `fedledger export --signing-key` (model-signing's key mode)",
    )  # fmt: skip
    new.add_argument("--out", type=Path, help="private key file (default var/keys/signing.pem); the public key is OUT with .pub; never overwritten")
    new.add_argument("--json", action="store_true", help="print {private_key, public_key, key_id} as JSON")
    new.set_defaults(handler=_new)


def _new(args: argparse.Namespace) -> int:
    from ledger.cli.errors import CommandError, UsageError
    from ledger.config import home_dir
    from ledger.export.signing import SigningKeyError, new_signing_key

    if not args.signing:
        raise UsageError("pass --signing: `keys new --signing` creates the key pair that signs exports")
    path = args.out if args.out is not None else home_dir() / "keys" / "signing.pem"
    try:
        created = new_signing_key(path)
    except SigningKeyError as exc:
        raise CommandError(str(exc)) from exc
    if args.json:
        print(json.dumps({"private_key": str(created.private_key), "public_key": str(created.public_key), "key_id": created.key_id}))
    else:
        print(f"private key {created.private_key} (mode 0600: keep it secret)")
        print(f"public key  {created.public_key} (give it to whoever verifies your exports)")
        print(f"key id      {created.key_id}")
    return 0
