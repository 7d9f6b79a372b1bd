"""Detection: which clusters are worth telling someone about."""

from triage.detect.detector import Detector

__all__ = ["Detector"]
