"""``summary.csv``: every metric row of the runs, with the model's display name, K and seed."""

from __future__ import annotations

import csv
import io

from safemix.report.runs import Row

SUMMARY_COLUMNS = ("model", "k", "seed", "suite", "category", "scorer", "metric", "value", "ci_low", "ci_high", "n",
                   "n_unscored")


def summary_csv(rows: list[Row]) -> str:
    """The rows as CSV text with the ``SUMMARY_COLUMNS`` header; empty cells for no K and no seed (base model) and
    for no value."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(SUMMARY_COLUMNS)
    for row in rows:
        m = row.metric
        seed = row.model.entry.seed
        writer.writerow([row.model.name, "" if row.model.k is None else row.model.k, "" if seed is None else seed,
                         m.suite, m.category, m.scorer,
                         m.metric, *("" if v is None else v for v in (m.estimate, m.ci_low, m.ci_high)), m.n_scored,
                         m.n_unscored])
    return buffer.getvalue()
