"""The win-rate stage of ``safemix run``: every model of the run against the reference model, on general suites.

Reads ``RUN_DIR/run.json`` and each model's ``generations/<slug>/<suite>.jsonl``; writes
``RUN_DIR/winrate/<slug>/<suite>.jsonl`` (one line per prompt) with ``<suite>.manifest.json``, and
``RUN_DIR/winrate/metrics.json`` (+ ``metrics.csv``). A comparison whose manifest records the same judge, template,
seed, models and input bytes is kept without building or calling the judge, so a rerun after ``kill -9`` redoes
only the comparison in flight, and within it the scoring cache keeps every verdict already committed.
"""

from __future__ import annotations

import logging
from pathlib import Path

from safemix.errors import InputError
from safemix.metrics import MetricRow, write_metrics
from safemix.run_files import ModelEntry, RunIndex, RunLayout, WinrateManifest, read_run_index
from safemix.scoring.cache import default_cache_root
from safemix.winrate.compare import compare, comparison_identity, read_answers, up_to_date
from safemix.winrate.config import JudgeConfig, WinrateConfig
from safemix.winrate.judge import build_judge

log = logging.getLogger(__name__)

CATEGORY = "general"


def judge_label(judge: JudgeConfig) -> str:
    """A short name of the judge for the ``scorer`` column: ``fake``, a local model's folder name, or the model id."""
    if judge.backend == "fake" or judge.model is None:
        return "fake"
    local = Path(judge.model).expanduser()
    return local.name if local.is_dir() else judge.model


def metric_row(manifest: WinrateManifest, model: str, suite: str, judge: str, reference: str) -> MetricRow:
    """The metric row of one comparison, from its manifest."""
    counts, rate = manifest.counts, manifest.win_rate
    return MetricRow(model=model, suite=suite, category=CATEGORY, scorer=f"winrate/{judge}",
                     metric=f"win_rate_vs_{reference}", estimate=rate.estimate, ci_low=rate.ci_low,
                     ci_high=rate.ci_high, n_scored=counts.wins + counts.ties + counts.losses,
                     n_unscored=counts.unscored)


def _reference(index: RunIndex, config: WinrateConfig, run_dir: Path) -> ModelEntry:
    try:
        return index.model_by_label(config.reference)
    except KeyError:
        labels = ", ".join(entry.label for entry in index.models)
        raise InputError(f"winrate.reference: {config.reference!r} is not a model of {run_dir} (models: {labels})") from None


def _check_suites(index: RunIndex, config: WinrateConfig, run_dir: Path) -> None:
    known = [suite.name for suite in index.suites]
    for suite in config.suites:
        if suite not in known:
            raise InputError(f"winrate.suites: {suite!r} is not a suite of {run_dir} (suites: {', '.join(known)})")


def run_winrate_stage(config: WinrateConfig, run_dir: Path, data_dir: Path | None = None) -> list[MetricRow]:
    """Compare every model of the run with ``config.reference`` on ``config.suites``; write and return metric rows.

    Args:
        config: the ``winrate`` section.
        run_dir: a ``safemix run`` directory holding ``run.json`` and the generations.
        data_dir: unused (the answers come from the run's generations); part of the stage signature.

    Raises:
        InputError: the reference or a suite is not in the run, an answers file is missing or its prompt ids do
            not match the reference's, or the judge needs an API key that is not set.
    """
    index = read_run_index(run_dir)
    reference = _reference(index, config, run_dir)
    _check_suites(index, config, run_dir)
    judge = build_judge(config.judge)
    cache_dir = config.cache_dir or default_cache_root()
    label = judge_label(config.judge)
    layout = RunLayout(run_dir)
    rows = []
    try:
        for entry in index.models:
            if entry.label == reference.label:
                continue
            for suite in config.suites:
                a = read_answers(layout.generations_dir(entry) / f"{suite}.jsonl", entry.label)
                b = read_answers(layout.generations_dir(reference) / f"{suite}.jsonl", reference.label)
                out = layout.winrate_file(entry, suite)
                manifest = up_to_date(out, comparison_identity(judge, a, b, config.seed))
                if manifest is not None:
                    log.info("%s: kept (same judge, seed and answers)", out)
                else:
                    manifest = WinrateManifest.model_validate(
                        compare(a, b, out, judge, seed=config.seed, cache_dir=cache_dir))
                rows.append(metric_row(manifest, entry.label, suite, label, reference.label))
    finally:
        judge.model.close()
    write_metrics(rows, layout.winrate_dir())
    return rows
