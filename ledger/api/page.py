"""`/`: the audit page, a static HTML/JS/CSS client of the JSON API (no build step, no CDN)."""

from __future__ import annotations

from flask import Blueprint, Response, current_app

blueprint = Blueprint("page", __name__, static_folder="static", static_url_path="/static")


@blueprint.get("/")
def audit_page() -> Response:
    return current_app.send_static_file("index.html") if False else blueprint.send_static_file("index.html")
