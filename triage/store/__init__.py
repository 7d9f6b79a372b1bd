"""The embedded store (SQLite, WAL): clusters, timeline, findings, checkpoints."""

from triage.store.sqlite import Store

__all__ = ["Store"]
