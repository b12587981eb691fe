"""Report sections for the paper's prompt-form experiments: training format x evaluation format, and opinion vs
instruction.

Each is a report provider, ``(run_dirs) -> Section | None`` (None when the runs hold nothing for it), reading the
runs through :func:`safemix.report.runs.load_runs`: ``run.json`` and every ``metrics.json``.

Rules:
- refusal of harmful prompts is ``1 - harmful_compliance_rate`` (its interval is the compliance interval flipped);
- a suite's *evaluation format* comes from its name: ``q-*`` (Q-Harm) is question-form, ``o-*`` (O-Controversial)
  opinion-form, ``i-*`` (the paper's I- sets) instruction-form; any other suite is question-form when most of
  its prompts (read from a model's generations) end with ``?``, else instruction-form. Opinion-form suites are
  left to the opinion section;
- a model's *training format* is ``ModelEntry.format``, else the run's single ``data.formats`` value (from its
  ``config.yaml``), else ``instruction``; the untuned base model has none;
- several suites of one evaluation format are pooled: rates as hits over all scored prompts (hits = estimate *
  n per suite) with a Wilson interval; means weighted by n, with the standard error combined from each suite's
  interval (half-width / 1.96).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import yaml

from safemix.generate.output import read_generations
from safemix.metrics import Z_95, MetricRow, wilson_interval
from safemix.report import plots
from safemix.report.content import COMPLIANCE, HARMFULNESS, NO_VALUE, SAFE_REFUSAL, Measure, format_metric, metric_table
from safemix.report.runs import Model, Row, Run, load_runs
from safemix.report.sections import Section, Table
from safemix.run_files import RunLayout

OPINION_SUITES = ("i-controversial", "o-controversial")
REFUSAL = Measure("harmful", "refusal_rate", "Refusal of harmful prompts",
                  "share of harmful prompts refused (1 - harmful compliance); higher is safer")
EVALUATION_FORMATS = ("instruction", "question")


def as_refusal(row: Row) -> Row:
    """A harmful-compliance row turned into the refusal rate of the same prompts."""
    m = row.metric
    flipped = replace(m, metric=REFUSAL.metric, estimate=None if m.estimate is None else 1.0 - m.estimate,
                      ci_low=None if m.ci_high is None else 1.0 - m.ci_high,
                      ci_high=None if m.ci_low is None else 1.0 - m.ci_low)
    return replace(row, metric=flipped)


def _measure_rows(rows: list[Row], measure: Measure) -> list[Row]:
    """Rows of ``measure``; refusal of harmful prompts is derived from harmful compliance."""
    if measure is REFUSAL:
        return [as_refusal(row) for row in rows if (row.metric.category, row.metric.metric) == (COMPLIANCE.category,
                                                                                               COMPLIANCE.metric)]
    return [row for row in rows if (row.metric.category, row.metric.metric) == (measure.category, measure.metric)]


# ------------------------------------------------------------------------------------------------ opinion vs instruction


def opinion_section(run_dirs: list[Path]) -> Section | None:
    """I-Controversial (instructions) against O-Controversial (the same claims asked as opinions), per model and K.

    The paper found that models refuse more when asked for an opinion than when instructed. None when no model
    has scores on both suites.
    """
    rows = [row for row in load_runs(run_dirs).rows if row.metric.suite in OPINION_SUITES]
    tables, figures = [], []
    for measure in (REFUSAL, HARMFULNESS):
        selected = _both_suites(_measure_rows(rows, measure))
        if not selected:
            continue
        tables.append(metric_table(selected, f"{measure.title}, I-Controversial and O-Controversial side by side "
                                             f"({measure.meaning})."))
        if measure is REFUSAL:
            figures.append(plots.metric_vs_k(selected, "opinion-vs-instruction-refusal", "refusal of harmful prompts (%)",
                                             "Refusal against K: I-Controversial (instructions) and O-Controversial "
                                             "(the same claims asked as opinions), 95% intervals."))
    if not tables:
        return None
    paragraphs = [
        "O-Controversial asks each claim of I-Controversial as an opinion ('What do you think about the claim that "
        "X?') instead of an instruction ('Explain why X.'). The paper found that models refuse more when asked for "
        "an opinion. Refusal here is 1 - harmful compliance, per refusal scorer."
    ]
    return Section("Opinion vs instruction", paragraphs, tables, figures)


def _both_suites(rows: list[Row]) -> list[Row]:
    """Keep the (model, scorer) pairs that have a row on both suites."""
    suites: dict[tuple[Model, str], set[str]] = defaultdict(set)
    for row in rows:
        suites[(row.model, row.metric.scorer)].add(row.metric.suite)
    return [row for row in rows if suites[(row.model, row.metric.scorer)] == set(OPINION_SUITES)]


# ------------------------------------------------------------------------------------------------ prompt formats


def evaluation_format(suite: str, run: Run) -> str | None:
    """``instruction``, ``question`` or ``opinion`` by the rule in the module docstring; None when unknown."""
    prefix = suite.split("-", 1)[0].lower()
    by_prefix = {"i": "instruction", "q": "question", "o": "opinion"}
    if "-" in suite and prefix in by_prefix:
        return by_prefix[prefix]
    for entry in run.index.models:
        path = RunLayout(run.run_dir).generations_dir(entry) / f"{suite}.jsonl"
        if path.is_file():
            prompts = [record.prompt for record in read_generations(path)]
            if prompts:
                questions = sum(prompt.rstrip().endswith("?") for prompt in prompts)
                return "question" if 2 * questions > len(prompts) else "instruction"
    return None


def training_format(model: Model) -> str:
    """The form of the safety examples the model was trained on (see the module docstring)."""
    if model.k is None:
        return NO_VALUE
    if model.entry.format:
        return model.entry.format
    config = RunLayout(model.run.run_dir).resolved_config
    resolved = yaml.safe_load(config.read_text(encoding="utf-8")) if config.is_file() else None
    formats = (resolved or {}).get("data", {}).get("formats")
    return formats[0] if isinstance(formats, list) and len(formats) == 1 else "instruction"


def pooled(rows: list[Row]) -> MetricRow:
    """Several suites' rows of one (model, scorer, metric) as one row (see the module docstring)."""
    first = rows[0].metric
    # (estimate, n, half-width of the interval or None) of every suite with scored items
    suites = [(m.estimate, m.n_scored, None if m.ci_low is None or m.ci_high is None else (m.ci_high - m.ci_low) / 2)
              for m in (row.metric for row in rows) if m.estimate is not None and m.n_scored]
    n = sum(count for _, count, _ in suites)
    n_unscored = sum(row.metric.n_unscored for row in rows)
    estimate = ci_low = ci_high = None
    if n and first.metric.endswith("_rate"):
        hits = sum(round(value * count) for value, count, _ in suites)
        estimate, (ci_low, ci_high) = hits / n, wilson_interval(hits, n)
    elif n:
        estimate = sum(value * count for value, count, _ in suites) / n
        half_widths = [half for _, _, half in suites if half is not None]
        if len(half_widths) == len(suites):
            variance = sum((count / n * half / Z_95) ** 2 for (_, count, _), half in zip(suites, half_widths))
            ci_low, ci_high = estimate - Z_95 * math.sqrt(variance), estimate + Z_95 * math.sqrt(variance)
    return MetricRow(first.model, "+".join(sorted({row.metric.suite for row in rows})), first.category, first.scorer,
                     first.metric, estimate, ci_low, ci_high, n, n_unscored)


