"""The repeat-shape lane: records whose shape was seen before skip decoding, redaction and mining.

Most records of a busy stream repeat a few hundred line shapes in which only digits change
(timestamps, ids, durations, counts). The full path (decode → assemble → redact → cluster → detect)
costs ~10 µs per record in Python; a record of a known shape costs one ``bytes.translate`` and one
dict lookup, and is then counted in bulk with the others of its run.

**Shape.** The key is the raw bytes with every digit turned into ``0`` (same length, so every field
sits at the same byte offsets in all records of a shape). A shape is learned from a record the full
path handled, only when no step of that handling depends on digit values:

* decoding: JSON, logfmt or an ISO-timestamp-led plain line; ASCII and printable; one line; no
  exception; the timestamp is an ISO string (the decoder's first candidate) that parses back to the
  same float from its byte offsets; the level came from a word, not a number; the service has no
  digits (or comes from the source: Kafka key/header, file name);
* assembly: the event is not one the assembler holds (plain lines at WARNING or above are);
* redaction: every step says it leaves the event, and every event that differs from it only in
  digits, untouched (``leaves_shape_alone``; ``ya29.`` is why the redactor checks with digits zeroed);
* clustering: masking looks at character classes only, so such records mine to the same template
  (the miner's own cache uses the same key).

A shape is learned at the second full-path record of its key (most keys seen once never return);
where less than 1/20 of a probe window of records take the lane, it steps aside for a while
(:class:`FastLane`: ``PROBE``, ``OFF_FOR``).

**Segments.** The decode stage cuts each batch into segments: a stretch of one stream with no
full-path record in it, so everything the full path does stays in read order around it. Inside a
segment the records of each quiet shape form a :class:`Tally` (shapes of one cluster, level, service
and timestamp layout share one: ids of varying length make many shapes of one template); records of
shapes whose events detection must see one by one (level at or above ``detect.min_level``, or a
cluster with an incident: "alert" shapes) are kept in read order with their timestamps.

**Applying a segment** (the cluster stage, :class:`SegmentApplier`): alert records go through
``observe_at`` one at a time, in order (for a cluster with an incident the counting waits for the
segment's end, or for a finding about to copy the cluster: ``Detector.on_snapshot``); then each tally
is counted in bulk (cluster counts, times, level and services with ``bump``; per-minute counts; the
detector's clock); then the context keeps the segment's last lines of each service, in read order;
before a finding leaves, the context first gets the segment's lines that precede it. A shape
remembers its cluster; a record is decoded again and goes through ``add`` like any event when that
cluster is gone (evicted, merged: so creation and merges are the full path's) and while the cluster
still collects samples. The latest record of a cluster counted in bulk is kept aside and becomes its
latest sample when someone looks: before a checkpoint's store flush and before a finding copies the
cluster; an event the full path adds supersedes it.

Differences from the full path, bounded by one segment (at most the waiting batches of one stream):
alert events are applied before the quiet records of their segment, so with timestamps out of order
inside a segment an alert's detection time can miss a later quiet timestamp read before it. When the
decode stage joins a stream's waiting batches (``pipeline.JOIN_RECORDS``), streams are applied in
another order than read (never the records of one stream): which of two streams' records becomes a
cluster's latest sample, and detection of an incident fed by several streams, follow that order, as
they follow any other order in which partitions arrive.

Checked per record before it is counted: its second is a valid date-time, and a numeric zone equals
the shape's; a record that fails (an impossible date such as ``02-30`` or ``:61``) takes the full path
where it was read, its segment cut in two around it. A JSON record that is malformed only by a digit (a number with a leading zero) is
counted with its shape instead of being read as plain text. The lane is off when a step cannot vouch
for shapes (``redact.extra_patterns``).

Modules: :mod:`~triage.fastlane.shapes` (what a shape is, when one is learned),
:mod:`~triage.fastlane.lane` (the decode stage's loop), :mod:`~triage.fastlane.apply` (the cluster
stage's bulk counting).
"""

from triage.fastlane.apply import SegmentApplier
from triage.fastlane.lane import FastLane, Rows, Segment, Tally
from triage.fastlane.shapes import ZERO_DIGITS, Shape, ShapeMemo, ShapeStep

__all__ = ["ZERO_DIGITS", "FastLane", "Rows", "Segment", "SegmentApplier", "Shape", "ShapeMemo", "ShapeStep", "Tally"]
