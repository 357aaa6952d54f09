"""A hostile corpus: issue sources with raw HTML and Liquid in every field, dangerous links,
traversal paths, YAML bombs and pathological lines. Built in code, never copied from the web."""

from __future__ import annotations

import textwrap

# Markup a Markdown engine or a browser would run if it reached a reader as markup.
PAYLOADS = (
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(2)>",
    "<svg onload=alert(3)>",
    '<iframe src="javascript:alert(4)"></iframe>',
    "<a href=javascript:alert(5)>x</a>",
    "{{ site.github.token }}",
    "{% raw %}",
    "{%- include evil.html -%}",
    "<!-- comment",
    "<details open ontoggle=alert(6)>",
)

# Link targets every channel must refuse (and the reader refuses with the line).
DANGEROUS_LINKS = (
    "javascript:alert(1)", "JAVASCRIPT:alert(1)", " javascript:alert(1)", "java\tscript:alert(1)",
    "java\nscript:alert(1)", "java&#x09;script:alert(1)", "&#106;avascript:alert(1)",
    "javascript&colon;alert(1)", "%6Aavascript:alert(1)", "jav%0Aascript:alert(1)",
    "\x01javascript:alert(1)", "vbscript:msgbox(1)", "VBScript:msgbox(1)",
    "data:text/html,<script>alert(1)</script>", "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==",
    "DATA:image/svg+xml,<svg onload=alert(1)>", "file:///etc/passwd", "FILE:///etc/passwd",
    "jar:http://x.org/a.jar!/", "view-source:http://x.org", "ms-its:x.chm::/a.htm", "livescript:alert(1)",
    "mocha:alert(1)", "javascript:/*http://x.org*/alert(1)", "&#0000106;avascript:alert(1)",
    "&#x6A;avascript:alert(1)", "blob:http://x.org/uuid",
)

TRAVERSAL = ("../../../../etc/passwd", "/etc/passwd", "images/../../outside.png", "images/../../../etc/passwd")


def hostile_source(date: str = "2026-11-23") -> str:
    """One issue with a payload in every field a source has: title, tagline, 导读, notes,
    warm-up, section name, item title, source, venue, fields, summary, lists, quotes."""
    p = PAYLOADS
    summary_list = "\n".join(f"  - 列表{k} {x}" for k, x in enumerate(p))
    items = "\n".join(
        f"- [{x} 标题{k} | 来源{x}](https://example.com/{k})\n"
        f"标题：{x}\n代码：https://github.com/o/r{k}\n"
        f"摘要：摘要{k} {x} **粗{x}** *斜{x}* `码{x}` [链{x}](https://example.org/{k})。\n"
        f"第二段 {x}\n"
        for k, x in enumerate(p)
    )
    return textwrap.dedent(
        f"""\
        ---
        date: {date}
        status: draft
        digest: "摘要{p[0]}{p[5]}"
        author: "作者{p[1]}{p[6]}"
        tagline: "口号{p[2]}{p[5]}"
        topics: ["主题{p[0]}", "{p[5]}"]
        license: {{name: "许可{p[0]}{p[5]}", url: "https://example.org/license", badge: "https://example.org/b.png"}}
        ---

        # 嵌入式AI简报 ({date})：主题{p[3]}/{p[5]}

        > 导读：本期{len(p)}条。{p[0]} {p[5]}
        「论文」{p[1]} {p[6]}

        > 注：说明 {p[2]} {p[7]}

        热身 {p[3]} {p[5]}：

        """
    ) + "\n".join(f"- 热身{k} {x}" for k, x in enumerate(p)) + textwrap.dedent(
        f"""

        ## 业界{p[0]}{p[5]}

        > 注：本节 {p[4]} {p[6]}

        """
    ) + items + f"摘要：带列表 {p[8]}\n{summary_list}\n> 引用 {p[9]} {p[5]}\n"


def source_with_image(ref: str, date: str = "2026-11-23", cover: str | None = None) -> str:
    front = f"cover: {cover}\n" if cover else ""
    return (f"---\ndate: {date}\n{front}---\n\n# 嵌入式AI简报 ({date})：图\n\n## 论文\n\n"
            f"- [标题 | 来源](https://example.com/a)\n摘要：看图。\n![图]({ref})\n")


def bomb(key: str = "author", depth: int = 9) -> str:
    """A YAML 'billion laughs' under `key`: 10**depth strings from a few hundred bytes."""
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for k in range(1, depth):
        lines.append(f"a{k}: &a{k} [" + ",".join([f"*a{k - 1}"] * 10) + "]")
    lines.append(f"{key}: *a{depth - 1}")
    return "---\n" + "\n".join(lines) + "\n---\n\n# 嵌入式AI简报 (2026-11-23)\n\n## 论文\n\n- [t](https://x.org)\n"
