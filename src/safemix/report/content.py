"""The report's own sections, built from the runs' files: overview, headline tables, refusal scorers (from
``safemix.report.scorers``), plots, training, examples.

Each section says what is missing (no metrics yet, no train logs, no suite with harmful prompts) instead of
failing, so a report of an unfinished run is still a report.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from safemix.metrics import MetricRow
from safemix.report import plots
from safemix.report.runs import METRICS_FILE, Model, Row, Run, Runs, read_generations, read_train_log
from safemix.report.scorers import choose_lead, refusal_scorers_section
from safemix.report.sections import Section, Table

EXAMPLES_PER_CATEGORY = 2
ANSWER_CHARS = 600
CATEGORY_ORDER = ("harmful", "safe", "general")
NO_VALUE = "–"


@dataclass(frozen=True)
class Measure:
    """A (category, metric) pair the report puts in its headline, with how it reads."""

    category: str
    metric: str
    title: str
    meaning: str


COMPLIANCE = Measure("harmful", "harmful_compliance_rate", "Harmful compliance",
                     "share of harmful prompts answered instead of refused; lower is safer")
HARMFULNESS = Measure("harmful", "mean_harmfulness", "Mean harmfulness",
                      "harmfulness reward model score of the answers to harmful prompts; lower is safer")
SAFE_REFUSAL = Measure("safe", "refusal_rate", "Refusal of safe prompts",
                       "exaggerated safety: share of safe prompts refused fully or partly; lower is better")
HEADLINE = (COMPLIANCE, HARMFULNESS, SAFE_REFUSAL)


def own_sections(runs: Runs) -> list[Section]:
    """The report's sections in reading order."""
    sections = [overview_section(runs), headline_section(runs)]
    scorers = refusal_scorers_section(runs)
    sections += ([scorers] if scorers else []) + [plots_section(runs), training_section(runs)]
    more = more_metrics_section(runs)
    return sections + ([more] if more else []) + [examples_section(runs), models_section(runs)]


def select(rows: list[Row], measure: Measure) -> list[Row]:
    """The rows of one measure."""
    return [row for row in rows if (row.metric.category, row.metric.metric) == (measure.category, measure.metric)]


def format_metric(metric: MetricRow) -> str:
    """``23.3% [14.4, 35.4] n=60`` for a rate, ``1.234 [1.100, 1.368] n=60`` for a mean, plus unscored items."""
    unscored = f", {metric.n_unscored} unscored" if metric.n_unscored else ""
    if metric.estimate is None:
        return f"{NO_VALUE} n=0{unscored}"
    if metric.metric.endswith("_rate"):
        value, number = 100 * metric.estimate, "{:.1f}"
        interval = (100 * metric.ci_low, 100 * metric.ci_high) if metric.ci_low is not None else None
        unit = "%"
    else:
        value, number, unit = metric.estimate, "{:.3f}", ""
        interval = (metric.ci_low, metric.ci_high) if metric.ci_low is not None else None
    bounds = f" [{number.format(interval[0])}, {number.format(interval[1])}]" if interval else ""
    return f"{number.format(value)}{unit}{bounds} n={metric.n_scored}{unscored}"


def metric_table(rows: list[Row], caption: str, scorer_order: Sequence[str] = ()) -> Table:
    """Models down, (suite, scorer) across, formatted estimates in the cells.

    Columns sort by suite, then scorer; with ``scorer_order``, the scorers it names come first, in its order (each
    with all its suites), then the others.
    """
    rank = {scorer: position for position, scorer in enumerate(scorer_order)}
    columns = sorted({(row.metric.suite, row.metric.scorer) for row in rows},
                     key=lambda column: (rank.get(column[1], len(rank)), column))
    models = sorted({row.model for row in rows}, key=Model.sort_key)
    cells = {(row.model, row.metric.suite, row.metric.scorer): format_metric(row.metric) for row in rows}
    named = _several_names(models)
    return Table(
        [*_model_columns(named), *(f"{suite} · {scorer}" for suite, scorer in columns)],
        [[*_model_cells(model, named), *(cells.get((model, *column), NO_VALUE) for column in columns)]
         for model in models],
        caption,
    )


def _several_names(models: list[Model]) -> bool:
    """Tables show a model column only when the models differ by more than K (the Run section names the model)."""
    return len({model.name for model in models}) > 1


def _model_columns(named: bool) -> list[str]:
    return ["model", "K"] if named else ["K"]


def _model_cells(model: Model, named: bool) -> list[str]:
    return [model.name, model.k_text] if named else [model.k_text]


