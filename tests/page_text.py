"""The text of callguard's HTML report as a reader sees it, for the report's unit tests
(``tests/core/test_report.py``) and its end-to-end tests (``tests/system/test_report_e2e.py``)."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any


class Text(HTMLParser):
    """The page's text as a browser shows it (no style, no markup)."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._skip = 0

    BLOCKS = frozenset(
        [
            "p",
            "div",
            "h1",
            "h2",
            "h3",
            "table",
            "tr",
            "td",
            "th",
            "li",
            "ul",
            "dl",
            "dt",
            "dd",
            "br",
            "section",
            "header",
            "footer",
            "svg",
            "text",
            "title",
        ]
    )

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        self._skip += tag == "style"
        if tag in self.BLOCKS:
            self.parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        self._skip -= tag == "style"
        if tag in self.BLOCKS:
            self.parts.append(" ")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def text_of(page: str) -> str:
    parser = Text()
    parser.feed(page)
    return re.sub(r"\s+", " ", "".join(parser.parts))
