"""Detection v1 and the model-free summary."""

from __future__ import annotations

from triage.clustering.base import Match
from triage.detect import Detector
from triage.model import Cluster, Event, ExceptionInfo, Finding, Frame, Level, Sample
from triage.summarize.fallback import ModelFreeSummarizer


def _event(level: Level) -> Event:
    return Event(timestamp=100.0, level=level, message="m", raw="m", source="s", stream="s", offset=0, end=1)


def _match(cid: str = "c1") -> Match:
    cl = Cluster(id=cid, template="t <*>", kind="template", level=Level.ERROR, count=1, first_seen=100.0,
                 last_seen=100.0, services={"api": 1}, samples=[Sample(100.0, "api", "t 1", ("1",))])
    return Match(cluster=cl, created=True, params=("1",))


class TestDetector:
    def test_new_cluster_at_warning_is_a_finding_once(self) -> None:
        """The first WARNING+ event of a cluster makes a version-1 'new' finding; later ones do not."""
        d = Detector(clock=lambda: 5.0)
        f = d.observe(_event(Level.ERROR), _match())
        assert f is not None and (f.id, f.version, f.kind, f.created_at) == ("c1", 1, "new", 5.0)
        assert d.observe(_event(Level.ERROR), _match()) is None

    def test_below_min_level_is_not_a_finding(self) -> None:
        """INFO events never announce a cluster; a later WARNING event of it does."""
        d = Detector(min_level=Level.WARNING)
        assert d.observe(_event(Level.INFO), _match()) is None
        assert d.observe(_event(Level.WARNING), _match()) is not None

    def test_restored_versions_are_not_announced_again(self) -> None:
        """Clusters announced before a restart stay announced."""
        d = Detector(versions={"c1": 3})
        assert d.observe(_event(Level.CRITICAL), _match()) is None
        assert d.announced("c1")


class TestModelFreeSummary:
    def test_template_summary_says_what_where_how_often_since_when(self) -> None:
        """The summary names the template, service, count, first/last seen and a sample, labelled model-free."""
        f = Finding.of(_match().cluster, version=1, kind="new", created_at=1.0)
        s = ModelFreeSummarizer()(f)
        assert s.source == "model-free"
        assert "[model-free summary]" in s.text
        assert "t <*>" in s.text and "api" in s.text and "Seen 1 time since 1970-01-01 00:01:40Z" in s.text
        assert "Sample: t 1" in s.text

    def test_trace_summary_names_exception_and_top_in_app_frame(self) -> None:
        """A trace cluster's summary names the exception type and the first in-app frame."""
        cl = _match().cluster
        cl.kind = "trace"
        cl.exception = ExceptionInfo("KeyError", "'tier'", [Frame("run", "lib/site-packages/x.py", 1, False),
                                                            Frame("build", "orders/api.py", 9, True)], "python")
        s = ModelFreeSummarizer()(Finding.of(cl, version=1, kind="new", created_at=1.0))
        assert s.title == "KeyError in api"
        assert "Top frame: orders/api.py.build" in s.text

    def test_deterministic(self) -> None:
        """The same finding always gives the same summary."""
        f = Finding.of(_match().cluster, version=1, kind="new", created_at=1.0)
        assert ModelFreeSummarizer()(f) == ModelFreeSummarizer()(f)
