"""The ledger service: the blob store over HTTP, the audit API under /api/v1 and the audit page."""
