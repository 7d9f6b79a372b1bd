"""Clustering: masking, streaming template mining, stack-trace fingerprints, stable ids."""

from triage.clustering.base import Clusterer, EvictHook, Match
from triage.clustering.fingerprint import fingerprint, trace_template
from triage.clustering.masking import WILDCARD, mask, mask_text, tokenize
from triage.clustering.miner import TemplateMiner, template_id
from triage.clustering.streaming import StreamingClusterer, template_matches, template_regex

__all__ = [
    "WILDCARD",
    "Clusterer",
    "EvictHook",
    "Match",
    "StreamingClusterer",
    "TemplateMiner",
    "fingerprint",
    "mask",
    "mask_text",
    "template_id",
    "template_matches",
    "template_regex",
    "tokenize",
    "trace_template",
]
