"""`/`: the audit page, and `/api`: the API reference; plain HTML/CSS/JS, every asset in `ledger/api/static/`.

No build step and nothing from a CDN: the page draws its lineage graph and accuracy chart as inline
SVG with its own script. A strict Content-Security-Policy keeps it that way (only same-origin
scripts, styles and requests), and the script writes chain-supplied text with `textContent` only.
"""

from __future__ import annotations

from flask import Blueprint, Response

blueprint = Blueprint("page", __name__, static_folder="static", static_url_path="/assets")

_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


@blueprint.get("/")
def audit_page() -> Response:
    return blueprint.send_static_file("index.html")


@blueprint.get("/api")
def api_reference() -> Response:
    """The API reference, rendered in the browser from `/api/v1/openapi.json` by `reference.js`."""
    return blueprint.send_static_file("reference.html")


@blueprint.after_request
def _security_headers(response: Response) -> Response:
    response.headers.setdefault("Content-Security-Policy", _CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    return response
