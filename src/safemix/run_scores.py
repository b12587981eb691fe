"""A run's score lines per model and scorer, and the refusal scorers' binary calls on each answer.

The run's score files are ``RUN_DIR/<scores_dir>/<stem>.jsonl`` for every model of ``run.json`` and every scorer
stem it lists (``refusal-judge``, ``llm-judge-xstest``, ...); a file not written yet is skipped. A scorer counts as a
refusal scorer when ``safemix.metrics.metric_kind`` says so (``refusal-strmatch``, ``refusal-judge``, ``llm-judge``
with a refusal template).

Binary call: refusal = ``full_refusal`` or ``partial_refusal``, compliance = ``full_compliance``. A line with
``value`` null or another label is not a judgement. People's refusal labels map the same way: ``full`` and
``partial`` are refusals, ``none`` is compliance. No torch here.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any

from safemix.metrics import metric_kind, read_scores, scorer_key
from safemix.run_files import RunIndex
from safemix.scoring.labels import REFUSED_BY_LABEL

#: Human refusal label -> refused or not.
REFUSED_BY_HUMAN = {"full": True, "partial": True, "none": False}


def refusal_call(score: Mapping[str, Any]) -> bool | None:
    """True for a refusal, False for full compliance, None when the line is no refusal judgement."""
    if score.get("value") is None:
        return None
    return REFUSED_BY_LABEL.get(str(score.get("label")))


@dataclass(frozen=True)
class RunScores:
    """Every score line of a run, by model label and score file stem, and which scorers judge refusal.

    Attributes:
        lines: model label -> score file stem -> the file's lines, in file order.
        keys: score file stem -> scorer key (``llm-judge/xstest`` for the stem ``llm-judge-xstest``).
        refusal_scorers: the keys of the refusal scorers, in ``run.json`` order.
    """

    lines: dict[str, dict[str, list[dict[str, Any]]]]
    keys: dict[str, str]
    refusal_scorers: list[str]

    def calls(self, label: str) -> dict[str, dict[str, bool]]:
        """Prompt id -> refusal scorer key -> refused, for every refusal judgement of one model's answers."""
        calls: dict[str, dict[str, bool]] = defaultdict(dict)
        for stem, lines in self.lines.get(label, {}).items():
            key = self.keys[stem]
            if key not in self.refusal_scorers:
                continue
            for line in lines:
                if (call := refusal_call(line)) is not None:
                    calls[str(line["id"])][key] = call
        return dict(calls)


def read_run_scores(run_dir: Path, index: RunIndex) -> RunScores:
    """Read the score files of every model and scorer of a run (see the module docstring).

    Raises:
        InputError: a score file is malformed (it names the file and line).
    """
    lines: dict[str, dict[str, list[dict[str, Any]]]] = {}
    keys: dict[str, str] = {}
    labels: dict[str, set[str]] = defaultdict(set)
    for entry in index.models:
        for stem in index.scorers:
            path = Path(run_dir) / entry.scores_dir / f"{stem}.jsonl"
            if not path.is_file():
                continue
            file_lines = read_scores([path])
            if not file_lines:
                continue
            lines.setdefault(entry.label, {})[stem] = file_lines
            keys[stem] = scorer_key(file_lines[0])
            labels[keys[stem]] |= {str(s["label"]) for s in file_lines if s.get("label") is not None}
    refusal = [keys[stem] for stem in index.scorers if stem in keys and metric_kind(keys[stem], labels[keys[stem]])
               == "refusal"]
    return RunScores(lines, keys, list(dict.fromkeys(refusal)))


@dataclass(frozen=True)
class PairDisagreement:
    """How often two refusal scorers' binary calls differ on the answers both judged."""

    scorer_a: str
    scorer_b: str
    n_both: int
    only_a_refuses: int
    only_b_refuses: int

    @property
    def n_disagree(self) -> int:
        """Answers on which the two calls differ."""
        return self.only_a_refuses + self.only_b_refuses

    @property
    def share(self) -> float | None:
        """Share of the answers both judged on which they differ (None when none was judged by both)."""
        return self.n_disagree / self.n_both if self.n_both else None


def pair_disagreements(calls: dict[str, dict[str, bool]], scorers: list[str]) -> list[PairDisagreement]:
    """Every pair of ``scorers`` (in the given order), counted over answers both judged."""
    rows = []
    for a, b in combinations(scorers, 2):
        both = [(c[a], c[b]) for c in calls.values() if a in c and b in c]
        rows.append(PairDisagreement(a, b, len(both), sum(x and not y for x, y in both),
                                     sum(y and not x for x, y in both)))
    return rows
