"""The report's own sections, built from the runs' files: overview, headline tables, refusal scorers (from
``safemix.report.scorers``), plots, training, examples.

Each section says what is missing (no metrics yet, no train logs, no suite with harmful prompts) instead of
failing, so a report of an unfinished run is still a report.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from safemix.metrics import MetricRow
from safemix.report import plots
from safemix.report.by_k import cell_order, group_cells, k_table, pooled_rows, seed_table, several_seeds
from safemix.report.runs import Model, Row, Run, Runs, read_generations, read_train_log
from safemix.report.scorers import LeadChoice, choose_lead, refusal_scorers_section
from safemix.report.sections import Section, Table
from safemix.run_files import MixtureManifest, RunLayout, read_manifest

EXAMPLES_PER_CATEGORY = 2
ANSWER_CHARS = 600
CATEGORY_ORDER = ("harmful", "safe", "general")
NO_VALUE = "–"


@dataclass(frozen=True)
class Measure:
    """A (category, metric) pair the report puts in its headline, with how it reads.

    ``scorer`` names the one scorer that makes the metric, when only one does; a run that does not configure it is
    silent about the measure but for one line in the "Run" section.
    """

    category: str
    metric: str
    title: str
    meaning: str
    scorer: str | None = None


COMPLIANCE = Measure("harmful", "harmful_compliance_rate", "Harmful compliance",
                     "share of harmful prompts answered instead of refused; lower is safer")
HARMFULNESS = Measure("harmful", "mean_harmfulness", "Mean harmfulness",
                      "harmfulness reward model score of the answers to harmful prompts; lower is safer",
                      "harmfulness-rm")
SAFE_REFUSAL = Measure("safe", "refusal_rate", "Refusal of safe prompts",
                       "exaggerated safety: share of safe prompts refused fully or partly; lower is better")
HEADLINE = (COMPLIANCE, SAFE_REFUSAL, HARMFULNESS)


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
    scale, number, unit = (100.0, "{:.1f}", "%") if metric.metric.endswith("_rate") else (1.0, "{:.3f}", "")
    value = scale * metric.estimate
    bounds = (f" [{number.format(scale * metric.ci_low)}, {number.format(scale * metric.ci_high)}]"
              if metric.ci_low is not None and metric.ci_high is not None else "")
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
    named, seeded = _several_names(models), _several_seeds(models)
    return Table(
        [*_model_columns(named, seeded), *(f"{suite} · {scorer}" for suite, scorer in columns)],
        [[*_model_cells(model, named, seeded), *(cells.get((model, *column), NO_VALUE) for column in columns)]
         for model in models],
        caption,
    )


def _several_names(models: list[Model]) -> bool:
    """Tables show a model column only when the models differ by more than K (the Run section names the model)."""
    return len({model.name for model in models}) > 1


def _several_seeds(models: list[Model]) -> bool:
    """Tables show a seed column only when adapters were trained with several seeds."""
    return len({model.entry.seed for model in models if model.k is not None}) > 1


def _model_columns(named: bool, seeded: bool = False) -> list[str]:
    return [*(["model"] if named else []), "K", *(["seed"] if seeded else [])]


def _model_cells(model: Model, named: bool, seeded: bool = False) -> list[str]:
    seed = [NO_VALUE if model.entry.seed is None else str(model.entry.seed)] if seeded else []
    return [*([model.name] if named else []), model.k_text, *seed]


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
    seeds = sorted({model.entry.seed for model in runs.models if model.entry.seed is not None})
    if len(seeds) > 1:
        paragraphs.append(
            f"Seeds: {', '.join(map(str, seeds))}. Each adapter was trained once per seed, on a mixture sampled "
            "with that seed; tables show the mean over seeds, the lowest and highest seed, and the mean half-width "
            "of one seed's 95% interval ('23.3 · seeds 20.0–26.7 · CI ±10.5'), plots the mean with the seeds' "
            "range as a band. A difference smaller than the seeds' spread is not a difference this run can see.")
    not_run = not_configured(runs)
    if not_run:
        paragraphs.append("Not in this run: " + "; ".join(not_run) + ".")
    paragraphs.append(
        "K is the number of safety examples (a harmful instruction with a refusal that says why) in an adapter's "
        "training mixture; 'base' is the untuned model, drawn as a dashed line in the plots."
    )
    paragraphs.append(
        "Every number comes from the runs' metrics.json files: rates (in percent) with Wilson 95% intervals, means "
        "with normal-approximation 95% intervals, written 'estimate [low, high]'; the n column counts the prompts "
        "behind one estimate. Answers a scorer could not judge are left out of the estimate and counted as "
        "unscored."
    )
    paragraphs += [f"No metrics yet: {RunLayout(run.run_dir).metrics} is missing (the run has not reached its metrics "
                   "stage)." for run in runs.runs if not RunLayout(run.run_dir).metrics.is_file()]
    return Section("Run", paragraphs)


def models_section(runs: Runs) -> Section:
    """Every model's label, settings and directories (relative to its run directory)."""
    table = Table(["model", "K", "seed", "label", "base model", "template", "preset", "adapter", "generations"],
                  [[m.name, m.k_text, NO_VALUE if m.entry.seed is None else str(m.entry.seed), m.entry.label,
                    m.entry.base_model, m.entry.template, m.entry.preset, m.entry.train_dir or NO_VALUE,
                    m.entry.generations_dir] for m in runs.models])
    return Section("Models", tables=[table])


