"""Sinks: where findings go."""
