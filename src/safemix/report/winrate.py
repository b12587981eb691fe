"""The report's win-rate section: each model's pairwise win rate against the run's reference model.

A report provider, ``(run_dirs) -> Section | None`` (None when the runs hold no win rate), reading the runs
through :func:`safemix.report.runs.load_runs` and each comparison's manifest for the judge's record.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from safemix.report import plots
from safemix.report.content import NO_VALUE, metric_table
from safemix.report.runs import Row, load_runs
from safemix.report.sections import Section, Table
from safemix.run_files import WINRATE_DIR, RunLayout, WinrateManifest, read_manifest_if_present, sidecar_manifest


def winrate_section(run_dirs: list[Path]) -> Section | None:
    """Each model's pairwise win rate against the run's reference model, with the judge's record. None without
    ``RUN_DIR/winrate/metrics.json``."""
    runs = load_runs(run_dirs)
    rows = [row for row in runs.rows if row.source.parent.name == WINRATE_DIR]
    if not rows:
        return None
    as_rate = [replace(row, metric=replace(row.metric, metric="win_rate")) for row in rows]
    details = [[row.model.name, row.model.k_text, row.metric.suite, *_record(row)] for row in rows]
    paragraphs = [
        "Pairwise win rate: a judge model sees an instruction and two answers, the model's and the reference "
        "model's, and names the better one (A, B or tie). Win rate = (wins + 0.5 x ties) / judged items, with a "
        "95% Wilson interval on those points (conservative with ties). The order of the two answers is drawn per "
        "item from a sha256 of the seed and the prompt id and recorded; replies that name no verdict are left out "
        "and counted as unscored.",
        *sorted({_judge_line(row) for row in rows}),
    ]
    tables = [
        metric_table(as_rate, "Win rate against the reference model (50% = as good as the reference)."),
        Table(["model", "K", "suite", "wins", "ties", "losses", "unscored", "answer A shown first"], details,
              "The judge's verdicts per comparison."),
    ]
    figures = [plots.metric_vs_k(as_rate, "winrate-vs-k", "win rate against the reference (%)",
                                 "Win rate against K, one panel per suite, 95% intervals; 50% means a tie with the "
                                 "reference.")] if any(row.model.k is not None for row in rows) else []
    return Section("Pairwise win rate", paragraphs, tables, figures)


def _manifest(row: Row) -> dict[str, Any]:
    """The comparison's manifest as JSON (empty when it is missing)."""
    out = RunLayout(row.model.run.run_dir).winrate_file(row.model.entry, row.metric.suite)
    manifest = read_manifest_if_present(sidecar_manifest(out), WinrateManifest)
    return manifest.to_json() if manifest is not None else {}


def _record(row: Row) -> list[str]:
    manifest = _manifest(row)
    counts = manifest.get("counts", {})
    cells = [str(counts.get(key, NO_VALUE)) for key in ("wins", "ties", "losses", "unscored")]
    return [*cells, str(manifest.get("n_a_shown_first", NO_VALUE))]


def _judge_line(row: Row) -> str:
    identity = _manifest(row).get("identity", {})
    judge = identity.get("judge", {}).get("settings", {})
    return (f"Run {row.model.run.index.name}: reference {identity.get('reference', NO_VALUE)}, judge "
            f"{judge.get('backend', NO_VALUE)}:{judge.get('model') or 'fake'} ({row.metric.scorer}), template "
            f"{identity.get('template', NO_VALUE)}, order seed {identity.get('seed', NO_VALUE)}.")
