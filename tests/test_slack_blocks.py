"""Block Kit rendering: escaping, mention neutralising and truncation hold for any text."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.sinks.slack.blocks import ELLIPSIS, Renderer, escape, truncate
from tests.fakes.slack_server import FakeSlack
from tests.test_slack_sink import finding

_PIECES = [*"a &<>@!`#^|;\n", "channel", "here", "everyone", "amp;", "<@U1>", "<!here>", "```", "\u00e9"]
NASTY = st.lists(st.sampled_from(_PIECES), max_size=120).map("".join)
_BROKEN_ENTITY = re.compile(r"&(?!amp;|lt;|gt;)")


class TestEscapingAndTruncation:
    @settings(max_examples=200, deadline=None)
    @given(NASTY, st.integers(min_value=1, max_value=300))
    def test_truncation_never_cuts_an_escape(self, text: str, limit: int) -> None:
        """Escaped then truncated text fits the limit, keeps only whole entities, and says it was cut."""
        out = truncate(escape(text), limit)
        assert len(out) <= limit
        assert not _BROKEN_ENTITY.search(out) and "<" not in out and ">" not in out
        if len(escape(text)) > limit:
            assert out.endswith(ELLIPSIS)

    @settings(max_examples=200, deadline=None)
    @given(NASTY, NASTY, NASTY)
    def test_any_finding_renders_within_limits_and_pings_nobody(self, title: str, text: str, sample: str) -> None:
        """Whatever the logs or the model say, Slack would accept the root and the reply and notify no one."""
        fake = FakeSlack()
        r = Renderer(lambda s: s)
        f = finding("a", title=title or "t", text=text, sample=sample, fix=[text, title])
        for payload in (r.root(f), r.root(f, live=text), r.reply(f.model_copy(update={"kind": "spike"}))):
            assert fake._check_blocks(payload) is None
            fake._scan(payload)
        assert fake.pings == []