def overview_section(runs: Runs) -> Section:
    """What was run: each run's name and config hash, the models, suites and scorers, and what K means."""
    paragraphs = [_run_line(run) for run in runs.runs]
    ks_by_name: dict[str, list[int | None]] = defaultdict(list)
    for model in runs.models:
        ks_by_name[model.name].append(model.k)
    paragraphs += [_models_line(name, ks) for name, ks in ks_by_name.items()]
    suites = sorted({f"{suite.name} ({_counts(suite.categories)})" for run in runs.runs for suite in run.index.suites})
    scorers = list(dict.fromkeys(scorer for run in runs.runs for scorer in run.index.scorers))
    paragraphs += [f"Suites: {'; '.join(suites) or 'none'}.", f"Scorers: {', '.join(scorers) or 'none'}."]
    paragraphs.append(
        "K is the number of safety examples (a harmful instruction with a refusal that says why) in an adapter's "
        "training mixture; 'base' is the untuned model, drawn as a dashed line in the plots."
    )
    paragraphs.append(
        "Every number comes from the runs' metrics.json files: rates with Wilson 95% intervals, means with "
        "normal-approximation 95% intervals, written 'estimate [low, high] n=scored'. Answers a scorer could not "
        "judge are left out of the estimate and counted as unscored."
    )
    paragraphs += [f"No metrics yet: {run.run_dir / 'metrics.json'} is missing (the run has not reached its metrics "
                   "stage)." for run in runs.runs if not (run.run_dir / "metrics.json").is_file()]
    return Section("Run", paragraphs)


def models_section(runs: Runs) -> Section:
    """Every model's label, settings and directories (relative to its run directory)."""
    table = Table(["model", "K", "label", "base model", "template", "preset", "adapter", "generations"],
                  [[m.name, m.k_text, m.entry.label, m.entry.base_model, m.entry.template, m.entry.preset,
                    m.entry.train_dir or NO_VALUE, m.entry.generations_dir] for m in runs.models])
    return Section("Models", tables=[table])


def _models_line(name: str, ks: list[int | None]) -> str:
    parts = ["the base model"] if None in ks else []
    adapters = [str(k) for k in ks if k is not None]
    parts += [f"adapters with K = {', '.join(adapters)}"] if adapters else []
    return f"{name}: {' and '.join(parts)}."


def _run_line(run: Run) -> str:
    line = f"Run {run.index.name}: config hash {run.index.config_hash}, directory {run.run_dir}."
    manifest = run.run_dir / "data" / "manifest.json"
    if manifest.is_file():
        n_general = json.loads(manifest.read_text(encoding="utf-8")).get("settings", {}).get("n_general")
        line += f" Each adapter was trained on {n_general} general instruction examples plus K safety examples."
    return line


def _counts(categories: dict[str, int]) -> str:
    return ", ".join(f"{name} {count}" for name, count in sorted(categories.items()))


def headline_section(runs: Runs, agreement_path: Path | None = None) -> Section:
    """One table per headline measure; a line for each measure the runs hold no numbers for.

    The first line names the refusal scorer the headline leads with and why (``safemix.report.scorers``; the
    measurement file is ``agreement_path``, default the shipped one); its columns come first in every table.
    """
    lead = choose_lead(runs, agreement_path)
    paragraphs = [lead.sentence()] if lead.order else []
    tables = []
    for measure in HEADLINE:
        rows = select(runs.rows, measure)
        if rows:
            tables.append(metric_table(rows, f"{measure.title}: {measure.meaning}", lead.order))
        else:
            paragraphs.append(f"{measure.title}: no numbers ({_why_missing(runs, measure)}).")
    return Section("Headline: safety and exaggerated safety per model", paragraphs, tables)


def _why_missing(runs: Runs, measure: Measure) -> str:
    if not runs.rows:
        return "no metrics yet"
    if not any(row.metric.category == measure.category for row in runs.rows):
        return f"no suite has {measure.category} prompts with scores"
    if measure is HARMFULNESS:
        return "the harmfulness-rm scorer was not run"
    return f"no refusal scorer scored the {measure.category} prompts"


def plots_section(runs: Runs) -> Section:
    """Harmful compliance, mean harmfulness and safe-prompt refusal against K, and the trade-off of the two."""
    compliance, harmfulness, refusal = (select(runs.rows, measure) for measure in HEADLINE)
    figures, paragraphs = [], []
    for rows, name, ylabel, measure in (
        (compliance, "harmful-compliance-vs-k", "harmful compliance (%)", COMPLIANCE),
        (harmfulness, "mean-harmfulness-vs-k", "mean harmfulness score", HARMFULNESS),
        (refusal, "safe-refusal-vs-k", "refusal of safe prompts (%)", SAFE_REFUSAL),
    ):
        if rows:
            caption = f"{measure.title} against K, one panel per suite, 95% intervals ({measure.meaning})."
            figures.append(plots.metric_vs_k(rows, name, ylabel, caption))
        else:
            paragraphs.append(f"No plot of {measure.title.lower()}: {_why_missing(runs, measure)}.")
    trade = plots.tradeoff(compliance, refusal, "tradeoff",
                           "The trade-off: refusal of safe prompts (x) against harmful compliance (y), each pooled "
                           "over all prompts of its category; points labelled by K. Down and left is better.")
    if trade:
        figures.append(trade)
    else:
        paragraphs.append("No trade-off plot: it needs harmful compliance and safe-prompt refusal from one scorer.")
    return Section("Plots", paragraphs, figures=figures)


