"""Text from results files (run names, suite names, flags, stimuli sources, a report's title) written
into Markdown so that a viewer shows it as typed: no raw HTML (``<script>``, ``<img onerror=...>``), no
links or images, no emphasis, and no ``|`` that splits a table row. The HTML page escapes the same text
with :func:`html.escape`; this is the Markdown twin of that.

CommonMark lets a backslash escape any ASCII punctuation, and renders ``&lt;`` as ``<``; both are used
only where the character could mean something, so plain names stay readable in the ``.md`` file.
"""

from __future__ import annotations

import re

_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}       # raw HTML, autolinks, block quotes
_ESCAPED = set("\\`*[]|~")                                 # code, emphasis, links and images, tables, strikethrough
_LOOSE_UNDERSCORE = re.compile(r"(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")   # an _ that may open or close emphasis
_BLOCK_START = re.compile(r"^(\s*)([#+=-]|\d+(?=[.)]))")  # a heading, list, or setext underline at a line's start


def _one(c: str) -> str:
    if c in _ENTITIES:
        return _ENTITIES[c]
    return "\\" + c if c in _ESCAPED else c


def inline(value: object) -> str:
    """``value`` as text inside a line: a table cell, a caption, an image's alt text."""
    text = " ".join(str(value).split())               # a newline would end the table row or the paragraph
    text = "".join(_one(c) for c in text)
    return _LOOSE_UNDERSCORE.sub(r"\\_", text)


def paragraph(value: object) -> str:
    """``value`` as a paragraph of its own: inline, and not taken for a heading or a list item."""
    text = inline(value)
    match = _BLOCK_START.match(text)
    if not match:
        return text
    lead, mark = match.groups()
    if mark.isdigit():                                  # "1. " starts an ordered list: escape the dot
        end = len(lead) + len(mark)
        return f"{text[:end]}\\{text[end:]}"
    return f"{lead}\\{text[len(lead):]}"
