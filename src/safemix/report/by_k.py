"""Numbers by K, laid out like the paper's figures: one row per suite, one column per K (the base model first).

A *cell* is one metric of one model name at one K: a metric row per seed (one row for the base model, which has
no seed). With one seed a cell reads ``23.3 [14.4, 35.4]`` (estimate and Wilson 95% interval, in percent for a
rate); with several it reads ``23.3 · seeds 20.0–26.7 · CI ±10.5``: the mean over seeds, the lowest and highest
seed, and the mean half-width of one seed's interval, so a reader sees at once whether the seeds differ by more
than one run's sampling error. No torch, no matplotlib.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, replace
from statistics import fmean

from safemix.metrics import MetricRow, wilson_interval
from safemix.report.runs import Model, Row
from safemix.report.sections import Table

NO_VALUE = "–"


@dataclass(frozen=True)
class Cell:
    """One metric of one (model name, K): its rows, one per seed."""

    rows: tuple[Row, ...]

    @property
    def scored(self) -> list[Row]:
        """The rows with an estimate."""
        return [row for row in self.rows if row.metric.estimate is not None]

    @property
    def estimates(self) -> list[float]:
        """Each scored seed's estimate."""
        return [value for row in self.rows if (value := row.metric.estimate) is not None]

    @property
    def estimate(self) -> float | None:
        """The mean of the seeds' estimates (the estimate itself for one seed)."""
        return fmean(self.estimates) if self.estimates else None

    @property
    def seed_range(self) -> tuple[float, float] | None:
        """The lowest and highest seed's estimate; None with fewer than two scored seeds."""
        values = self.estimates
        return (min(values), max(values)) if len(values) > 1 else None

    @property
    def intervals(self) -> list[tuple[float, float]]:
        """Each scored seed's 95% interval, where it has one."""
        return [(low, high) for row in self.scored
                if (low := row.metric.ci_low) is not None and (high := row.metric.ci_high) is not None]

    @property
    def interval_half_width(self) -> float | None:
        """The mean half-width of the seeds' 95% intervals (None when no row has one)."""
        widths = [(high - low) / 2 for low, high in self.intervals]
        return fmean(widths) if widths else None

    @property
    def n_prompts(self) -> int:
        """Prompts behind one seed's estimate, scored or not (the largest over seeds)."""
        return max(row.metric.n_scored + row.metric.n_unscored for row in self.rows)

    @property
    def n_unscored(self) -> int:
        """Answers no seed's scorer could judge, summed over seeds."""
        return sum(row.metric.n_unscored for row in self.rows)


def scale_of(metric: str) -> float:
    """Rates are shown in percent, means as they are."""
    return 100.0 if metric.endswith("_rate") else 1.0


def format_cell(cell: Cell) -> str:
    """``23.3 [14.4, 35.4]`` for one run, ``23.3 · seeds 20.0–26.7 · CI ±10.5`` over seeds, plus unscored answers."""
    unscored = f", {cell.n_unscored} unscored" if cell.n_unscored else ""
    estimate = cell.estimate
    if estimate is None:
        return NO_VALUE + unscored
    metric = cell.rows[0].metric
    scale = scale_of(metric.metric)
    digits = "{:.1f}" if scale == 100.0 else "{:.3f}"
    text = digits.format(scale * estimate)
    seeds = cell.seed_range
    if seeds is None:
        row = cell.scored[0].metric
        if row.ci_low is not None and row.ci_high is not None:
            text += f" [{digits.format(scale * row.ci_low)}, {digits.format(scale * row.ci_high)}]"
    else:
        dash = "–" if seeds[0] >= 0 else " to "  # "-0.145–-0.005" would read as a subtraction
        text += f" · seeds {digits.format(scale * seeds[0])}{dash}{digits.format(scale * seeds[1])}"
        half = cell.interval_half_width
        text += f" · CI ±{digits.format(scale * half)}" if half is not None else ""
    return text + unscored


def k_header(k: int | None) -> str:
    """``base`` or ``K=300``."""
    return "base" if k is None else f"K={k}"


def group_cells(rows: list[Row]) -> dict[tuple[str, str, str, int | None], Cell]:
    """Rows of one metric grouped by (suite, model name, scorer, K); a cell's rows sort by seed."""
    groups: dict[tuple[str, str, str, int | None], list[Row]] = defaultdict(list)
    for row in rows:
        groups[(row.metric.suite, row.model.name, row.metric.scorer, row.model.k)].append(row)
    return {key: Cell(tuple(sorted(group, key=lambda row: row.model.entry.seed or 0))) for key, group in groups.items()}


