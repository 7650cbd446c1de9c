"""Blob stores for encrypted blobs: a filesystem store (default) and a database store (several instances)."""
