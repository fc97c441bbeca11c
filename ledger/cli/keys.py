"""`fedledger keys new [--signing]`: a fresh key, written once, readable only by its owner (mode 0600).

- `keys new`: an account in an encrypted keystore file; prints only its address. The password
  comes from $FEDLEDGER_KEYSTORE_PASSWORD (the variable `--keystore` reads too), or is asked for
  twice on a terminal. The private key is never printed, logged or written unencrypted.
- `keys new --signing`: an EC P-256 key pair for signing exports. The private key is written once
  and never printed; the public key (`.pub` beside it) is what recipients of an export verify
  with, so it is meant to be published.

Neither ever overwrites an existing file.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

log = logging.getLogger(__name__)

PASSWORD_ENV = "FEDLEDGER_KEYSTORE_PASSWORD"


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    keys = subparsers.add_parser("keys", help="create keys: an account's encrypted keystore, or an export signing key pair")
    sub = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    new = sub.add_parser(
        "new", help="create an account (encrypted keystore, 0600; prints its address), or with --signing an export signing key pair"
    )
    new.add_argument(
        "--signing", action="store_true",
        help="an EC P-256 key pair for `fedledger export --signing-key` (model-signing's key mode) instead of an account",
    )  # fmt: skip
    new.add_argument(
        "--out",
        type=Path,
        help="file to write (default var/keys/<address>.json, or var/keys/signing.pem with --signing, whose public key "
        "is OUT with .pub); never overwritten",
    )
    new.add_argument(
        "--json", action="store_true", help="print {address, keystore} (--signing: {private_key, public_key, key_id}) as JSON"
    )
    new.set_defaults(handler=_new)


def _new(args: argparse.Namespace) -> int:
    return _new_signing_key(args) if args.signing else _new_account(args)


def _password() -> str:
    from ledger.cli.errors import UsageError

    password = os.environ.get(PASSWORD_ENV)
    if password is None and sys.stdin.isatty():
        import getpass

        password = getpass.getpass("keystore password: ")
        if getpass.getpass("again: ") != password:
            raise UsageError("the two passwords differ")
    if not password:
        raise UsageError(f"set the keystore password in ${PASSWORD_ENV} (or run on a terminal to be asked)")
    return password


def _new_account(args: argparse.Namespace) -> int:
    from eth_account import Account

    from ledger.chain.keys import write_keystore
    from ledger.cli.errors import CommandError
    from ledger.config import home_dir
    from ledger.core.progress import report

    password = _password()
    account = Account.create()
    path = args.out if args.out is not None else home_dir() / "keys" / f"{account.address}.json"
    if path.exists():
        raise CommandError(f"{path} exists: keystores are never overwritten (choose another --out)")
    write_keystore(account, path, password)
    if args.json:
        print(json.dumps({"address": account.address, "keystore": str(path)}))
    else:
        print(account.address)
        report(log, "keystore", "wrote encrypted keystore {path} (mode 0600)", path=str(path))
    return 0


def _new_signing_key(args: argparse.Namespace) -> int:
    from ledger.cli.errors import CommandError
    from ledger.config import home_dir
    from ledger.export.signing import SigningKeyError, new_signing_key

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
