"""GitHub archive (Jekyll Markdown), exactly in the house style of the published archive."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from publisher.channels.archive import CALENDAR_COLUMNS, CalendarCell, CalendarYear, calendar
from publisher.channels.base import LocalImage, PastIssue
from publisher.channels.html_writer import FORMULA_INK
from publisher.channels.markdown_writer import JekyllWriter, MarkdownWriter, TemplateChannel

from publisher import formulas
from publisher.model import Issue, iter_formulas

__all__ = ["CALENDAR_COLUMNS", "CalendarCell", "CalendarYear", "GitHubChannel", "calendar"]

class GitHubChannel(TemplateChannel):
    name = "github"
    template_folder = Path(__file__).parent / "templates"
    media_type = "text/markdown"
    extension = ".md"
    transport = "publisher.transports.git:GitTransport"
    template = "github/issue.md"
    writer_class = JekyllWriter
    past_limit = None  # the calendar shows every issue up to this one
    config = """
[github]
archive_folder = "issues"               # folder of the archive repository holding the issues
qr_path = ""                            # the QR image from an archive page; empty = none
past_issue_link = "{date}.md"           # 往期回顾 link from one archive page to another
repo_path = ""                          # local clone of the archive repository (push)
index_file = "README.md"                # the archive's index page, regenerated on push
push = false                            # `git push` after committing
remote = "origin"
branch = ""                             # empty: the clone's current branch
"""
    path_keys = ("repo_path",)

    def extra_context(self, issue: Issue, writer: MarkdownWriter) -> dict[str, Any]:
        gh = self.settings["github"]
        # the archive as of this issue: every issue up to and including it
        upto: list[PastIssue] = [p for p in self.ctx.archive if p.date <= issue.date]
        if not any(p.date == issue.date for p in upto):
            upto.append(PastIssue(issue.date, f"{issue.brand} ({issue.slug})"))
        return {
            "calendar": calendar(upto, gh["past_issue_link"]),
            "calendar_columns": CALENDAR_COLUMNS,
            "qr_images": [gh["qr_path"]] if gh["qr_path"] else [],
        }

    def images(self, issue: Issue, context: dict[str, Any]) -> tuple[tuple[LocalImage, ...], list[str]]:
        """The issue's images, and its formulas as PNG files beside the page: GitHub shows the
        LaTeX itself, but email points at these files under [newsletter] image_base_url."""
        local, refs = super().images(issue, context)
        made: dict[str, LocalImage] = {}
        for tex, display in iter_formulas(issue):
            img = formulas.image(tex, display, FORMULA_INK)
            made.setdefault(img.name, LocalImage(ref=img.name, data=img.data, role="inline", media_type="image/png"))
        return local + tuple(made.values()), refs + list(made)
