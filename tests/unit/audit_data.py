"""A small finished run whose two refusal scorers disagree on known answers, for the audit and report tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from safemix.files import write_jsonl_atomic
from safemix.metrics import compute_metrics, write_metrics
from safemix.run_files import ModelEntry, RunIndex, SuiteEntry, write_run_index

R, C = "full_refusal", "full_compliance"
# model label -> [(prompt id, suite, category, refusal-strmatch label, refusal-judge label)]; None: left unscored
CALLS: dict[str, list[tuple[str, str, str, str | None, str | None]]] = {
    "base": [(f"harm-{i}", "harm", "harmful", C, R if i < 2 else None if i == 5 else C) for i in range(6)]
    + [(f"safe-{i}", "safe", "safe", C, C) for i in range(4)],
    "k300": [(f"harm-{i}", "harm", "harmful", R, C if i == 2 else "partial_refusal") for i in range(6)]
    + [(f"safe-{i}", "safe", "safe", R if i < 2 else C, R if i == 0 else C) for i in range(4)],
}
#: The answers on which the scorers' binary calls differ (base/harm-5 has one judgement only: not judged).
DISAGREEMENT = ["base/harm-0", "base/harm-1", "k300/harm-2", "k300/safe-1"]
JUDGED = [f"{label}/{pid}" for label, rows in CALLS.items() for pid, *_ in rows if (label, pid) != ("base", "harm-5")]


def build_run(run_dir: Path, calls: dict[str, list[tuple[str, str, str, str | None, str | None]]] | None = None,
              scorers: tuple[str, ...] = ("refusal-strmatch", "refusal-judge", "harmfulness-rm")) -> Path:
    """Write run.json, generations, score files (and metrics.json) as 'safemix run' leaves them; return run_dir."""
    calls = CALLS if calls is None else calls
    entries = [ModelEntry(label=label, model="tiny", slug=label, base_model="tiny", template="chat", preset="greedy",
                          k=None if label == "base" else int(label[1:]), generations_dir=f"generations/{label}",
                          scores_dir=f"scores/{label}") for label in calls]
    categories: dict[str, dict[str, int]] = {}
    for rows in list(calls.values())[:1]:
        for _, suite, category, _, _ in rows:
            categories.setdefault(suite, {}).setdefault(category, 0)
            categories[suite][category] += 1
    write_run_index(run_dir, RunIndex(name="audited", config_hash="abc", scorers=list(scorers), models=entries,
                                      suites=[SuiteEntry(name=s, n_prompts=sum(c.values()), categories=c)
                                              for s, c in categories.items()]))
    every_line: list[dict[str, Any]] = []
    for label, rows in calls.items():
        for suite in sorted({row[1] for row in rows}):
            write_jsonl_atomic(run_dir / "generations" / label / f"{suite}.jsonl", [
                {"id": pid, "suite": suite, "category": category, "prompt": f"{suite} prompt {pid}",
                 "response": f"{label} answers {pid}", "finish_reason": "stop", "n_new_tokens": 4}
                for pid, row_suite, category, _, _ in rows if row_suite == suite])
        for scorer in scorers:
            lines = [_score_line(scorer, label, pid, suite, category, strmatch, judge)
                     for pid, suite, category, strmatch, judge in rows]
            write_jsonl_atomic(run_dir / "scores" / label / f"{scorer}.jsonl", lines)
            every_line += lines
    write_metrics(compute_metrics(every_line), run_dir)
    return run_dir


def _score_line(scorer: str, label: str, pid: str, suite: str, category: str, strmatch: str | None,
                judge: str | None) -> dict[str, Any]:
    line: dict[str, Any] = {"id": pid, "scorer": scorer, "model": label, "suite": suite, "category": category}
    if scorer == "harmfulness-rm":
        return {**line, "value": 0.5, "label": None, "unscored_reason": None}
    verdict = strmatch if scorer == "refusal-strmatch" else judge
    if verdict is None:
        return {**line, "value": None, "label": None, "unscored_reason": "the judge gave no answer"}
    return {**line, "value": 0.0 if verdict == C else 1.0, "label": verdict, "unscored_reason": None}
