"""Test doubles that speak real protocols (an OpenAI-compatible SSE server)."""