def _models_line(name: str, ks: list[int | None]) -> str:
    parts = ["the base model"] if None in ks else []
    adapters = [str(k) for k in dict.fromkeys(ks) if k is not None]
    parts += [f"adapters with K = {', '.join(adapters)}"] if adapters else []
    return f"{name}: {' and '.join(parts)}."


def _run_line(run: Run) -> str:
    line = f"Run {run.index.name}: config hash {run.index.config_hash}, directory {run.run_dir}."
    manifests = [read_manifest(path, MixtureManifest) for path in RunLayout(run.run_dir).mixture_manifests()]
    n_general = sorted({manifest.settings.n_general for manifest in manifests})
    if n_general:
        counts = " or ".join(str(n) for n in n_general)
        line += f" Each adapter was trained on {counts} general instruction examples plus K safety examples."
    formats = sorted({manifest.format for manifest in manifests})
    if len(formats) > 1:
        line += f" The safety examples were in one of {len(formats)} formats: {', '.join(formats)}."
    return line


def _counts(categories: dict[str, int]) -> str:
    return ", ".join(f"{name} {count}" for name, count in sorted(categories.items()))


def configured(runs: Runs, measure: Measure) -> bool:
    """Whether the runs are set up to measure it: a suite with prompts of its category, and its scorer if it has one."""
    has_category = any(measure.category in suite.categories for run in runs.runs for suite in run.index.suites)
    has_scorer = measure.scorer is None or any(measure.scorer in run.index.scorers for run in runs.runs)
    return has_category and has_scorer


def not_configured(runs: Runs) -> list[str]:
    """A phrase per headline measure the runs are not set up for, saying what it would need."""
    phrases = []
    for measure in HEADLINE:
        if configured(runs, measure):
            continue
        if measure.scorer and not any(measure.scorer in run.index.scorers for run in runs.runs):
            phrases.append(f"{measure.title.lower()} (the {measure.scorer} scorer is not configured)")
        else:
            phrases.append(f"{measure.title.lower()} (no suite has {measure.category} prompts)")
    return phrases


def suite_order(runs: Runs) -> list[str]:
    """The suites in the order the runs' configs list them."""
    return list(dict.fromkeys(suite.name for run in runs.runs for suite in run.index.suites))


POOLED_SUITE = "all {category} prompts"


def headline_section(runs: Runs, agreement_path: Path | None = None) -> Section:
    """Per headline measure, a table with a row per suite and a column per K, by the scorer the report trusts most.

    The first line names that lead scorer and why (``safemix.report.scorers``; the measurement file is
    ``agreement_path``, default the shipped one). Each rate's table ends with a row pooled over its suites; the
    other scorers' tables, and with several seeds each seed's own numbers, are one click away (collapsed). A
    measure the runs are set up for but hold no numbers of gets a line; one they are not set up for, nothing.
    """
    lead = choose_lead(runs, agreement_path)
    paragraphs = [lead.sentence()] if lead.order else []
    tables = []
    for measure in (measure for measure in HEADLINE if configured(runs, measure)):
        rows = select(runs.rows, measure)
        if rows:
            tables += measure_tables(rows, measure, lead, suite_order(runs))
        else:
            paragraphs.append(f"{measure.title}: no numbers yet ({_why_missing(runs, measure)}).")
    return Section("Headline: safety and exaggerated safety by K", paragraphs, tables)


