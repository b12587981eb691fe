"""``write_report``: read the runs, build the sections (the report's own, then each provider's), write the files."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from pathlib import Path

from safemix.files import write_dir_atomic, write_text_atomic
from safemix.report.content import own_sections
from safemix.report.render import FILES_DIR, check_figure_names, render_html, render_markdown
from safemix.report.runs import Runs, load_runs
from safemix.report.sections import Section
from safemix.report.summary import summary_csv

log = logging.getLogger(__name__)

# Sections contributed by other stages: "module:function" with signature (run_dirs: list[Path]) -> Section | None
# (None when the runs hold nothing for it). Imported only when a report is written. Add yours with one line.
SECTION_PROVIDERS: list[str] = [
    "safemix.report.capability:capability_section",
    "safemix.report.winrate:winrate_section",
    "safemix.report.forms:format_section",
    "safemix.report.forms:opinion_section",
    "safemix.annotate.report:human_evaluation_section",
]


def provider_sections(run_dirs: list[Path]) -> list[Section]:
    """Call every provider in ``SECTION_PROVIDERS`` order and keep the sections they return."""
    sections = []
    for target in SECTION_PROVIDERS:
        module_name, _, function_name = target.partition(":")
        provider: Callable[[list[Path]], Section | None] = getattr(importlib.import_module(module_name), function_name)
        section = provider(run_dirs)
        if section is not None:
            sections.append(section)
    return sections


def report_title(runs: Runs) -> str:
    """``safemix report: NAME`` (names joined when there are several runs)."""
    return "safemix report: " + ", ".join(run.index.name for run in runs.runs)


def write_report(run_dirs: list[Path], out_dir: Path) -> dict[str, Path]:
    """Write ``summary.csv``, ``report.md``, ``report.html`` and ``report_files/*.png`` for one or more runs.

    Same files in, same bytes out. Every file is written atomically, and ``report_files/`` is replaced whole so
    no plot of an earlier report lingers.

    Args:
        run_dirs: run directories of ``safemix run`` (each holding ``run.json``).
        out_dir: where the report goes (created if missing).

    Returns:
        The written paths by role: ``summary``, ``markdown``, ``html``, ``figures`` (the PNG directory).

    Raises:
        InputError: a path is not a run directory, or a metrics file is malformed or names an unknown model.
    """
    runs = load_runs(run_dirs)
    sections = own_sections(runs) + provider_sections([Path(run_dir) for run_dir in run_dirs])
    figures = check_figure_names(sections)
    title = report_title(runs)
    out_dir = Path(out_dir)
    paths = {"summary": out_dir / "summary.csv", "markdown": out_dir / "report.md", "html": out_dir / "report.html",
             "figures": out_dir / FILES_DIR}

    def write_figures(tmp_dir: Path) -> None:
        for figure in figures:
            (tmp_dir / f"{figure.name}.png").write_bytes(figure.png)

    write_dir_atomic(paths["figures"], write_figures)
    write_text_atomic(paths["markdown"], render_markdown(title, sections))
    write_text_atomic(paths["html"], render_html(title, sections))
    write_text_atomic(paths["summary"], summary_csv(runs.rows))
    log.info("wrote %s (%d sections, %d plots) and %s", paths["html"], len(sections), len(figures), paths["summary"])
    return paths
