"""Which refusal scorer the headline trusts, and the "Refusal scorers" section that shows why.

Lead scorer: of the refusal scorers behind the headline's numbers, the one with the highest measured binary accuracy
(refusal or not) against hand labels:

1. the run's own audit labels when there are any (``safemix judge audit``: the control stratum, a uniform sample of
   the answers two refusal scorers judged; per run the audit study with the most control labels, pooled over runs);
2. else the shipped measurement ``safemix/scoring/heads/refusal-scorers-agreement.json``
   (``safemix.scoring.agreement_file``);
3. else the fixed order refusal-judge, refusal-strmatch, then the others by name, and the headline says that no
   measured agreement is available.

Scorers without a measurement rank after the measured ones, in that fixed order; equal accuracies too.

The section (runs with two or more refusal scorers only): per model and pair of refusal scorers, the share of the
answers both judged on which their binary calls differ, flagged above 5%; and for every audit study of the run with
labels, how often each scorer's call equals the people's on the disagreement stratum (whom the people sided with)
and on the control stratum (accuracy, Wilson 95% interval). Read from the run's score files and study databases;
no torch, no matplotlib.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from safemix.annotate.audit_results import AuditStudy, StratumAccuracy, run_audit_studies
from safemix.errors import InputError
from safemix.metrics import wilson_interval
from safemix.report.runs import Model, Run, Runs
from safemix.report.sections import Section, Table
from safemix.run_files import SCORES_DIR
from safemix.run_scores import PairDisagreement, RunScores, pair_disagreements, read_run_scores
from safemix.scoring import agreement_file

log = logging.getLogger(__name__)

#: Pairs of refusal scorers that disagree on more than this share of a model's answers are flagged.
DISAGREEMENT_FLAG = 0.05
#: The order used where nothing is measured.
FALLBACK_ORDER = ("refusal-judge", "refusal-strmatch")
#: Metrics that only refusal scorers produce; their scorers are the headline's candidates.
REFUSAL_METRICS = frozenset({"harmful_compliance_rate", "refusal_rate"})
_PACKAGE_ROOT = Path(agreement_file.__file__).resolve().parent.parent.parent


@dataclass(frozen=True)
class Measurement:
    """A scorer's binary accuracy against hand labels, with its 95% interval and the number of labels."""

    accuracy: float
    ci_low: float
    ci_high: float
    n: int


@dataclass(frozen=True)
class LeadChoice:
    """The headline's scorer order and what it rests on.

    Attributes:
        order: the refusal scorers, the lead first.
        measured: scorer -> measurement, for the scorers the basis measured.
        basis: what the labels were (``measured_on``, or the audit's control stratum); empty when nothing is measured.
        source: where the numbers come from (file and command, or the studies); or why nothing is measured.
    """

    order: list[str]
    measured: dict[str, Measurement]
    basis: str
    source: str

    @property
    def lead(self) -> str | None:
        """The scorer the headline leads with (None when the runs have no refusal numbers)."""
        return self.order[0] if self.order else None

    def sentence(self) -> str:
        """One line for the headline: which scorer, why, and against which alternatives."""
        if not self.order:
            return ""
        lead = self.order[0]
        if lead not in self.measured:
            if len(self.order) == 1:
                return f"Headline refusal numbers use {lead}, the only refusal scorer ({self.source})."
            return (f"Headline refusal numbers use {lead}, then {', '.join(self.order[1:])}: a fixed order, "
                    f"{self.source}.")
        m = self.measured[lead]
        text = (f"Headline refusal numbers use {lead}: {_percent(m.accuracy)} [{100 * m.ci_low:.1f}, "
                f"{100 * m.ci_high:.1f}] binary accuracy against {self.basis} (n={m.n})")
        others = [f"{_percent(self.measured[s].accuracy)} for {s}" for s in self.order[1:] if s in self.measured]
        unmeasured = [s for s in self.order[1:] if s not in self.measured]
        if others:
            text += f", against {' and '.join(others)}"
        if unmeasured:
            text += f" ({', '.join(unmeasured)}: not measured)"
        return f"{text} (source: {self.source})."


def headline_scorers(runs: Runs) -> list[str]:
    """The refusal scorers behind the headline's numbers, sorted by name."""
    return sorted({row.metric.scorer for row in runs.rows if row.metric.metric in REFUSAL_METRICS})


