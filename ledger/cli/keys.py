"""`fedledger keys new`: a fresh account in an encrypted keystore file (mode 0600); prints only its address.

The password comes from $FEDLEDGER_KEYSTORE_PASSWORD (the variable `--keystore` reads too), or is
asked for twice on a terminal. The private key is never printed, logged or written unencrypted.
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
    keys = subparsers.add_parser("keys", help="create an encrypted keystore for a new account")
    sub = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    new = sub.add_parser("new", help="create an account; write its encrypted keystore (0600); print its address")
    new.add_argument("--out", type=Path, help="keystore file to write (default var/keys/<address>.json); never overwritten")
    new.add_argument("--json", action="store_true", help="print {address, keystore} as JSON")
    new.set_defaults(handler=_new)


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


def _new(args: argparse.Namespace) -> int:
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