def format_section(run_dirs: list[Path]) -> Section | None:
    """Harmfulness and refusal per training format x evaluation format, per model and K.

    None when the runs hold neither a swept training format nor, for harmful or for safe prompts, suites of both
    evaluation formats (a harmful instruction suite beside a safe question suite compares nothing).
    """
    runs = load_runs(run_dirs)
    forms = {(run.run_dir, suite.name): evaluation_format(suite.name, run)
             for run in runs.runs for suite in run.index.suites}
    rows = [row for row in runs.rows if forms.get((row.model.run.run_dir, row.metric.suite)) in EVALUATION_FORMATS]
    training_formats = {training_format(model) for model in runs.models if model.k is not None}
    both_forms = any(
        {forms[(run.run_dir, suite.name)] for run in runs.runs for suite in run.index.suites
         if category in suite.categories} >= set(EVALUATION_FORMATS)
        for category in ("harmful", "safe")
    )
    if len(training_formats) < 2 and not both_forms:
        return None
    tables, suites = [], defaultdict(set)
    for measure in (REFUSAL, HARMFULNESS, SAFE_REFUSAL):
        selected = _measure_rows(rows, measure)
        if selected:
            tables.append(_format_table(selected, forms, measure))
        for row in selected:
            suites[forms[(row.model.run.run_dir, row.metric.suite)]].add(row.metric.suite)
    if not tables:
        return None
    paragraphs = [
        "The paper trained with the safety examples written as instructions, as questions, or half of each, and "
        "evaluated on instruction-form and question-form prompts. Training format: the form of the K safety "
        "examples. Evaluation format: by suite name (I- instruction, Q- question; other suites by whether most "
        "prompts end with '?'); several suites of one form are pooled.",
        *(f"{form.capitalize()}-form suites: {', '.join(sorted(suites[form]))}." for form in EVALUATION_FORMATS
          if suites[form]),
    ]
    return Section("Prompt format: training format x evaluation format", paragraphs, tables)


def _format_table(rows: list[Row], forms: dict[tuple[Path, str], str | None], measure: Measure) -> Table:
    groups: dict[tuple[Model, str, str], list[Row]] = defaultdict(list)
    for row in rows:
        groups[(row.model, row.metric.scorer, str(forms[(row.model.run.run_dir, row.metric.suite)]))].append(row)
    keys = sorted({(model, scorer) for model, scorer, _ in groups}, key=lambda key: (key[0].sort_key(), key[1]))
    return Table(
        ["model", "K", "training format", "scorer", *(f"{form}-form suites" for form in EVALUATION_FORMATS)],
        [[model.name, model.k_text, training_format(model), scorer,
          *(format_metric(pooled(groups[(model, scorer, form)])) if groups.get((model, scorer, form)) else NO_VALUE
            for form in EVALUATION_FORMATS)]
         for model, scorer in keys],
        f"{measure.title} ({measure.meaning}), by training and evaluation format.",
    )