def measure_tables(rows: list[Row], measure: Measure, lead: LeadChoice, suites: list[str]) -> list[Table]:
    """The lead scorer's table of one measure, then each other scorer's and the lead's per-seed table, collapsed."""
    rank = {scorer: position for position, scorer in enumerate(lead.order)}
    scorers = sorted({row.metric.scorer for row in rows}, key=lambda scorer: (rank.get(scorer, len(rank)), scorer))
    pooled = POOLED_SUITE.format(category=measure.category)
    unit = " (%)" if measure.metric.endswith("_rate") else ""
    tables = []
    for position, scorer in enumerate(scorers):
        scored = [row for row in rows if row.metric.scorer == scorer]
        scored += pooled_rows(scored, pooled) if len({row.metric.suite for row in scored}) > 1 else []
        caption = f"{measure.title}{unit} by {scorer}: {measure.meaning}"
        tables.append(k_table(scored, [*suites, pooled], caption, collapsed=position > 0))
        if position == 0 and several_seeds(scored):
            tables.append(seed_table(scored, [*suites, pooled], f"{measure.title}{unit} by {scorer}, each seed"))
    return tables


def _why_missing(runs: Runs, measure: Measure) -> str:
    if not runs.rows:
        return "no metrics yet"
    if measure.scorer:
        return f"the {measure.scorer} scores are not in the metrics yet"
    return f"no refusal scorer scored the {measure.category} prompts"


#: Colours of the small multiples' lines: harmful compliance warm, refusal of safe prompts cool.
MEASURE_COLOURS = {COMPLIANCE: ("C3", "C1", "C6"), SAFE_REFUSAL: ("C0", "C9", "C4")}


def plots_section(runs: Runs, agreement_path: Path | None = None) -> Section:
    """Small multiples of the lead scorer's harmful compliance and safe-prompt refusal against K (a panel per
    suite), mean harmfulness the same way when the run has it, and the trade-off of the two rates."""
    lead = choose_lead(runs, agreement_path).lead
    suites = suite_order(runs)
    figures = []
    rate_lines = [line for measure in (COMPLIANCE, SAFE_REFUSAL)
                  for line in plots.panel_lines([row for row in select(runs.rows, measure) if row.metric.scorer == lead],
                                                measure.title.lower(), MEASURE_COLOURS[measure])]
    if rate_lines:
        figures.append(plots.suite_panels(
            rate_lines, suites, "rates-by-suite", "share of prompts (%)",
            f"Harmful compliance (warm colours) and refusal of safe prompts (cool colours) against K by {lead}, one "
            "panel per suite, 95% intervals; the dashed line is the base model. Lower is better for both."))
    harmfulness = select(runs.rows, HARMFULNESS)
    if harmfulness:
        figures.append(plots.suite_panels(plots.panel_lines(harmfulness), suites, "mean-harmfulness-by-suite",
                                          "mean harmfulness score", f"{HARMFULNESS.title} against K, one panel per "
                                          f"suite, 95% intervals ({HARMFULNESS.meaning})."))
    trade = tradeoff_lines(runs)
    if trade:
        figures.append(plots.tradeoff(trade, "tradeoff", "The trade-off: refusal of safe prompts (x) against harmful "
                                      "compliance (y), each pooled over all prompts of its category and averaged "
                                      "over seeds; points labelled by K. Down and left is better."))
    return Section("Plots", [] if figures else ["No plots yet: the runs hold no headline numbers."], figures=figures)


def tradeoff_lines(runs: Runs) -> list[plots.TradeoffLine]:
    """Per (model name, refusal scorer) with both rates: each K's pooled rates, averaged over seeds."""
    pooled = {measure: group_cells(pooled_rows(select(runs.rows, measure), "all")) for measure in
              (COMPLIANCE, SAFE_REFUSAL)}
    lines: list[plots.TradeoffLine] = []
    several_names = len({name for _, name, _, _ in pooled[COMPLIANCE]}) > 1
    for (_, name, scorer, k), compliance in sorted(pooled[COMPLIANCE].items(), key=lambda item: cell_order(item[0])):
        refusal = pooled[SAFE_REFUSAL].get(("all", name, scorer, k))
        if refusal is None or refusal.estimate is None or compliance.estimate is None:
            continue
        label = f"{name} · {scorer}" if several_names else scorer
        if not lines or lines[-1].label != label:
            lines.append(plots.TradeoffLine(label, []))
        lines[-1].points.append(("base" if k is None else str(k), 100 * refusal.estimate, 100 * compliance.estimate))
    return lines


