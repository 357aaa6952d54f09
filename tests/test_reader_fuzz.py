"""Property: whatever bytes or mutations come in, the reader returns an Issue or raises SourceError
with a line number — never another exception."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from publisher.errors import SourceError
from publisher.reader import decode, parse_issue
from tests.conftest import EXAMPLES

SAMPLE = (EXAMPLES / "issues" / "2026-11-23.md").read_text(encoding="utf-8")
LINES = SAMPLE.split("\n")

# Fragments that exercise the reader's branches when spliced into a source.
FRAGMENTS = [
    "---", "# ", "## ", "###### x", "############### 嵌入式AI简报 (2020-06-03)", "> 导读：", "> 注：", "- ",
    "- []()", "- [](javascript:alert(1))", "摘要：", "摘要", "标题：", "  1. ", "    - ", "\t- ", "```", "~~~",
    "[x](data:text/html,1)", "[x](<java\tscript:1>)", "**", "*", "`", "<font>", "</font>", "<br>", "<script>",
    "date: 2020-13-45", "status: maybe", "publish_at: now", "topics: {a: 1}", "license: 3", "number: -1",
    "cover: javascript:1", "：", "|", "(2020-01-01)", "[2007.02269v2]", "[CVPR2020]", "owner/repo:", "\x00", "\ufeff",
    "## [往期回顾](x)", "----", "- WeChat: NeuralTalk", "本次99条", "&#106;avascript:", "]]]]", "[[[[",
]


def check(text: str) -> None:
    try:
        parse_issue(text, "fuzz.md")
    except SourceError as exc:
        assert exc.line is not None and exc.line >= 1, f"error without a line: {exc}"
        assert str(exc).startswith("fuzz.md:"), str(exc)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=2000))
def test_random_text(text):
    check(text)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=500))
def test_random_bytes(data):
    try:
        text = decode(data, "fuzz.md")
    except SourceError as exc:
        assert exc.line is not None and exc.line >= 1
        return
    check(text)


@st.composite
def mutated_sample(draw):
    lines = list(LINES)
    for _ in range(draw(st.integers(1, 8))):
        op = draw(st.sampled_from(["insert", "delete", "replace", "splice", "dup"]))
        i = draw(st.integers(0, max(0, len(lines) - 1)))
        if op == "insert":
            lines.insert(i, draw(st.sampled_from(FRAGMENTS)) + draw(st.text(max_size=20)))
        elif op == "delete" and lines:
            del lines[i]
        elif op == "replace" and lines:
            lines[i] = draw(st.sampled_from(FRAGMENTS)) + lines[i][draw(st.integers(0, len(lines[i]))):]
        elif op == "splice" and lines:
            pos = draw(st.integers(0, len(lines[i])))
            lines[i] = lines[i][:pos] + draw(st.sampled_from(FRAGMENTS)) + lines[i][pos:]
        elif op == "dup" and lines:
            lines.insert(i, lines[draw(st.integers(0, len(lines) - 1))])
    return "\n".join(lines)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_sample())
def test_mutated_sample(text):
    check(text)
