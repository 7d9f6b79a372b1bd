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
        [f] = d.observe(_event(Level.ERROR), _match())
        assert (f.id, f.version, f.kind, f.created_at) == ("c1", 1, "new", 100.0)
        assert d.observe(_event(Level.ERROR), _match()) == []

    def test_below_min_level_is_not_a_finding(self) -> None:
        """INFO events never announce a cluster; a later WARNING event of it does."""
        d = Detector(min_level=Level.WARNING)
        assert d.observe(_event(Level.INFO), _match()) == []
        assert len(d.observe(_event(Level.WARNING), _match())) == 1

    def test_restored_versions_are_not_announced_again(self) -> None:
        """Clusters announced before a restart stay announced."""
        d = Detector(versions={"c1": 3})
        assert d.observe(_event(Level.CRITICAL), _match()) == []
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


from triage.detect import Silence  # noqa: E402
from triage.settings import DetectSettings  # noqa: E402


class Clock:
    """Wall clock under test control."""

    def __init__(self) -> None:
        self.t = 1_000.0

    def __call__(self) -> float:
        return self.t


def _cluster(cid: str = "c1", *, exc: ExceptionInfo | None = None, template: str = "t <*>") -> Cluster:
    return Cluster(id=cid, template=template, kind="trace" if exc else "template", level=Level.ERROR, count=0,
                   first_seen=0.0, last_seen=0.0, services={"api": 1}, exception=exc)


class Feeder:
    """Feeds events of given clusters at given log times, as the pipeline would."""

    def __init__(self, detector: Detector) -> None:
        self.d = detector

    def at(self, ts: float, cluster: Cluster, level: Level = Level.ERROR, stream: str = "s") -> list[Finding]:
        cluster.count += 1
        cluster.last_seen = ts
        ev = Event(timestamp=ts, level=level, message="m", raw="m", source="s", stream=stream, offset=0, end=1)
        return self.d.observe(ev, Match(cluster=cluster, created=cluster.count == 1))


def _detector(clock: Clock | None = None, silences: list[Silence] | None = None, **kw: object) -> Detector:
    return Detector(DetectSettings.model_validate(kw), clock=clock or Clock(),
                    silences=(lambda now: silences) if silences is not None else None)


