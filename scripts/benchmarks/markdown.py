"""Markdown tables and the rewrite of the generated section of a Markdown file."""

from __future__ import annotations

import os
import tempfile
from typing import Sequence

BEGIN_MARKER = "<!-- benchmark.py:begin -->"
END_MARKER = "<!-- benchmark.py:end -->"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Return a Markdown table; numbers right-aligned, everything else left-aligned."""
    aligns = []
    for column in range(len(headers)):
        numeric = rows and all(isinstance(row[column], (int, float)) for row in rows)
        aligns.append("---:" if numeric else "---")
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(aligns) + " |"]
    for row in rows:
        lines.append("| " + " | ".join(format_cell(value) for value in row) + " |")
    return "\n".join(lines)


def format_cell(value: object) -> str:
    if isinstance(value, bool) or value is None:
        return {True: "yes", False: "no", None: ""}[value]
    if isinstance(value, float):
        return format_number(value)
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def format_number(value: float) -> str:
    """Format with about three significant digits, and no exponent below a million."""
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def replace_generated_section(path: str, body: str) -> None:
    """Replace the text between the two markers of `path` with `body`.

    A file without the markers gets them, with `body` between, at its end; a file
    that does not exist is created. Everything outside the markers is kept byte for
    byte. The file is written to a temporary file and renamed, so a crash leaves
    the old contents.
    """
    text = ""
    if os.path.exists(path):
        with open(path, encoding="utf-8") as file:
            text = file.read()

    begin_count, end_count = text.count(BEGIN_MARKER), text.count(END_MARKER)
    if begin_count == 0 and end_count == 0:
        # One blank line between the existing text and the new section.
        if not text or text.endswith("\n\n"):
            separator = ""
        elif text.endswith("\n"):
            separator = "\n"
        else:
            separator = "\n\n"
        text = text + separator + BEGIN_MARKER + "\n" + END_MARKER + "\n"
    elif begin_count != 1 or end_count != 1 or text.index(BEGIN_MARKER) > text.index(END_MARKER):
        raise ValueError(
            f"{path} must contain the line {BEGIN_MARKER} once, followed by {END_MARKER} "
            f"once; found {begin_count} and {end_count}. Fix the markers by hand: the "
            "script rewrites only the text between them."
        )

    start = text.index(BEGIN_MARKER) + len(BEGIN_MARKER)
    end = text.index(END_MARKER)
    updated = text[:start] + "\n" + body.strip("\n") + "\n" + text[end:]

    directory = os.path.dirname(os.path.abspath(path))
    descriptor, temporary = tempfile.mkstemp(prefix=".benchmarks-", suffix=".md", dir=directory)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(updated)
        # mkstemp creates the file readable by its owner only; keep the old mode.
        os.chmod(temporary, os.stat(path).st_mode & 0o777 if os.path.exists(path) else 0o644)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise
