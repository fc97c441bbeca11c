"""The SQL index's schema revisions."""
