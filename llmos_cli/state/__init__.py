"""Persistent state: the SQLite database, the content-addressed store, the lock."""
