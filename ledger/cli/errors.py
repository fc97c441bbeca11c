"""User-facing command failures: each prints as one line and exits with its own code (no traceback).

Side-effect free on purpose: every command module imports these, and `python -m ledger.cli` and
the `fedledger` script must see the very same classes.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1  # the thing checked is wrong, or the command could not do its job
EXIT_USAGE = 2  # the command line is wrong (argparse uses 2 too)
EXIT_UNAVAILABLE = 3  # a dependency (chain, store, database) could not be reached


class CommandError(Exception):
    """A failure the user can act on; the message names the fix."""

    exit_code = EXIT_FAILED


class UsageError(CommandError):
    """The options given cannot work together or name something that does not exist."""

    exit_code = EXIT_USAGE


class DependencyUnavailable(CommandError):
    """The chain, the blob store or the database did not answer."""

    exit_code = EXIT_UNAVAILABLE
