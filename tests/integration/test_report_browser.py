"""The report of a paper-scale run in a real browser: Playwright opens report.html in Debian's headless Chromium at
1280×800 and checks that nothing is wider than the window and that the headline shows every number it should.

The run (``tests/fake_runs.py``): nine suites, K = 0, 100, 250, 500 and 1000, three seeds per K, and the scorers
refusal-judge, refusal-strmatch and harmfulness-rm. The headline numbers are computed here from ``metrics.json``
and ``run.json``, independently of the report: for the lead refusal scorer, harmful compliance and refusal of safe
prompts per suite and K, the mean over seeds for the adapters and the one value of the base model, as
``f"{100 * value:.1f}"``, each in the cell of its suite's row and its K's column of the table a reader sees without a
click. Which scorer leads is the report's choice (``choose_lead``: the better measured agreement
with hand labels; with the shipped measurement that is refusal-strmatch), taken from it as it is. The widths are
measured with every ``<details>`` element open too (the example answers, and whatever else the report folds away),
as a reader who opens them sees them.

``make install`` installs Chromium (``apt-get install chromium``); without ``/usr/bin/chromium`` the test skips.
``SAFEMIX_UPDATE_SCREENSHOT=1`` also writes the top 2,400 px of the page (run, headline) to
``docs/report-paper-scale.png``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

from safemix.metrics import MetricRow
from safemix.report import write_report
from safemix.report.runs import load_runs
from safemix.report.scorers import choose_lead
from safemix.run_files import read_run_index
from tests.conftest import REPO_ROOT
from tests.fake_runs import PAPER_SCALE_KS, PAPER_SCALE_SCORERS, PAPER_SCALE_SUITES, build_fake_run

CHROMIUM = Path("/usr/bin/chromium")
VIEWPORT = {"width": 1280, "height": 800}
SEEDS = (0, 1, 2)
#: The headline's refusal measures: (category, metric).
HEADLINE_METRICS = {("harmful", "harmful_compliance_rate"), ("safe", "refusal_rate")}
SCREENSHOT = REPO_ROOT / "docs" / "report-paper-scale.png"
SCREENSHOT_CLIP = {"x": 0, "y": 0, "width": VIEWPORT["width"], "height": 2400}
#: Each table with its caption and section, the width of its content and the width its container gives it.
TABLE_WIDTHS = """() => Array.from(document.querySelectorAll("table")).map(table => ({
    caption: table.caption ? table.caption.innerText.trim() : "(no caption)",
    section: table.closest("section")?.querySelector("h1, h2, h3")?.innerText.trim() ?? "(no section)",
    width: table.scrollWidth,
    room: table.parentElement.clientWidth,
}))"""
HEADLINE_TABLES = """() => {
  const heading = Array.from(document.querySelectorAll("section > h2"))
      .find(h => h.textContent.trim().startsWith("Headline"));
  if (!heading) return [];
  return Array.from(heading.parentElement.querySelectorAll("table"))
      .filter(table => !table.closest("details"))
      .map(table => ({
        caption: table.caption ? table.caption.textContent : "",
        headers: Array.from(table.querySelectorAll("thead th")).map(th => th.textContent.trim()),
        rows: Array.from(table.querySelectorAll("tbody tr"))
            .map(tr => Array.from(tr.querySelectorAll("td")).map(td => td.innerText.trim())),
      }));
}"""
PAGE_WIDTH = "() => [document.documentElement.scrollWidth, window.innerWidth]"
OPEN_DETAILS = "() => document.querySelectorAll('details').forEach(details => { details.open = true; })"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_fake_run(tmp_path_factory.mktemp("paper") / "run", suites=PAPER_SCALE_SUITES, ks=PAPER_SCALE_KS,
                          scorers=PAPER_SCALE_SCORERS, seeds=SEEDS, name="paper-scale")


@pytest.fixture(scope="module")
def report_html(run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_report([run_dir], tmp_path_factory.mktemp("report"))["html"]


@pytest.fixture(scope="module")
def lead(run_dir: Path) -> str:
    """The refusal scorer the report's headline leads with."""
    scorer = choose_lead(load_runs([run_dir])).lead
    assert scorer in PAPER_SCALE_SCORERS
    return scorer


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not CHROMIUM.is_file():
        pytest.skip("no /usr/bin/chromium: 'make install' installs it (apt-get install chromium, as root)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture()
def page(browser, report_html: Path) -> Iterator[object]:
    """A fresh page at 1280×800 showing the report; it fails the test if the report opens a dialog."""
    page = browser.new_page(viewport=VIEWPORT)
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.goto(report_html.as_uri())
    try:
        yield page
    finally:
        page.close()
    assert dialogs == [], "the report ran a script"


def expected_headline_numbers(run_dir: Path, lead: str) -> dict[tuple[str, str, str], str]:
    """(metric, suite, K or 'base') -> the lead scorer's estimate as the headline must show it.

    Adapters: the mean over seeds of each seed's estimate; the base model: its one estimate.
    """
    entries = {entry.label: entry for entry in read_run_index(run_dir).models}
    estimates: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    for record in json.loads((run_dir / "metrics.json").read_text(encoding="utf-8")):
        row = MetricRow(**record)
        if row.scorer == lead and (row.category, row.metric) in HEADLINE_METRICS:
            assert row.estimate is not None
            k = entries[row.model].k
            estimates[(row.metric, row.suite, "base" if k is None else str(k))].append(row.estimate)
    for (_, _, k), values in estimates.items():
        assert len(values) == (1 if k == "base" else len(SEEDS))
    return {key: f"{100 * sum(values) / len(values):.1f}" for key, values in estimates.items()}


def headline_cells(page) -> dict[tuple[str, str, str], str]:
    """(caption's first word, suite row, column header) -> cell text, for every table of the Headline section that
    a reader sees without a click (not inside a closed ``<details>``)."""
    cells: dict[tuple[str, str, str], str] = {}
    for table in page.evaluate(HEADLINE_TABLES):
        for row in table["rows"]:
            for header, text in zip(table["headers"], row):
                cells[(table["caption"].split(" ")[0], row[0], header)] = text
    return cells


def page_width(page) -> tuple[int, int]:
    """(the document's scroll width, the window's inner width) in CSS pixels."""
    scroll_width, inner_width = page.evaluate(PAGE_WIDTH)
    return scroll_width, inner_width


def overflowing_tables(page) -> list[str]:
    """Each table whose content is wider than its container (1 px of rounding allowed), described for a reader."""
    return [f"{t['section']} / {t['caption']}: {t['width']} px in {t['room']} px"
            for t in page.evaluate(TABLE_WIDTHS) if t["width"] > t["room"] + 1]


def test_the_page_is_no_wider_than_the_window(page, tmp_path: Path) -> None:
    page.screenshot(path=str(tmp_path / "report.png"), full_page=True, clip=SCREENSHOT_CLIP)
    closed = page_width(page)
    page.evaluate(OPEN_DETAILS)
    opened = page_width(page)
    assert closed[0] <= closed[1], f"page {closed[0]} px wide in a {closed[1]} px window"
    assert opened[0] <= opened[1], f"with every <details> open, page {opened[0]} px wide in a {opened[1]} px window"

    if os.environ.get("SAFEMIX_UPDATE_SCREENSHOT"):
        shutil.copyfile(tmp_path / "report.png", SCREENSHOT)


def test_no_table_is_wider_than_its_container(page) -> None:
    page.evaluate(OPEN_DETAILS)  # the folded tables too, as a reader who opens them sees them
    assert page.locator("table").count() > 0
    overflowing = overflowing_tables(page)
    assert overflowing == [], f"{len(overflowing)} tables overflow:\n" + "\n".join(overflowing)


CAPTION_WORD = {"harmful_compliance_rate": "Harmful", "refusal_rate": "Refusal"}


def test_the_headline_shows_every_lead_number_in_its_suite_row_and_k_column(page, run_dir: Path, lead: str) -> None:
    expected = expected_headline_numbers(run_dir, lead)
    assert len(expected) == (len(PAPER_SCALE_KS) + 1) * 9  # 7 harmful and 2 safe (suite, category) groups
    cells = headline_cells(page)
    missing = []
    for (metric, suite, k), number in sorted(expected.items()):
        cell = cells.get((CAPTION_WORD[metric], suite, "base" if k == "base" else f"K={k}"), "")
        if not re.match(rf"{re.escape(number)}(?!\d)", cell):
            missing.append(f"{metric} {suite} K={k}: {number}, the cell reads {cell!r}")
    assert missing == [], (f"{len(missing)} of {len(expected)} headline numbers of {lead} are missing:\n"
                           + "\n".join(missing))


def test_the_hostile_answer_runs_no_script(page) -> None:
    page.evaluate(OPEN_DETAILS)
    assert page.evaluate("() => document.querySelectorAll('script').length") == 0
