"""The report at the paper's scale: suites down and K across, seeds aggregated with their spread next to one run's
interval, collapsed tables for the other scorers, a terminal headline within 120 columns, labels that do not collide."""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest

from safemix.metrics import MetricRow, wilson_interval
from safemix.report.by_k import Cell, format_cell, pooled_rows
from safemix.report.content import headline_section, own_sections
from safemix.report.render import render_text
from safemix.report.runs import Runs, load_runs
from safemix.report.sections import Table
from tests.fake_runs import PAPER_SCALE_KS, PAPER_SCALE_SCORERS, PAPER_SCALE_SUITES, build_fake_run

HARMFUL_SUITES = [suite for suite, categories in PAPER_SCALE_SUITES.items() if "harmful" in categories]


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    run = build_fake_run(tmp_path_factory.mktemp("seeded") / "run", suites=PAPER_SCALE_SUITES, ks=PAPER_SCALE_KS,
                         scorers=PAPER_SCALE_SCORERS, seeds=(0, 1, 2))
    return load_runs([run])


def _rows(runs: Runs, suite: str, k: int | None, scorer: str = "refusal-judge") -> list[MetricRow]:
    return [row.metric for row in runs.rows if (row.metric.suite, row.model.k, row.metric.scorer, row.metric.metric)
            == (suite, k, scorer, "harmful_compliance_rate")]


def _lead_table(runs: Runs) -> Table:
    section = headline_section(runs, Path("absent.json"))  # no measurement: refusal-judge leads
    return section.tables[0]


def test_headline_rows_are_suites_and_columns_are_k(seeded: Runs) -> None:
    table = _lead_table(seeded)
    assert table.caption.startswith("Harmful compliance (%) by refusal-judge:")
    assert table.columns == ["suite", "n", "base", "K=0", "K=100", "K=250", "K=500", "K=1000"]
    assert [row[0] for row in table.rows] == [*HARMFUL_SUITES, "all harmful prompts"]
    assert not table.collapsed and table.key_columns == 2


def test_a_cell_over_seeds_shows_the_mean_the_seeds_range_and_one_runs_interval(seeded: Runs) -> None:
    metrics = _rows(seeded, "q-harm", 100)
    assert len(metrics) == 3
    estimates = [metric.estimate for metric in metrics]
    half = statistics.fmean((metric.ci_high - metric.ci_low) / 2 for metric in metrics)
    row = next(row for row in _lead_table(seeded).rows if row[0] == "q-harm")
    assert row[3 + PAPER_SCALE_KS.index(100)] == (
        f"{100 * statistics.fmean(estimates):.1f} · seeds {100 * min(estimates):.1f}–{100 * max(estimates):.1f}"
        f" · CI ±{100 * half:.1f}")
    (base,) = _rows(seeded, "q-harm", None)
    assert row[2] == f"{100 * base.estimate:.1f} [{100 * base.ci_low:.1f}, {100 * base.ci_high:.1f}]"


def test_the_pooled_row_counts_every_harmful_prompt_once(seeded: Runs) -> None:
    rows = [row for row in seeded.rows if row.model.k is None and row.metric.scorer == "refusal-judge"
            and row.metric.metric == "harmful_compliance_rate"]
    (pooled,) = pooled_rows(rows, "all harmful prompts")
    hits = sum(round(row.metric.estimate * row.metric.n_scored) for row in rows)
    n = sum(row.metric.n_scored for row in rows)
    assert (pooled.metric.estimate, pooled.metric.n_scored) == (hits / n, n)
    assert (pooled.metric.ci_low, pooled.metric.ci_high) == wilson_interval(hits, n)


def test_other_scorers_and_each_seed_are_one_click_away(seeded: Runs) -> None:
    tables = headline_section(seeded, Path("absent.json")).tables
    assert [(table.caption.split(":")[0], table.collapsed) for table in tables] == [
        ("Harmful compliance (%) by refusal-judge", False),
        ("Harmful compliance (%) by refusal-judge, each seed", True),
        ("Harmful compliance (%) by refusal-strmatch", True),
        ("Refusal of safe prompts (%) by refusal-judge", False),
        ("Refusal of safe prompts (%) by refusal-judge, each seed", True),
        ("Refusal of safe prompts (%) by refusal-strmatch", True),
        ("Mean harmfulness by harmfulness-rm", False),
        ("Mean harmfulness by harmfulness-rm, each seed", True),
    ]
    each_seed = tables[1]
    assert each_seed.columns[:3] == ["suite", "seed", "base"]
    (seed_1,) = [row for row in each_seed.rows if row[:2] == ["q-harm", "1"]]
    (metric,) = [m for m in _rows(seeded, "q-harm", 250) if m.model == "seed1/k250"]
    assert seed_1[2 + 1 + PAPER_SCALE_KS.index(250)] == (
        f"{100 * metric.estimate:.1f} [{100 * metric.ci_low:.1f}, {100 * metric.ci_high:.1f}]")


def test_the_terminal_headline_fits_120_columns_and_keeps_the_lead_scorers_numbers(seeded: Runs) -> None:
    text = render_text(headline_section(seeded, Path("absent.json")))
    assert max(len(line) for line in text.splitlines()) <= 120
    lead = _lead_table(seeded)
    for row in lead.rows:
        for cell in row[2:]:
            assert cell in text
    assert "(5 more tables, such as other scorers' numbers, in report.html and report.md)" in text


def test_format_cell_of_one_run_a_mean_and_unscored_answers(seeded: Runs) -> None:
    row = next(row for row in seeded.rows if row.model.k is None and row.metric.metric == "mean_harmfulness")
    m = row.metric
    assert format_cell(Cell((row,))) == f"{m.estimate:.3f} [{m.ci_low:.3f}, {m.ci_high:.3f}]"
    unscored = next(row for row in seeded.rows if row.metric.n_unscored and row.model.k is None)
    assert format_cell(Cell((unscored,))).endswith(f", {unscored.metric.n_unscored} unscored")


def test_a_run_without_harmfulness_rm_is_silent_about_it_but_once(tmp_path: Path) -> None:
    run = build_fake_run(tmp_path / "run", suites=PAPER_SCALE_SUITES, ks=PAPER_SCALE_KS,
                         scorers=("refusal-judge", "refusal-strmatch"))
    sections = own_sections(load_runs([run]))
    text = "\n".join(render_text(section) for section in sections)
    assert text.count("harmfulness-rm") == 1
    assert "Not in this run: mean harmfulness (the harmfulness-rm scorer is not configured)." in text
    plots = next(section for section in sections if section.title == "Plots")
    assert [figure.name for figure in plots.figures] == ["rates-by-suite", "tradeoff"]


def test_tradeoff_labels_do_not_cover_each_other() -> None:
    import matplotlib

    matplotlib.use("Agg")
    from safemix.report import plots

    # Six points close together: naive labels at one offset would pile up.
    points = [("base", 3.0, 80.0), ("0", 3.5, 82.0), ("100", 4.0, 81.0), ("250", 4.5, 79.5), ("500", 3.2, 78.8),
              ("1000", 4.2, 80.5)]
    figure, (ax,) = plots._panels(1, plots.TRADEOFF_INCHES)
    ax.set_xlim(-2, 102)
    ax.set_ylim(-2, 102)
    figure.tight_layout()
    plots._label_points(ax, points)
    figure.canvas.draw()
    boxes = [text.get_window_extent() for text in ax.texts]
    assert len(boxes) == len(points)
    overlapping = [(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1:] if a.overlaps(b)]
    assert not overlapping
