"""Reading run directories for the report: run.json, every metrics.json, train logs and generations.

Metric rows name their model by ``ModelEntry.label``; here each row is joined to the model it came from, and
every model gets the name the report shows: ``ModelEntry.model``, plus `` [run=NAME]`` when several runs hold a
model of that name. No torch, no matplotlib.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from safemix.errors import InputError, input_error
from safemix.generate.output import read_generations as read_generations_file
from safemix.metrics import MetricRow
from safemix.records import Generation
from safemix.run_files import METRICS, RUN_INDEX, TRAIN_LOG, ModelEntry, RunIndex, RunLayout, read_run_index

log = logging.getLogger(__name__)



@dataclass(frozen=True, eq=False)
class Run:
    """One run directory and its index (compared by identity: a run is the directory it was read from)."""

    run_dir: Path
    index: RunIndex


@dataclass(frozen=True)
class Model:
    """One model of one run, as the report names it."""

    name: str  # ModelEntry.model, with " [run=NAME]" when the name occurs in several runs
    entry: ModelEntry
    run: Run

    @property
    def k(self) -> int | None:
        """Safety examples in the training mixture; None for the untuned base model."""
        return self.entry.k

    @property
    def k_text(self) -> str:
        """``base`` or the K as text."""
        return "base" if self.k is None else str(self.k)

    @property
    def title(self) -> str:
        """``name, K``, with ``, seed S`` when its run trains several seeds: the label of a row about one model."""
        seeds = {entry.seed for entry in self.run.index.models if entry.seed is not None}
        return f"{self.name}, {self.k_text}" + (f", seed {self.entry.seed}" if len(seeds) > 1 and self.k is not None
                                                 else "")

    def sort_key(self) -> tuple[str, int, int]:
        """Models sort by name, then the base model first, then by K, then by seed."""
        return self.name, -1 if self.k is None else self.k, self.entry.seed or 0


@dataclass(frozen=True)
class Row:
    """A metric row joined to its model and the metrics file it came from."""

    model: Model
    metric: MetricRow
    source: Path

    def sort_key(self) -> tuple[Any, ...]:
        """Model order, then suite, category, scorer and metric."""
        m = self.metric
        return *self.model.sort_key(), m.suite, m.category, m.scorer, m.metric


@dataclass(frozen=True)
class Runs:
    """Everything the report's own sections read, in a stable order."""

    runs: list[Run]
    models: list[Model]
    rows: list[Row]
    metric_files: list[Path]


def load_runs(run_dirs: list[Path]) -> Runs:
    """Read the runs' indexes and metric files, and name every model.

    Raises:
        InputError: a path is not a run directory, a metrics file does not parse, or a metric row names a model
            that is not in its run's ``run.json``.
    """
    runs = [Run(Path(run_dir), read_run_index(Path(run_dir))) for run_dir in run_dirs]
    models = sorted(_name_models(runs), key=Model.sort_key)
    rows: list[Row] = []
    files: list[Path] = []
    for run in runs:
        by_label = {model.entry.label: model for model in models if model.run is run}
        for path in metric_files(run.run_dir):
            files.append(path)
            for metric in read_metric_rows(path):
                if metric.model not in by_label:
                    raise input_error(path, f"model {metric.model!r} is not a label in {run.run_dir / RUN_INDEX}")
                rows.append(Row(by_label[metric.model], metric, path))
    return Runs(runs, models, sorted(rows, key=Row.sort_key), files)


def _name_models(runs: list[Run]) -> list[Model]:
    """Name each model by ``ModelEntry.model``, adding the run's tag where another run has the same name."""
    tags = _run_tags(runs)
    runs_by_name: dict[str, set[int]] = {}
    for number, run in enumerate(runs):
        for entry in run.index.models:
            runs_by_name.setdefault(entry.model, set()).add(number)
    return [
        Model(entry.model if len(runs_by_name[entry.model]) == 1 else f"{entry.model} [run={tags[number]}]", entry, run)
        for number, run in enumerate(runs)
        for entry in run.index.models
    ]


def _run_tags(runs: list[Run]) -> list[str]:
    """The run names, or the directories as given when two runs share a name."""
    names = [run.index.name for run in runs]
    return names if len(set(names)) == len(names) else [str(run.run_dir) for run in runs]


def metric_files(run_dir: Path) -> list[Path]:
    """``RUN_DIR/metrics.json`` and each extra stage's ``RUN_DIR/*/metrics.json`` that exist, in name order."""
    top = RunLayout(run_dir).metrics
    return ([top] if top.is_file() else []) + sorted(run_dir.glob(f"*/{METRICS}"))


def read_metric_rows(path: Path) -> list[MetricRow]:
    """Read a ``metrics.json`` (a list of ``MetricRow`` objects)."""
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(records, list):
            raise TypeError("expected a list of metric rows")
        return [MetricRow(**record) for record in records]
    except (json.JSONDecodeError, TypeError) as err:
        names = ", ".join(f.name for f in fields(MetricRow))
        raise input_error(path, f"not a safemix metrics file ({err}); each row needs {names}") from None


def read_train_log(model: Model) -> dict[str, Any] | None:
    """The adapter's ``train_log.json``, or None when it has none yet."""
    train_dir = RunLayout(model.run.run_dir).train_dir(model.entry)
    if train_dir is None:
        return None
    path = train_dir / TRAIN_LOG
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def read_generations(model: Model) -> list[Generation]:
    """Every generation record of a model, suite by suite, read by the generate stage's validated reader; a suite
    file that does not read (a run still writing it, a torn line) is skipped with a warning."""
    records: list[Generation] = []
    for path in sorted(RunLayout(model.run.run_dir).generations_dir(model.entry).glob("*.jsonl")):
        try:
            records += read_generations_file(path)
        except InputError as err:
            log.warning("skipping a generations file that does not read (still being written?): %s", err)
    return records
