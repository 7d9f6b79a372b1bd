"""Progressive parsing of a streamed JSON answer: field text streams out, truncation is repaired."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from triage.summarize.jsonstream import JsonFieldStreamer

SETTINGS = settings(max_examples=200, deadline=None)
FIELDS = ("title", "summary")

JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-(10**6), 10**6), st.text(max_size=20))
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
ANSWERS = st.fixed_dictionaries(
    {"title": st.text(max_size=40), "summary": st.text(max_size=120)},
    optional={
        "severity": st.sampled_from(["low", "high"]),
        "steps": st.lists(st.text(max_size=20), max_size=3),
        "extra": JSON_VALUES,
        "confidence": st.floats(0, 1),
    },
)


def dumps(obj: Any, ascii_only: bool, indent: int | None) -> str:
    return json.dumps(obj, ensure_ascii=ascii_only, indent=indent)


def split(text: str, cuts: list[int]) -> list[str]:
    points = sorted({c % (len(text) + 1) for c in cuts})
    pieces, prev = [], 0
    for p in [*points, len(text)]:
        pieces.append(text[prev:p])
        prev = p
    return pieces


def feed_all(streamer: JsonFieldStreamer, chunks: list[str]) -> dict[str, str]:
    got: dict[str, str] = {}
    for chunk in chunks:
        for field, delta in streamer.feed(chunk):
            got[field] = got.get(field, "") + delta
    return got


class TestStreaming:
    @SETTINGS
    @given(
        obj=ANSWERS,
        ascii_only=st.booleans(),
        indent=st.sampled_from([None, 2]),
        cuts=st.lists(st.integers(0, 10**4), max_size=30),
    )
    def test_deltas_rebuild_the_fields_exactly(
        self, obj: dict[str, Any], ascii_only: bool, indent: int | None, cuts: list[int]
    ) -> None:
        """However the text is chunked (escapes and \\u pairs split included), deltas concatenate to the field values."""
        text = dumps(obj, ascii_only, indent)
        streamer = JsonFieldStreamer(FIELDS)
        got = feed_all(streamer, split(text, cuts))
        for field in FIELDS:
            assert got.get(field, "") == obj[field]
        assert streamer.result() == (obj, True)

    @SETTINGS
    @given(obj=ANSWERS, cut=st.integers(0, 10**4), ascii_only=st.booleans())
    def test_any_truncation_gives_a_partial_dict(
        self, obj: dict[str, Any], cut: int, ascii_only: bool
    ) -> None:
        """Cut anywhere, result() returns a dict marked partial whose streamed fields are prefixes of the truth."""
        text = dumps(obj, ascii_only, None)
        prefix = text[: cut % len(text)]
        streamer = JsonFieldStreamer(FIELDS)
        got = feed_all(streamer, [prefix])
        partial, complete = streamer.result()
        assert complete is False
        assert isinstance(partial, dict)
        for field in FIELDS:
            assert obj[field].startswith(got.get(field, ""))
            if field in partial:
                assert obj[field].startswith(partial[field]) or partial[field] == got.get(field)

    def test_nested_fields_with_the_same_name_are_not_streamed(self) -> None:
        """Only top-level keys stream; a nested "summary" does not."""
        s = JsonFieldStreamer(FIELDS)
        out = s.feed('{"meta": {"summary": "inner"}, "list": ["summary"], "summary": "outer"}')
        assert out == [("summary", "outer")]

    def test_unicode_escape_split_across_chunks(self) -> None:
        """A \\uXXXX escape and a surrogate pair split over several chunks decode to one character each."""
        s = JsonFieldStreamer(FIELDS)
        chunks = ['{"summary": "caf', "\\u00", "e9 ", "\\ud8", "3d\\u", "de00", '!"}']
        got = feed_all(s, chunks)
        assert got == {"summary": "café 😀!"}

    def test_fenced_answer(self) -> None:
        """A Markdown fence around the object is ignored."""
        s = JsonFieldStreamer(FIELDS)
        feed_all(s, ["```json\n", '{"title": "t", "summary": "s"}', "\n```"])
        assert s.result() == ({"title": "t", "summary": "s"}, True)

    def test_length_cut_inside_summary_keeps_streamed_text(self) -> None:
        """A cut inside the summary closes the string: the partial object holds what streamed."""
        s = JsonFieldStreamer(FIELDS)
        feed_all(s, ['{"title": "DB down", "steps": ["a", "b"], "summary": "Orders fail because the po'])
        assert s.result() == (
            {"title": "DB down", "steps": ["a", "b"], "summary": "Orders fail because the po"},
            False,
        )

    def test_cut_inside_a_key_or_literal_drops_it(self) -> None:
        """An incomplete key, literal or number after the last complete value is dropped."""
        for tail in (
            ', "sev',
            ', "severity": tr',
            ', "confidence": 0.',
            ', "severity":',
            ", ",
            ', "steps": ["x", "y',
        ):
            s = JsonFieldStreamer(FIELDS)
            s.feed('{"title": "t"' + tail)
            partial, complete = s.result()
            assert complete is False
            assert partial["title"] == "t"

    def test_dangling_escape_at_the_cut(self) -> None:
        """A cut right after a backslash or inside \\uXX drops the incomplete escape."""
        for tail in ("\\", "\\u0", "\\u00e"):
            s = JsonFieldStreamer(FIELDS)
            s.feed('{"summary": "ab' + tail)
            assert s.result() == ({"summary": "ab"}, False)

    def test_no_object_at_all(self) -> None:
        """Text without any object yields an empty partial result."""
        s = JsonFieldStreamer(FIELDS)
        assert s.feed("I cannot help with that.") == []
        assert s.result() == ({}, False)

    def test_invalid_but_closed_object_is_partial(self) -> None:
        """A closed object that is not valid JSON is repaired best-effort and marked partial."""
        s = JsonFieldStreamer(FIELDS)
        s.feed('{"title": "t", "summary": "s", "n": 01}')
        partial, complete = s.result()
        assert complete is False
        assert partial["title"] == "t" and partial["summary"] == "s"
