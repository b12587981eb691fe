"""The parts a report is made of. Stages outside ``safemix.report`` (capability, win rate, human evaluation)
contribute a ``Section`` each; the report renders sections to HTML and Markdown the same way."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Table:
    """A table of already formatted cells (numbers rounded, intervals written out)."""

    columns: list[str]
    rows: list[list[str]]
    caption: str = ""
    collapsed: bool = False  # HTML: behind a click (a <details> element); the terminal leaves it out
    key_columns: int = 1  # leading columns that name a row; a terminal too narrow for the table repeats them


@dataclass(frozen=True)
class Figure:
    """A PNG image (embedded in the HTML; written beside ``report.md`` and linked from it)."""

    name: str  # file stem, e.g. "harmful-compliance-vs-k"
    png: bytes
    caption: str


@dataclass(frozen=True)
class Section:
    """A titled part of the report. Paragraphs are plain text (escaped when rendered, never raw HTML)."""

    title: str
    paragraphs: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    content_warning: bool = False  # render collapsed behind a warning (example answers to harmful prompts)
