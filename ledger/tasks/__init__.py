"""Tasks at the edge: the built-in tasks, finding a task (entry points, module:attr), its spec and its data files.

This room may import `ledger.core` and nothing else of fedledger; the roles, the auditor and the
commands import it. The `Task` interface itself is pure and lives in `ledger.core.task`.
"""
