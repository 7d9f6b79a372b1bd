"""Decoding and multi-line assembly: raw records in, events out.

``Decoder`` turns one record into one event (JSON, logfmt, plain prefixes); ``MultilineAssembler``
merges stack-trace lines into the event they belong to; ``parse_trace`` parses a whole trace.
"""

from triage.parsing.decode import Decoder, parse_timestamp, service_from_path
from triage.parsing.multiline import MultilineAssembler
from triage.parsing.traces import parse_trace

__all__ = ["Decoder", "MultilineAssembler", "parse_timestamp", "parse_trace", "service_from_path"]
