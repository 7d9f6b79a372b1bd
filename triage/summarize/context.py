"""Evidence for prompts, gathered cheaply on the hot path: recent lines per service, recent findings."""

from __future__ import annotations

from collections import OrderedDict, deque

from triage.model import Event, Finding
from triage.summarize.prompt import PromptContext, Related


class ContextCollector:
    """Keeps the last ``lines`` events per service (references only) and the recent findings.

    Bounded: at most ``max_services`` services (least recently active dropped) and ``max_recent``
    findings.
    """

    __slots__ = ("_lines", "_recent", "_services", "max_services", "window_s")

    def __init__(self, *, lines: int = 6, window_s: float = 300.0, max_services: int = 512,
                 max_recent: int = 200) -> None:
        self._lines = lines
        self.window_s = window_s
        self.max_services = max_services
        self._services: OrderedDict[str, deque[str]] = OrderedDict()
        self._recent: deque[Related] = deque(maxlen=max_recent)

    @property
    def lines(self) -> int:
        """Lines kept per service."""
        return self._lines

    def observe(self, event: Event) -> None:
        self.observe_line(event.service, event.raw)

    def observe_line(self, service: str, raw: str) -> None:
        """One line of ``service`` (its raw, redacted text), in the order the lines were read."""
        if not self._lines:
            return
        services = self._services
        ring = services.get(service)
        if ring is None:
            if len(services) >= self.max_services:
                services.popitem(last=False)
            ring = services[service] = deque(maxlen=self._lines)
        ring.append(raw)

    def context(self, finding: Finding) -> PromptContext:
        """Lines of the finding's service seen before it, and findings started within the window."""
        ring = self._services.get(finding.service)
        neighbours = [raw.split("\n", 1)[0][:300] for raw in ring] if ring else []
        related = [r for r in self._recent
                   if r.id != finding.id and abs(r.first_seen - finding.first_seen) <= self.window_s]
        self._recent.append(Related(id=finding.id, service=finding.service, level=finding.level,
                                    template=finding.template, first_seen=finding.first_seen))
        return PromptContext(neighbours=neighbours, related=related)
