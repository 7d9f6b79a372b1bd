"""Detection: which clusters are worth telling someone about, and when to tell them again."""

from triage.detect.detector import Detector, Incident, trace_key
from triage.detect.silences import Silence

__all__ = ["Detector", "Incident", "Silence", "trace_key"]
