"""`python -m ledger.cli`: the same entry point as the `fedledger` script."""

import sys

from ledger.cli.main import main

sys.exit(main())
