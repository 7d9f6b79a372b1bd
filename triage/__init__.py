"""triage: incident log-triage streaming pipeline."""

__version__ = "0.1.0"
