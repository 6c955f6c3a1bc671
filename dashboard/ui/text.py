"""Stored text shown on a page is plain text: a reader's name, a case id from a CSV, a concept's
description are never interpreted as markdown (links, images, colour directives, emoji codes, HTML,
LaTeX).

Pages show such values with ``st.text`` or in a dataframe; where one must sit inside a markdown line
(a caption), ``escape_markdown`` backslash-escapes what markdown reads inside a line (CommonMark
prints an escaped punctuation character literally) and what it reads at the start of one."""
from __future__ import annotations

import datetime as _dt
import re

# inline syntax: emphasis, code, links and images, HTML, LaTeX, Streamlit directives and emoji codes, tables
_INLINE = re.compile(r"([\\`*_\[\]<>$:~|{}!&])")
# block syntax, which only counts at the start of the text: headings, lists, quotes, numbered lists
_LEADING = re.compile(r"^([#>+\-=]|\d+[.)])")


def escape_markdown(text) -> str:
    """``text`` on one line, with every character markdown would interpret backslash-escaped."""
    flat = " ".join(str(text).split())
    return _LEADING.sub(lambda m: "\\" + m.group(0) if not m.group(0)[0].isdigit()
                        else m.group(0)[:-1] + "\\" + m.group(0)[-1], _INLINE.sub(r"\\\1", flat))


def human_time(value) -> str:
    """A stored timestamp (datetime or ISO text, UTC) as a reader writes it: '3 Dec 2026, 16:40 UTC'."""
    if value is None or value == "":
        return "—"
    if isinstance(value, str):
        try:
            value = _dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            return value
    if not isinstance(value, _dt.datetime):
        return str(value)
    return f"{value.day} {value:%b %Y, %H:%M} UTC"
