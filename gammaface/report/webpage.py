"""A Markdown report as one self-contained HTML page: the tables rendered, every image it names
embedded as a data URI, so the page can be opened, mailed or logged without its folder."""

from __future__ import annotations

import base64
import html
import re
from typing import Callable

from markdown_it import MarkdownIt

_STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
line-height:1.45;color:#222}table{border-collapse:collapse;font-size:.85em;margin:.5em 0}
th,td{border:1px solid #ccc;padding:.2em .5em;text-align:right}th{background:#f3f3f3}
td:first-child,th:first-child{text-align:left}img{max-width:100%}code{background:#f3f3f3}"""

_IMG = re.compile(r'<img src="([^"]+)"')


def render(markdown: str, title: str, read: Callable[[str], bytes | None]) -> str:
    """The page for `markdown`; `read(name)` gives the bytes of an image it names (None: left
    as a link, which the caller reports)."""
    body = MarkdownIt("commonmark").enable("table").render(markdown)

    def embed(match: re.Match[str]) -> str:
        name = html.unescape(match.group(1))
        data = read(name)
        if data is None:
            return match.group(0)
        kind = "svg+xml" if name.endswith(".svg") else "png"
        return f'<img src="data:image/{kind};base64,{base64.b64encode(data).decode()}"'

    body = _IMG.sub(embed, body)
    return (f"<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>\n"
            f"<body>\n{body}</body></html>\n")


def missing_images(page: str) -> list[str]:
    """The images a page still names by file instead of holding."""
    return [m for m in _IMG.findall(page) if not m.startswith("data:")]
