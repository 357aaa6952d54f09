"""The named patterns of the source format, shared by the reader (publisher/reader.py) and the
archive importer (publisher/legacy.py): one definition per construct.

Every pattern here is linear on any line (no two adjacent quantifiers can trade characters): a
100,000-character line is read in milliseconds. Titles and headings are split by code
(reader.match_title, reader.match_heading), not by a pattern.
"""

from __future__ import annotations

import re

# ---- the canonical source (reader) -------------------------------------------------------------

# `(YYYY-MM-DD)` in a title line, ASCII or full-width parentheses
TITLE_DATE_RE = re.compile(r"[（(]\s*(\d{4}-\d{1,2}-\d{1,2})\s*[)）]")
# `[2007.02269v2]` and `[CVPR2020]` prefixes of an item line
ARXIV_RE = re.compile(r"^\d{4}\.\d{4,5}(v\d+)?$")
PREFIX_RE = re.compile(r"^\[([^\[\]()]+)\](?!\()\s*")
# `owner/repo: title` and `title | source`
REPO_RE = re.compile(r"^([A-Za-z0-9][\w.\-]*/[\w.\-]+)\s*[:：]\s*(\S.*)$")
SOURCE_RE = re.compile(r"^(?P<title>.*?\S)\s*[|｜]\s*(?P<source>[^|｜]*\S)\s*$")
# an item (in a section) or a warm-up bullet (before the sections)
ITEM_RE = re.compile(r"^[-*+]\s+(.*)$")
# `摘要：` on a stripped line, with the text after it
SUMMARY_RE = re.compile(r"^摘要\s*[：:]\s*(.*)$")
# a labelled field line `标题：…`, `代码：…` (a label of at most 10 characters without punctuation)
FIELD_LABEL = r"[^\s：:，。；、,;!！?？\[\]()（）*`]{1,10}"
FIELD_RE = re.compile(rf"^(?P<label>{FIELD_LABEL})\s*[：:]\s*(?P<value>\S.*)$")
LEAD_RE = re.compile(r"^导读\s*[：:]?\s*(.*)$")
LEAD_COUNT_RE = re.compile(r"本[次期]\s*(\d+)\s*条")
LIST_LINE_RE = re.compile(r"^\s*(?:[-*+–]|\d+[.)])\s+")
FENCE_RE = re.compile(r"^\s*(```|~~~)")
FOOTER_RE = re.compile(r"^(#{1,6}\s*\[?往期回顾|-{4,}\s*$|!\[wechat_qrcode\]|<a rel=\"license\")")
# The link note is a channel convention (阅读原文 / 项目链接), never part of a source.
LINK_NOTE_RE = re.compile(r"个别链接打不开|PC端微信链接打不开")
# a link written with full-width brackets, `【title】(url)` or `[title]（url）`: Markdown sees no
# link there, so the item would be published as bracketed text with a bare URL
FULLWIDTH_LINK_RE = re.compile(r"【[^【】\n]*】\s*[(（]\s*(?:https?://|\.{0,2}/)|\[[^\[\]\n]*\]\s*（\s*(?:https?://|\.{0,2}/)")
# a line ending inside a link target: `[text](https://…` whose `)` is on the next line
UNCLOSED_LINK_RE = re.compile(r"\]\(\s*[^()\s]+\s*$")
# the tagline: a line that is all bold
TAGLINE_RE = re.compile(r"\*\*(.+?)\*\*\s*")

# ---- the published archive (importer) ----------------------------------------------------------

# The date of an archive title line `#… text (YYYY-MM-DD) …`; searched once, the rest is sliced.
ARCHIVE_TITLE_DATE_RE = re.compile(r"\(\s*(\d{4}-\d{1,2}-\d{1,2})\s*\)")
ARCHIVE_FOOTER_RE = re.compile(
    r"^(#{1,6}\s*\[?往期回顾|-{4,}\s*$|!\[wechat_qrcode\]|>\s*往期回顾|<a rel=\"license\"|- WeChat:|- Editor:|- Project:)"
)
EMPTY_LINK_RE = re.compile(r"\[([^\[\]]*)\]\(\s*\)")
FONT_NOTE_RE = re.compile(r"^<font[^>]*>(.*)</font>\s*$")
SUMMARY_NO_COLON_RE = re.compile(r"^(\s*)摘要(?![：:])\s*(\S.*)$")
EN_DASH_BULLET_RE = re.compile(r"^(\s*)[–—]\s+")
HARD_BREAK_RE = re.compile(r"( {2,}|\t|\\)$")
# lines a soft line break never runs into: a new block (list item, heading, quote, code, table)
NEW_BLOCK_RE = re.compile(r"^\s*(?:[-*+–—]\s|\d+[.)]\s|#|>|```|~~~|\||!\[)")
# a field line (`FIELD_RE` without its groups) and a 摘要 line, on an unstripped archive line
FIELD_LINE_RE = re.compile(rf"^(?P<label>{FIELD_LABEL})\s*[：:]\s*\S")
SUMMARY_LINE_RE = re.compile(r"^\s*摘要\s*[：:]")
LIST_MARKER_RE = re.compile(r"^\s*(?:[-*+–—]|\d+[.)])\s")