class TestLifecycle:
    def test_resolved_after_quiet_then_reopened(self) -> None:
        """Quiet for resolve_after (in log time): resolved; firing again: a new announcement, same id."""
        d = _detector(resolve_after_s=60)
        f, c = Feeder(d), _cluster()
        assert [x.kind for x in f.at(100, c)] == ["new"]
        f.at(110, c)
        assert d.tick() == []
        f.at(165, _cluster("other"), level=Level.INFO)  # time passes on the stream
        assert d.tick() == []
        f.at(171, _cluster("other"), level=Level.INFO)
        [r] = d.tick()
        assert (r.kind, r.id, r.version) == ("resolved", "c1", 2)
        [again] = f.at(400, c)
        assert (again.kind, again.id, again.version) == ("new", "c1", 3)

    def test_sparse_incident_waits_for_its_usual_gap(self) -> None:
        """An incident that fires every 100 s is not resolved by 60 s of quiet, but by 3 gaps."""
        d = _detector(resolve_after_s=60, resolve_gaps=3)
        f, c, other = Feeder(d), _cluster(), _cluster("o")
        for t in (0, 100, 200):
            f.at(t, c)
        f.at(400, other, level=Level.INFO)
        assert d.tick() == []
        f.at(501, other, level=Level.INFO)
        assert [x.kind for x in d.tick()] == ["resolved"]

    def test_each_stream_has_its_own_clock(self) -> None:
        """A file replayed ahead of another does not resolve the other's incidents."""
        d = _detector(resolve_after_s=60)
        f, c = Feeder(d), _cluster()
        f.at(100, c, stream="orders")
        f.at(1_000, _cluster("x"), level=Level.INFO, stream="checkout")
        assert d.tick() == []
        f.at(161, _cluster("y"), level=Level.INFO, stream="orders")
        assert [x.kind for x in d.tick()] == ["resolved"]

    def test_spike_against_own_baseline(self) -> None:
        """A minute with spike_factor× the usual rate is a spike, once per group_interval."""
        d = _detector(spike_factor=5, spike_min_count=10, group_interval_s=0, resolve_after_s=600)
        f, c = Feeder(d), _cluster()
        out = []
        for minute in range(5):  # 2 per minute: the baseline
            out += f.at(minute * 60 + 1, c) + f.at(minute * 60 + 30, c)
        assert [x.kind for x in out] == ["new"]
        burst = [k for i in range(12) for k in f.at(5 * 60 + i, c)]
        assert [x.kind for x in burst] == ["spike"]
        assert burst[0].count == 10 + 10  # the snapshot carries the counts at the spike

    def test_no_spike_within_group_interval(self) -> None:
        """Updates of one incident are at least group_interval apart."""
        d = _detector(spike_factor=2, spike_min_count=3, group_interval_s=600)
        f, c = Feeder(d), _cluster()
        out = [k for i in range(20) for k in f.at(i, c)]
        assert [x.kind for x in out] == ["new"]

    def test_variant_goes_into_the_same_incident(self) -> None:
        """A new trace cluster with the same exception and frames is a variant of the announced one."""
        frames = [Frame("total", "com.x.Cart", 88, True)]
        a = _cluster("ca", exc=ExceptionInfo("NPE", "cart is null", frames, "java"))
        b = _cluster("cb", exc=ExceptionInfo("NPE", "items is null", frames, "java"))
        d = _detector()
        f = Feeder(d)
        [new] = f.at(10, a)
        [variant] = f.at(11, b)
        assert (new.id, new.kind) == ("ca", "new")
        assert (variant.id, variant.kind, variant.version) == ("ca", "variant", 2)
        assert variant.template == b.template
        assert f.at(12, b) == []  # later events of the variant count for the incident
        assert d.announced("cb")

    def test_repeat_while_still_firing(self) -> None:
        """After repeat_interval of firing without a word, a reminder."""
        d = _detector(repeat_interval_s=300, resolve_after_s=120)
        f, c = Feeder(d), _cluster()
        f.at(0, c)
        kinds = []
        for t in range(60, 400, 60):
            f.at(t, c)
            kinds += [x.kind for x in d.tick()]
        assert kinds == ["repeat"]

    def test_group_wait_and_min_count(self) -> None:
        """With group_wait, the first announcement waits and carries what came meanwhile; min_count holds it back."""
        d = _detector(group_wait_s=30, min_count=3)
        f, c = Feeder(d), _cluster()
        assert f.at(0, c) == [] and f.at(5, c) == []
        assert f.at(20, c) == []
        f.at(31, _cluster("o"), level=Level.INFO)
        [new] = d.tick()
        assert new.kind == "new" and new.count == 3

    def test_silence_by_pattern_then_expiry(self) -> None:
        """A silenced template is not announced; once the silence expires it is."""
        clock = Clock()
        silences = [Silence(1, "", "payment *", expires_at=clock.t + 100)]
        d = _detector(clock, silences)
        f, c = Feeder(d), _cluster(template="payment <*> declined")
        assert f.at(0, c) == []
        assert d.silenced == 1
        clock.t += 200
        assert [x.kind for x in f.at(1, c)] == ["new"]

    def test_silence_by_cluster_id(self) -> None:
        """A silence naming a cluster id holds back only that cluster."""
        d = _detector(silences=[Silence(1, "c1", "", expires_at=1e12)])
        f = Feeder(d)
        assert f.at(0, _cluster("c1")) == []
        assert len(f.at(0, _cluster("c2"))) == 1


class TestSampleDisplay:
    def test_structured_fields_join_the_message(self) -> None:
        """A JSON event's sample says more than its msg: scalar fields follow, bounded; nested ones are left out."""
        s = Sample(1.0, "api", "upstream error", (), {"status": 502, "path": "/api", "ctx": {"a": 1}, "x": None})
        assert s.display() == "upstream error status=502 path=/api"
        long = Sample(1.0, "api", "m", (), {f"k{i}": "v" * 50 for i in range(50)})
        assert len(long.display(limit=200)) <= 200
        assert Sample(1.0, "api", "plain").display() == "plain"
