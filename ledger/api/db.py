"""The index database for the API: one SQLAlchemy session per request, closed on teardown.

Following Flask's tutorial: `init_app(app, sessions)` wires it in, `get_session()` opens the
request's session on first use. The API only reads, so closing (rolling back) is all teardown does.
"""

from __future__ import annotations

from flask import Flask, abort, current_app, g
from sqlalchemy.orm import Session, sessionmaker

_EXTENSION = "fedledger_index"


def init_app(app: Flask, sessions: sessionmaker[Session] | None) -> None:
    app.extensions[_EXTENSION] = sessions
    app.teardown_appcontext(close_session)


def get_session() -> Session:
    """This request's session; 503 when the app was built without an index database."""
    if "index_session" not in g:
        sessions = current_app.extensions.get(_EXTENSION)
        if sessions is None:
            abort(503, description="this service has no index database: start it with FEDLEDGER_DATABASE_URL set")
        g.index_session = sessions()
    return g.index_session


def close_session(_exc: BaseException | None = None) -> None:
    session = g.pop("index_session", None)
    if session is not None:
        session.close()