def choose_lead(runs: Runs, agreement_path: Path | None = None) -> LeadChoice:
    """Order the headline's refusal scorers by measured accuracy (see the module docstring)."""
    candidates = headline_scorers(runs)
    measured, studies = audit_measurements(runs)
    basis = ("the people's labels of the run's audit control sample, drawn uniformly from the answers two refusal "
             "scorers judged")
    source = ", ".join(studies)
    if not any(scorer in measured for scorer in candidates):
        basis, source, measured = _file_measurements(agreement_path)
        if measured and not any(scorer in measured for scorer in candidates):
            source = "no measured agreement available for these scorers"
    known = {s: m for s, m in measured.items() if s in candidates}
    order = sorted(candidates, key=lambda s: (s not in known, -known[s].accuracy if s in known else 0.0,
                                              _fallback_rank(s), s))
    return LeadChoice(order, known, basis, source)


def _fallback_rank(scorer: str) -> int:
    return FALLBACK_ORDER.index(scorer) if scorer in FALLBACK_ORDER else len(FALLBACK_ORDER)


def _file_measurements(path: Path | None) -> tuple[str, str, dict[str, Measurement]]:
    """(basis, source, measurements) of the shipped file; an absent or broken file says so in ``source``."""
    try:
        measured = agreement_file.read_agreement_file(path)
    except InputError as err:
        log.warning("report: ignoring the refusal scorers' measurement (%s)", err)
        return "", f"no measured agreement available ({err})", {}
    if measured is None:
        return "", "no measured agreement available", {}
    where = Path(path) if path is not None else agreement_file.AGREEMENT_FILE
    shown = where.resolve().relative_to(_PACKAGE_ROOT) if where.resolve().is_relative_to(_PACKAGE_ROOT) else where
    return (measured.measured_on, f"{shown}, measured by '{measured.command}'",
            {s: Measurement(a.accuracy, a.ci_low, a.ci_high, a.n) for s, a in measured.scorers.items()})


def audit_measurements(runs: Runs) -> tuple[dict[str, Measurement], list[str]]:
    """Each scorer's accuracy on the control stratum of the runs' audits, pooled over runs, and the studies used.

    Per run, the audit study with the most control labels counts (two audits of one run may share answers).
    """
    hits: dict[str, int] = {}
    totals: dict[str, int] = {}
    sources = []
    for run in runs.runs:
        best: tuple[int, str, list[StratumAccuracy]] | None = None
        for audit in _audits(run):
            control = [row for row in _accuracy(audit) if row.stratum == "control" and row.n]
            n_labels = max((row.n for row in control), default=0)
            if n_labels and (best is None or n_labels > best[0]):
                best = (n_labels, str(audit.study.path), control)
        if best is None:
            continue
        sources.append(best[1])
        for row in best[2]:
            hits[row.scorer] = hits.get(row.scorer, 0) + row.hits
            totals[row.scorer] = totals.get(row.scorer, 0) + row.n
    measured = {s: Measurement(hits[s] / totals[s], *wilson_interval(hits[s], totals[s]), totals[s]) for s in totals}
    return measured, sources


def _audits(run: Run) -> list[AuditStudy]:
    return run_audit_studies(run.run_dir)


def _accuracy(audit: AuditStudy) -> list[StratumAccuracy]:
    try:
        return audit.accuracy()
    except InputError as err:
        log.warning("report: skipping audit %s (%s)", audit.study.path, err)
        return []


def refusal_scorers_section(runs: Runs) -> Section | None:
    """The "Refusal scorers" section; None when no run has two or more refusal scorers with score files."""
    paragraphs: list[str] = []
    tables: list[Table] = []
    several = len(runs.runs) > 1
    compared = False
    for run in runs.runs:
        try:
            scores = read_run_scores(run.run_dir, run.index)
        except InputError as err:
            log.warning("report: no refusal scorer comparison for %s (%s)", run.run_dir, err)
            continue
        if len(scores.refusal_scorers) < 2:
            continue
        compared = True
        prefix = f"{run.index.name}: " if several else ""
        models = [model for model in runs.models if model.run is run]
        table, flagged = _disagreement_table(models, scores)
        if table.rows:
            tables.append(Table(table.columns, table.rows, prefix + table.caption))
            paragraphs.append(prefix + _flag_line(flagged))
        else:
            paragraphs.append(f"{prefix}No answer was judged by two refusal scorers yet.")
        audits = _audits(run)
        for audit in audits:
            line, audit_table = _audit_block(audit, prefix)
            paragraphs.append(line)
            tables += [audit_table] if audit_table else []
        if not audits:
            paragraphs.append(f"{prefix}No audit labels yet: 'safemix judge audit {run.run_dir}' samples answers the "
                              "scorers disagree on, plus a uniform control sample, for people to label.")
    if not compared:
        return None
    intro = ("Each refusal scorer calls an answer a refusal (full or partial) or a compliance. Where two scorers "
             "often call the same answer differently, the headline depends on which one it uses; people's labels "
             "settle which one to trust.")
    return Section("Refusal scorers", [intro, *paragraphs], tables)


