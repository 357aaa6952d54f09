"""WeChat themes: one CSS file each, `wechat/themes/<name>.css` ([wechat] theme), found in the
user's `[paths] templates` folder first, then beside this module. A theme is parsed once per file
content into {selector: "a:b;c:d"}, which the writer and article.html write inline."""

from __future__ import annotations

import functools
import re

import jinja2

from publisher.errors import ConfigError

THEMES = "wechat/themes/"  # a theme is THEMES + "<name>.css"
_RULE = re.compile(r"([.a-z0-9][-.a-z0-9\s,]*?)\s*\{([^}]*)\}", re.I)
# what a theme may style: the tags the writer and article.html write, and the named parts
THEME_TAGS = frozenset([
    "ul", "ol", "li", "code", "pre", "blockquote", "sup", "a", "img", "table", "th", "td", "h1", "h2", "p",
    "strong", "em", "del",
])
THEME_PARTS = frozenset([
    ".article", ".tagline", ".lead", ".intro", ".briefs", ".note", ".item", ".fields", ".refs-title", ".refs",
    ".past", ".qr", ".qr-img", ".footer", ".license", ".figure", ".caption", ".formula", ".formula-block",
    ".table-wrap",
])


def parse_styles(text: str, name: str) -> dict[str, str]:
    """`selector[, selector] { declarations }` rules (comments allowed) → {selector: "a:b;c:d"};
    a selector is a tag or a `.part` of THEME_TAGS / THEME_PARTS; a later rule adds to an earlier one."""
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    styles: dict[str, str] = {}
    for selectors, decls in _RULE.findall(text):
        body = ";".join(re.sub(r"\s*:\s*", ":", d.strip(), count=1) for d in decls.split(";") if d.strip())
        if re.search(r"[<>\"]|expression\(|url\(", body, re.I):
            raise ConfigError(f"theme {name}: {selectors.strip()} {{ {body[:60]} }}: no quotes, angle brackets, "
                              "url() or expression() in an inline style (font names need no quotes)")
        for sel in (x.strip().lower() for x in selectors.split(",")):
            if sel not in THEME_TAGS and sel not in THEME_PARTS:
                raise ConfigError(f"theme {name}: unknown selector {sel!r}; a theme styles the tags "
                                  f"{', '.join(sorted(THEME_TAGS))} and the parts {', '.join(sorted(THEME_PARTS))}")
            styles[sel] = f"{styles[sel]};{body}" if styles.get(sel) and body else (body or styles.get(sel, ""))
    leftover = _RULE.sub("", text).strip()
    if leftover:
        raise ConfigError(f"theme {name}: cannot read {leftover[:40]!r}; write rules as `selector {{ a:b;c:d }}`")
    return styles


@functools.lru_cache(maxsize=32)
def _parsed(text: str, name: str) -> tuple[tuple[str, str], ...]:
    return tuple(parse_styles(text, name).items())


def theme_names(env: jinja2.Environment) -> list[str]:
    """The themes found (the user's template folder and the built-in ones)."""
    try:
        names = env.list_templates(filter_func=lambda n: n.startswith(THEMES) and n.endswith(".css"))
    except TypeError:  # a loader that cannot list
        return []
    return sorted({n[len(THEMES):-4] for n in names if "/" not in n[len(THEMES):]})


def load_theme(env: jinja2.Environment, theme: str) -> dict[str, str]:
    """The theme's rules ([wechat] theme), read once per file content."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,40}", theme or ""):
        raise ConfigError(f"[wechat] theme = {theme!r}: a theme is a name (letters, digits, - and _), "
                          f"one of {', '.join(theme_names(env))}")
    try:
        source, filename, _ = env.loader.get_source(env, f"{THEMES}{theme}.css")
    except jinja2.TemplateNotFound:
        raise ConfigError(f"[wechat] theme = {theme!r}: no file {THEMES}{theme}.css in [paths] templates nor "
                          f"built in; themes: {', '.join(theme_names(env))}") from None
    return dict(_parsed(source, filename or theme))