def cell_order(key: tuple[str, str, str, int | None]) -> tuple[str, str, str, int]:
    """Sort key of a cell key: suite, model name, scorer, then the base model before every K."""
    suite, name, scorer, k = key
    return suite, name, scorer, -1 if k is None else k


def several_seeds(rows: list[Row]) -> bool:
    """Whether any (model name, K) of the rows was trained with more than one seed."""
    return any(len(cell.rows) > 1 for cell in group_cells(rows).values())


def pooled_rows(rows: list[Row], suite: str) -> list[Row]:
    """Each model's rate pooled over every suite of the rows, as a row of the given suite name.

    The pooled rate counts every prompt once (the suites' rates weighted by their scored answers), with the
    Wilson interval of the pooled counts. Only rates pool; other metrics give no rows.
    """
    by_model: dict[tuple[Model, str], list[MetricRow]] = defaultdict(list)
    for row in rows:
        if row.metric.metric.endswith("_rate"):
            by_model[(row.model, row.metric.scorer)].append(row.metric)
    return [Row(model, pool_metrics(metrics, suite), rows[0].source) for (model, _), metrics in by_model.items()]


def pool_metrics(metrics: list[MetricRow], suite: str) -> MetricRow:
    """Several rates as one, named ``suite``: their hits and scored answers added up, with the Wilson interval."""
    n_scored = sum(metric.n_scored for metric in metrics if metric.estimate is not None)
    hits = sum(round(metric.estimate * metric.n_scored) for metric in metrics if metric.estimate is not None)
    low, high = wilson_interval(hits, n_scored) if n_scored else (None, None)
    return replace(metrics[0], suite=suite, estimate=hits / n_scored if n_scored else None, ci_low=low, ci_high=high,
                   n_scored=n_scored, n_unscored=sum(metric.n_unscored for metric in metrics))


def ordered_ks(rows: list[Row]) -> list[int | None]:
    """The K of the rows' models: the base model first, then ascending."""
    return sorted({row.model.k for row in rows}, key=lambda k: -1 if k is None else k)


def k_table(rows: list[Row], suites: list[str], caption: str, *, collapsed: bool = False,
            row_title: str = "suite") -> Table:
    """One metric's rows as a table: a row per suite (in ``suites`` order; then model name and scorer when they vary),
    a column per K, and an ``n`` column with the prompts behind one estimate. ``row_title`` heads the suite column
    (``task`` for benchmarks)."""
    cells = group_cells(rows)
    ks = ordered_ks(rows)
    names = sorted({name for _, name, _, _ in cells})
    scorers = sorted({scorer for _, _, scorer, _ in cells})
    keys = [(suite, name, scorer) for suite in suites for name in names for scorer in scorers
            if any((suite, name, scorer, k) in cells for k in ks)]
    columns = [row_title, *(["model"] if len(names) > 1 else []), *(["scorer"] if len(scorers) > 1 else []), "n",
               *(k_header(k) for k in ks)]
    key_columns = len(columns) - len(ks)
    table_rows = []
    for suite, name, scorer in keys:
        row_cells = [cells.get((suite, name, scorer, k)) for k in ks]
        n = max(cell.n_prompts for cell in row_cells if cell is not None)
        table_rows.append([suite, *([name] if len(names) > 1 else []), *([scorer] if len(scorers) > 1 else []),
                           str(n), *(format_cell(cell) if cell else NO_VALUE for cell in row_cells)])
    return Table(columns, table_rows, caption, collapsed=collapsed, key_columns=key_columns)


def seed_table(rows: list[Row], suites: list[str], caption: str) -> Table:
    """Every seed's own estimate and interval: a row per (suite, model name, seed), a column per K (collapsed)."""
    ks = ordered_ks(rows)
    seeds = sorted({row.model.entry.seed for row in rows if row.model.entry.seed is not None})
    names = sorted({row.model.name for row in rows})
    by_key = {(row.metric.suite, row.model.name, row.model.entry.seed, row.model.k): row for row in rows}
    table_rows = []
    for suite in suites:
        for name in names:
            for seed in seeds:
                if not any((suite, name, seed, k) in by_key for k in ks):
                    continue
                base = by_key.get((suite, name, None, None))
                row_cells = [by_key.get((suite, name, seed, k)) if k is not None else base for k in ks]
                table_rows.append([suite, *([name] if len(names) > 1 else []), str(seed),
                                   *(format_cell(Cell((row,))) if row else NO_VALUE for row in row_cells)])
    columns = ["suite", *(["model"] if len(names) > 1 else []), "seed", *(k_header(k) for k in ks)]
    return Table(columns, table_rows, caption, collapsed=True, key_columns=len(columns) - len(ks))
