"""Registries: indexes (``index``), source kinds (``sources``) and the local lists (``lists``)."""
