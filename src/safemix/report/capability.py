"""The report's capability section: accuracy per model and task with intervals, and accuracy against K."""

from __future__ import annotations

from pathlib import Path

from safemix.capability.stage import CATEGORY
from safemix.report import plots
from safemix.report.by_k import k_table
from safemix.report.runs import load_runs
from safemix.report.sections import Section

PLOTTED_METRIC = "acc"  # every task reports it (boolq and winogrande report no acc_norm, as in lm-eval)


def capability_section(run_dirs: list[Path]) -> Section | None:
    """A table per metric (a row per task, a column per K) and a plot of accuracy against K per task.

    Returns None when no run holds capability metrics (``RUN_DIR/capability/metrics.json``).
    """
    rows = [row for row in load_runs(run_dirs).rows if row.metric.category == CATEGORY]
    if not rows:
        return None
    metrics = sorted({row.metric.metric for row in rows})
    tasks = list(dict.fromkeys(row.metric.suite for row in rows))
    tables = [k_table([row for row in rows if row.metric.metric == metric], tasks,
                      f"{metric}: accuracy [Wilson 95% interval]; n is the items per task", row_title="task")
              for metric in metrics]
    paragraphs = [
        "Capability kept? Multiple-choice benchmarks through lm-evaluation-harness: the model picks the answer "
        "with the highest log-likelihood (acc) or the highest log-likelihood per byte of answer (acc_norm). "
        "Intervals are Wilson 95% intervals over the items; n is the number of items per task (the configured "
        "limit, or the whole set). piqa, boolq and winogrande have 2 choices per item, openbookqa and arc 4.",
    ]
    accuracy = [row for row in rows if row.metric.metric == PLOTTED_METRIC]
    figures = [plots.metric_vs_k(accuracy, "capability-vs-k", "accuracy (acc)",
                                 "Accuracy against K per task; the base model is the dashed line, its interval "
                                 "shaded.")] if accuracy else []
    return Section("Capability benchmarks", paragraphs, tables, figures)
