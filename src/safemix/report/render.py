"""Sections to text: one self-contained HTML page and a Markdown page.

Every piece of text is escaped: answers to harmful prompts can hold markup meant to run (``<script>``), which
must show as text. The HTML has inline CSS, images embedded as base64 PNG, no scripts and no outside resource;
a section with a content warning sits in a collapsed ``<details>`` element, which needs no JavaScript.
"""

from __future__ import annotations

import base64
import html
import re
import textwrap

from safemix.report.sections import Figure, Section, Table

FILES_DIR = "report_files"
WARNING = "Content warning: model answers to harmful prompts, shown as written. Open to read."
FIGURE_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")
CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; max-width: 1240px; margin: 2em auto;
       padding: 0 1em; color: #1f2328; line-height: 1.45; }
h1 { font-size: 1.7em; margin-bottom: .2em; }
h2 { border-bottom: 1px solid #d0d7de; padding-bottom: .2em; margin-top: 2em; }
nav ol { columns: 2; font-size: .95em; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; margin: .6em 0 1.4em; font-size: .88em; }
caption { caption-side: top; text-align: left; font-weight: 600; padding: .3em 0; }
th, td { border: 1px solid #d0d7de; padding: .3em .6em; text-align: left; vertical-align: top; }
th { background: #f6f8fa; }
td { white-space: pre-wrap; overflow-wrap: anywhere; }
td.num { white-space: nowrap; }
details.more { border: none; background: none; padding: 0; margin: .2em 0 .8em; }
details.more summary { font-weight: normal; color: #0969da; }
figure { margin: 1.2em 0; }
img { max-width: 100%; height: auto; }
figcaption { color: #57606a; font-size: .9em; }
details { border: 1px solid #d4a72c; background: #fff8c5; padding: .4em 1em; border-radius: 6px; }
summary { cursor: pointer; font-weight: 600; }
""".strip()


def check_figure_names(sections: list[Section]) -> list[Figure]:
    """All figures, whose names must be distinct file stems (they become ``report_files/<name>.png``)."""
    figures = [figure for section in sections for figure in section.figures]
    names = [figure.name for figure in figures]
    for name in names:
        if not FIGURE_NAME.fullmatch(name) or names.count(name) > 1:
            raise ValueError(f"figure name {name!r} must be unique and match {FIGURE_NAME.pattern}")
    return figures


# HTML


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def render_html(title: str, sections: list[Section]) -> str:
    """One HTML page holding every section, its tables and its figures (PNG as data URIs)."""
    toc = "".join(f'<li><a href="#section-{n}">{_e(s.title)}</a></li>' for n, s in enumerate(sections, 1))
    body = "\n".join(_html_section(section, f"section-{n}") for n, section in enumerate(sections, 1))
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_e(title)}</title>\n<style>\n{CSS}\n</style>\n</head>\n<body>\n"
        f"<h1>{_e(title)}</h1>\n<nav><ol>{toc}</ol></nav>\n{body}\n</body>\n</html>\n"
    )


def _html_section(section: Section, anchor: str) -> str:
    parts = [f"<p>{_e(text)}</p>" for text in section.paragraphs]
    parts += [_html_table(table) for table in section.tables]
    parts += [_html_figure(figure) for figure in section.figures]
    content = "\n".join(parts)
    if section.content_warning:
        content = f"<details>\n<summary>{_e(WARNING)}</summary>\n{content}\n</details>"
    return f'<section id="{anchor}">\n<h2>{_e(section.title)}</h2>\n{content}\n</section>'


def _html_table(table: Table) -> str:
    """A table in a horizontally scrolling box; a collapsed one behind a ``<details>`` summary holding its caption."""
    caption = f"<caption>{_e(table.caption)}</caption>" if table.caption and not table.collapsed else ""
    head = "".join(f"<th>{_e(column)}</th>" for column in table.columns)
    rows = "".join("<tr>" + "".join(_html_cell(cell) for cell in row) + "</tr>\n" for row in table.rows)
    box = (f'<div class="scroll"><table>{caption}\n<thead><tr>{head}</tr></thead>\n'
           f"<tbody>\n{rows}</tbody></table></div>")
    if table.collapsed:
        return f'<details class="more"><summary>{_e(table.caption or "more")}</summary>\n{box}\n</details>'
    return box


NUMBER = re.compile(r"[0-9.,%+-]+")


def _html_cell(cell: str) -> str:
    """A cell; a bare number never breaks across lines (long text may break anywhere to fit the page)."""
    return f'<td class="num">{_e(cell)}</td>' if NUMBER.fullmatch(cell) else f"<td>{_e(cell)}</td>"


def _html_figure(figure: Figure) -> str:
    data = base64.b64encode(figure.png).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{_e(figure.caption)}">'
            f"<figcaption>{_e(figure.caption)}</figcaption></figure>")


# Markdown


def _md(text: str) -> str:
    """Escape markup (HTML, links, emphasis, table pipes) so the text renders as written, on one line."""
    escaped = re.sub(r"([\\`*_\[\]|#])", r"\\\1", html.escape(text, quote=False))
    return escaped.replace("\r\n", "\n").replace("\n", "<br>")


def render_markdown(title: str, sections: list[Section]) -> str:
    """A Markdown page with the same content; figures link to ``report_files/<name>.png``."""
    parts = [f"# {_md(title)}"]
    for section in sections:
        parts.append(f"## {_md(section.title)}")
        body = [_md(text) for text in section.paragraphs]
        body += [_md_table(table) for table in section.tables]
        body += [f"![{_md(f.caption)}]({FILES_DIR}/{f.name}.png)\n\n*{_md(f.caption)}*" for f in section.figures]
        if section.content_warning:
            body = [f"<details>\n<summary>{_e(WARNING)}</summary>", *body, "</details>"]
        parts += body
    return "\n\n".join(parts) + "\n"


def _md_table(table: Table) -> str:
    lines = [f"**{_md(table.caption)}**", ""] if table.caption else []
    lines.append("| " + " | ".join(_md(column) for column in table.columns) + " |")
    lines.append("|" + "---|" * len(table.columns))
    lines += ["| " + " | ".join(_md(cell) for cell in row) + " |" for row in table.rows]
    return "\n".join(lines)


TERMINAL_COLUMNS = 120
COLUMN_GAP = "  "


def render_text(section: Section, width: int = TERMINAL_COLUMNS) -> str:
    """A section's paragraphs and open tables as plain text for a terminal (figures and collapsed tables left out).

    Paragraphs wrap at ``width``; columns are aligned, and a table wider than ``width`` is cut into blocks of
    columns, each repeating the columns that name a row (``Table.key_columns``).
    """
    parts = [section.title, *(textwrap.fill(paragraph, width) for paragraph in section.paragraphs)]
    for table in section.tables:
        if not table.collapsed:
            parts.append(_text_table(table, width))
    collapsed = sum(table.collapsed for table in section.tables)
    if collapsed:
        parts.append(f"({collapsed} more tables, such as other scorers' numbers, in report.html and report.md)")
    return "\n\n".join(parts) + "\n"


def _text_table(table: Table, width: int) -> str:
    """The table as aligned text lines, in blocks of columns no wider than ``width`` (blocks apart by a blank line)."""
    widths = [max(len(cell) for cell in column) for column in zip(table.columns, *table.rows)]
    keys = list(range(min(table.key_columns, len(widths))))
    key_width = sum(widths[i] + len(COLUMN_GAP) for i in keys)
    blocks: list[list[int]] = [[]]
    for number in range(len(keys), len(widths)):
        block_width = key_width + sum(widths[i] + len(COLUMN_GAP) for i in blocks[-1])
        if blocks[-1] and block_width + widths[number] > width:
            blocks.append([])
        blocks[-1].append(number)
    texts = []
    for block in blocks:
        chosen = keys + block
        texts.append("\n".join(COLUMN_GAP.join(row[i].ljust(widths[i]) for i in chosen).rstrip()
                               for row in [table.columns, *table.rows]))
    caption = f"{textwrap.fill(table.caption, width)}\n" if table.caption else ""
    return caption + "\n\n".join(texts)