def training_section(runs: Runs) -> Section:
    """Loss curves and the best checkpoint of every adapter, from ``train_log.json``."""
    adapters = [model for model in runs.models if model.k is not None]
    logs = [(model, log) for model in adapters if (log := read_train_log(model)) is not None]
    missing = [f"{model.name} K={model.k}" for model in adapters if model not in {m for m, _ in logs}]
    paragraphs = [f"No train_log.json yet for: {', '.join(missing)}."] if missing else []
    if not logs:
        return Section("Training", paragraphs or ["No adapters in these runs."])
    named, seeded = _several_names([model for model, _ in logs]), _several_seeds([model for model, _ in logs])
    table = Table(
        [*_model_columns(named, seeded), "steps", "best step", "best validation loss", "real tokens/s"],
        [[*_model_cells(m, named, seeded), str(log.get("steps", NO_VALUE)), str(log.get("best_step", NO_VALUE)),
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
        if row.source == RunLayout(row.model.run.run_dir).metrics and key not in headline:
            groups[key].append(row)
    if not groups:
        return None
    tables = [k_table(groups[key], suite_order(runs), f"{key[1]} ({key[0]} prompts)") for key in sorted(groups)]
    paragraphs = ["Every other metric of the scores, a row per suite and scorer; summary.csv holds all of them, "
                  "with the metrics of other stages."]
    return Section("More metrics", paragraphs, tables)


def examples_section(runs: Runs) -> Section:
    """Side by side, every model's answer to a few prompts of each category; the same prompts on every rerun."""
    prompts: dict[tuple[str, str], tuple[str, str]] = {}
    answers: dict[tuple[str, str], dict[Model, str]] = defaultdict(dict)
    for model in first_seed(runs.models):
        for line in read_generations(model):
            key = (line.suite, line.id)
            prompts.setdefault(key, (line.category, line.prompt))
            answers[key][model] = line.response
    title = "Example answers"
    if not answers:
        return Section(title, ["No generations yet."])
    named = _several_names(runs.models)
    tables = []
    shown = first_seed(runs.models)
    for category in sorted({c for c, _ in prompts.values()}, key=_category_order):
        keys = sorted((key for key in prompts if prompts[key][0] == category),
                      key=lambda key: (-len(answers[key]), hashlib.sha256("/".join(key).encode()).hexdigest()))
        keys = keys[:EXAMPLES_PER_CATEGORY]
        models = [model for model in shown if any(model in answers[key] for key in keys)]
        tables.append(Table(
            ["prompt", *(f"{m.name}, {_k_header(m)}" if named else _k_header(m) for m in models)],
            [[f"{prompts[(suite, prompt_id)][1]}\n({suite}, id {prompt_id})",
              *(_cut(answers[(suite, prompt_id)].get(m, NO_VALUE)) for m in models)] for suite, prompt_id in keys],
            f"{category} prompts",
        ))
    note = (f"{EXAMPLES_PER_CATEGORY} prompts per category, chosen by a hash of suite and id among the prompts most "
            f"models answered (the same prompts on every rerun); answers over {ANSWER_CHARS} characters are cut."
            + (" With several seeds, the adapters of the lowest seed." if len(shown) < len(runs.models) else ""))
    return Section(title, [note], tables, content_warning=True)


def first_seed(models: list[Model]) -> list[Model]:
    """The models, with only the lowest seed's adapter of each (model name, K)."""
    lowest: dict[tuple[str, int | None], int] = {}
    for model in models:
        if model.entry.seed is not None:
            key = (model.name, model.k)
            lowest[key] = min(lowest.get(key, model.entry.seed), model.entry.seed)
    return [model for model in models if model.entry.seed is None or model.entry.seed == lowest[(model.name, model.k)]]


def _k_header(model: Model) -> str:
    return "base" if model.k is None else f"K={model.k}"


def _category_order(category: str) -> tuple[int, str]:
    return (CATEGORY_ORDER.index(category) if category in CATEGORY_ORDER else len(CATEGORY_ORDER), category)


def _cut(text: str) -> str:
    return text if len(text) <= ANSWER_CHARS else text[:ANSWER_CHARS].rstrip() + " […]"
