"""The capability stage of ``safemix run``: every model of the run through lm-eval, and its metric rows.

For each model of ``RUN_DIR/run.json`` (the base model alone, or with ``RUN_DIR/<train_dir>/adapter``), the tasks
run into ``RUN_DIR/capability/<slug>/``; a model whose tasks are all done with the same settings loads nothing.
``RUN_DIR/capability/metrics.json`` (and ``metrics.csv``) hold one MetricRow per (model, task, metric).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from safemix.capability.config import CapabilityConfig
from safemix.capability.run import evaluate_capability
from safemix.metrics import MetricRow, wilson_interval, write_metrics
from safemix.run_files import RunLayout, read_run_index

CATEGORY = "capability"
SCORER = "lm-eval"


def run_capability_stage(config: CapabilityConfig, run_dir: Path, data_dir: Path | None) -> list[MetricRow]:
    """Evaluate every model of a run on the configured tasks; write and return the metric rows.

    Args:
        config: the experiment's ``capability`` section.
        run_dir: a ``safemix run`` directory (holding ``run.json`` and the adapters it names).
        data_dir: the data directory (for the local tasks' files).

    Returns:
        One row per (model label, task, metric), in run.json's model order and the config's task order.

    Raises:
        InputError: no run.json, an adapter that is missing or trained on another base, a missing data file, or
            lm-eval not installed.
    """
    index, layout = read_run_index(run_dir), RunLayout(run_dir)
    rows: list[MetricRow] = []
    for entry in index.models:
        results = evaluate_capability(config, entry.base_model, layout.adapter(entry), layout.capability_dir(entry),
                                      data_dir)
        rows.extend(metric_rows(results, entry.label))
    write_metrics(rows, layout.capability_dir())
    return rows


def metric_rows(results: dict[str, Any], label: str) -> list[MetricRow]:
    """The metric rows of one model's ``results.json``: accuracy with its Wilson 95% interval per task and metric.

    The interval comes from the per-sample correctness (``n_correct`` of ``n``); every item is scored.
    """
    rows = []
    for result in results["results"]:
        low, high = wilson_interval(result["n_correct"], result["n"])
        rows.append(MetricRow(model=label, suite=result["task"], category=CATEGORY, scorer=SCORER,
                              metric=result["metric"], estimate=result["value"], ci_low=low, ci_high=high,
                              n_scored=result["n"], n_unscored=0))
    return rows
