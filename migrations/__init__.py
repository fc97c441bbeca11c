"""Alembic migrations of the SQL index; installed as the package `ledger.index.migrations`."""