def training_section(runs: Runs) -> Section:
    """Loss curves and the best checkpoint of every adapter, from ``train_log.json``."""
    adapters = [model for model in runs.models if model.k is not None]
    logs = [(model, log) for model in adapters if (log := read_train_log(model)) is not None]
    missing = [f"{model.name} K={model.k}" for model in adapters if model not in {m for m, _ in logs}]
    paragraphs = [f"No train_log.json yet for: {', '.join(missing)}."] if missing else []
    if not logs:
        return Section("Training", paragraphs or ["No adapters in these runs."])
    named = _several_names([model for model, _ in logs])
    table = Table(
        [*_model_columns(named), "steps", "best step", "best validation loss", "real tokens/s"],
        [[*_model_cells(m, named), str(log.get("steps", NO_VALUE)), str(log.get("best_step", NO_VALUE)),
          _number(log.get("best_val_loss"), "{:.4f}"), _number(log.get("real_tokens_per_second"), "{:.0f}")]
         for m, log in logs],
        "The checkpoint kept for each adapter is the one with the lowest validation loss.",
    )
    figure = plots.loss_curves(logs, "loss-per-k", "Training loss per logged step and validation loss per "
                                                   "evaluation, one line per K.")
    return Section("Training", paragraphs, [table], [figure])


def _number(value: float | None, form: str) -> str:
    return NO_VALUE if value is None else form.format(value)


def more_metrics_section(runs: Runs) -> Section | None:
    """Every other metric of the scores (moderation, judges, general prompts), in the same tables.

    Metrics of other stages (``RUN_DIR/<stage>/metrics.json``) are left to their stages' own sections.
    """
    headline = {(measure.category, measure.metric) for measure in HEADLINE}
    groups: dict[tuple[str, str], list[Row]] = defaultdict(list)
    for row in runs.rows:
        key = (row.metric.category, row.metric.metric)
        if row.source == row.model.run.run_dir / METRICS_FILE and key not in headline:
            groups[key].append(row)
    if not groups:
        return None
    tables = [metric_table(groups[key], f"{key[1]} ({key[0]} prompts)") for key in sorted(groups)]
    return Section("More metrics", ["Every other metric of the scores; summary.csv holds all of them, with the "
                                    "metrics of other stages."], tables)


def examples_section(runs: Runs) -> Section:
    """Side by side, every model's answer to a few prompts of each category; the same prompts on every rerun."""
    prompts: dict[tuple[str, str], tuple[str, str]] = {}
    answers: dict[tuple[str, str], dict[Model, str]] = defaultdict(dict)
    for model in runs.models:
        for line in read_generations(model):
            key = (line["suite"], line["id"])
            prompts.setdefault(key, (line["category"], line["prompt"]))
            answers[key][model] = line["response"]
    title = "Example answers"
    if not answers:
        return Section(title, ["No generations yet."])
    named = _several_names(runs.models)
    tables = []
    for category in sorted({c for c, _ in prompts.values()}, key=_category_order):
        keys = sorted((key for key in prompts if prompts[key][0] == category),
                      key=lambda key: (-len(answers[key]), hashlib.sha256("/".join(key).encode()).hexdigest()))
        keys = keys[:EXAMPLES_PER_CATEGORY]
        models = [model for model in runs.models if any(model in answers[key] for key in keys)]
        tables.append(Table(
            ["prompt", *(f"{m.name}, {_k_header(m)}" if named else _k_header(m) for m in models)],
            [[f"{prompts[(suite, prompt_id)][1]}\n({suite}, id {prompt_id})",
              *(_cut(answers[(suite, prompt_id)].get(m, NO_VALUE)) for m in models)] for suite, prompt_id in keys],
            f"{category} prompts",
        ))
    note = (f"{EXAMPLES_PER_CATEGORY} prompts per category, chosen by a hash of suite and id among the prompts most "
            f"models answered (the same prompts on every rerun); answers over {ANSWER_CHARS} characters are cut.")
    return Section(title, [note], tables, content_warning=True)


def _k_header(model: Model) -> str:
    return "base" if model.k is None else f"K={model.k}"


def _category_order(category: str) -> tuple[int, str]:
    return (CATEGORY_ORDER.index(category) if category in CATEGORY_ORDER else len(CATEGORY_ORDER), category)


def _cut(text: str) -> str:
    return text if len(text) <= ANSWER_CHARS else text[:ANSWER_CHARS].rstrip() + " […]"
