"""The ledger service: Flask app factory for the artifact store and (later) the audit API."""

from ledger.api.app import create_app

__all__ = ["create_app"]
