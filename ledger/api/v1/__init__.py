"""`/api/v1`: the audit API over the SQL index, JSON only; one blueprint per area.

Everything here reads the index (`ledger.index`), which mirrors the chain: answers are as fresh as
the indexer (see `/api/v1/summary` for how far it got). `/api/v1/openapi.json` describes it all.
"""

from __future__ import annotations

from flask import Flask

PREFIX = "/api/v1"


def register(app: Flask) -> None:
    from ledger.api.v1 import models, nodes, openapi, rounds, summary, updates

    for module in (summary, rounds, models, updates, nodes, openapi):
        app.register_blueprint(module.blueprint, url_prefix=PREFIX)
