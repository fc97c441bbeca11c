"""The SQL index: a rebuildable mirror of the ledger's events for the audit API (the chain stays the truth).

`models` holds the tables, `db` the engine, sessions and the schema check, `indexer` the process
that follows the chain into them, `queries` the read side the API serves from.
"""
