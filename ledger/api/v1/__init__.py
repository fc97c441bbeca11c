"""`/api/v1`: the audit API over the SQL index, JSON only; one blueprint per area.

Everything here but `/verify` reads the index (`ledger.index`), which mirrors the chain: answers are
as fresh as the indexer (see `/api/v1/summary` for how far it got). `/verify` re-derives from the
chain and the blob store, and so does `/export` (a version's unsigned export folder as a tar).
`/api/v1/openapi.json` describes it all.
"""

from __future__ import annotations

from flask import Flask

PREFIX = "/api/v1"


def register(app: Flask) -> None:
    from ledger.api.v1 import export, models, nodes, openapi, privacy, rounds, summary, updates, verify

    for module in (summary, rounds, models, updates, nodes, privacy, verify, export, openapi):
        app.register_blueprint(module.blueprint, url_prefix=PREFIX)