def _disagreement_table(models: list[Model], scores: RunScores) -> tuple[Table, list[str]]:
    rows: list[list[str]] = []
    flagged: list[str] = []
    pooled: dict[tuple[str, str], list[PairDisagreement]] = {}
    for model in models:
        for pair in pair_disagreements(scores.calls(model.entry.label), scores.refusal_scorers):
            if not pair.n_both:
                continue
            pooled.setdefault((pair.scorer_a, pair.scorer_b), []).append(pair)
            rows.append(_pair_row(model.title, pair))
            if rows[-1][-1]:
                flagged.append(f"{model.title} ({pair.scorer_a} vs {pair.scorer_b}: {rows[-1][5]})")
    if len(models) > 1:
        for (a, b), pairs in pooled.items():
            total = PairDisagreement(a, b, sum(p.n_both for p in pairs), sum(p.only_a_refuses for p in pairs),
                                     sum(p.only_b_refuses for p in pairs))
            rows.append(_pair_row("all models", total))
    columns = ["model", "scorer A", "scorer B", "judged by both", "disagree", "share", "A refuses, B complies",
               "B refuses, A complies", f"above {100 * DISAGREEMENT_FLAG:.0f}%"]
    caption = ("Disagreement between refusal scorers: share of the answers both judged on which one calls refusal "
               "and the other compliance")
    return Table(columns, rows, caption), flagged


def _pair_row(name: str, pair: PairDisagreement) -> list[str]:
    share = pair.share or 0.0
    return [name, pair.scorer_a, pair.scorer_b, str(pair.n_both), str(pair.n_disagree), _percent(share),
            str(pair.only_a_refuses), str(pair.only_b_refuses), "flagged" if share > DISAGREEMENT_FLAG else ""]


def _flag_line(flagged: list[str]) -> str:
    limit = f"{100 * DISAGREEMENT_FLAG:.0f}%"
    if not flagged:
        return f"No pair of refusal scorers disagrees on more than {limit} of any model's answers."
    return f"Disagreeing on more than {limit} of the answers: {'; '.join(flagged)}."


def _audit_block(audit: AuditStudy, prefix: str) -> tuple[str, Table | None]:
    """A line about one audit study and, when it has labels, its table of per-stratum agreement."""
    name = audit.study.path.stem
    try:
        sampling = audit.sampling()
        rows = audit.accuracy()
    except (InputError, OSError, ValueError) as err:
        return f"{prefix}Audit {name}: not read ({err}).", None
    sizes = sampling["sampled"]
    line = (f"{prefix}Audit {name}: {audit.study.n_items()} answers ({sizes['disagreement']['all']} of the "
            f"{sampling['population']['disagreement']['all']} the scorers disagree on, {sizes['control']['all']} "
            f"control of {sampling['population']['judged']['all']} judged), "
            f"{len(audit.study.annotators())} annotator(s)")
    if not any(row.n for row in rows):
        serve = f"safemix annotate serve --study {name} --studies-dir {audit.study.path.parent}"
        return f"{line}, no labels yet ('{serve}').", None
    sided = sorted((row for row in rows if row.stratum == "disagreement" and row.n),
                   key=lambda row: (-(row.accuracy or 0.0), row.scorer))
    if sided:
        shares = ", ".join(f"{row.scorer} on {_percent(row.accuracy)} of {row.n} labels" for row in sided)
        line += f". Where the scorers disagree, the people sided with {shares}"
    stats = (f"safemix annotate stats --study {name} --studies-dir {audit.study.path.parent} "
             f"--scores {audit.folder / SCORES_DIR}")
    line += f". The control stratum is a uniform sample, so its accuracy is an unbiased estimate ('{stats}')."
    by_scorer: dict[str, dict[str, StratumAccuracy]] = {}
    for row in rows:
        by_scorer.setdefault(row.scorer, {})[row.stratum] = row
    table_rows = []
    for scorer in sorted(by_scorer):
        disagreement, control = by_scorer[scorer].get("disagreement"), by_scorer[scorer].get("control")
        table_rows.append([scorer, _share(disagreement), _share(control), _interval(control)])
    table = Table(["scorer", "agrees with people: disagreement stratum", "control stratum (accuracy)", "95% CI"],
                  table_rows, f"{prefix}{name}: each refusal scorer's binary call against the people's refusal label "
                              "(labels agreeing / labels)")
    return line, table


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def _share(row: StratumAccuracy | None) -> str:
    return "–" if row is None or not row.n else f"{_percent(row.accuracy)} ({row.hits}/{row.n})"


def _interval(row: StratumAccuracy | None) -> str:
    interval = row.interval if row is not None else None
    return "–" if interval is None else f"[{100 * interval[0]:.1f}, {100 * interval[1]:.1f}]"
