"""The sink seam: emit a finding (new, or a higher version of one), flush durably, close.

A finding's ``id`` is its cluster id and ``version`` grows with each update; a sink treats a higher
version of an id it has seen as an update (edit the Slack message, publish on the same Kafka key,
append a JSONL line). ``flush`` is called at each checkpoint: return only when everything emitted so
far is durable (or raise ``SinkError``); only then are source positions committed.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from triage.model import Finding


@runtime_checkable
class Sink(Protocol):
    name: str

    async def emit(self, finding: Finding) -> None: ...

    async def flush(self) -> None: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class StreamingSink(Sink, Protocol):
    """A sink that shows a summary while the model writes it (terminal, Slack).

    ``summary_delta`` gets each piece of the summary text of ``finding`` as it streams; the complete
    summary follows as a new version through ``emit``.
    """

    async def summary_delta(self, finding: Finding, text: str) -> None: ...


@runtime_checkable
class BackgroundSink(Sink, Protocol):
    """A sink that delivers from its own durable outbox in the background (Slack).

    The pipeline runs ``run()`` in its task group for as long as it runs; ``aclose()`` makes ``run``
    return (after a bounded drain). ``flush`` only needs the outbox to be durable.
    """

    async def run(self) -> None: ...
