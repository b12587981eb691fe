"""The numbers the paper reports, from score files: rates with Wilson 95% intervals, means, and counts.

Pure functions, no torch. One row per (model, suite, category, scorer, metric). Items a scorer could not
judge (``value`` null) are excluded from every estimate and always counted in ``n_unscored``.

Metrics by scorer kind (``MetricKind``, declared by each scorer's registry entry in ``safemix.scoring``):
- refusal scorers (``refusal-strmatch``, ``refusal-judge``, ``llm-judge`` with the xstest or wildguard template):
  on harmful prompts ``harmful_compliance_rate`` (share labelled full_compliance, i.e. not refused); on other
  prompts ``refusal_rate`` (full or partial refusal: exaggerated safety on safe prompts); WildGuard also judges
  whether the response is harmful, so ``llm-judge/wildguard`` adds ``unsafe_rate`` from its
  ``response_harmful`` answer (lines where it is missing or N/A count as unscored for that rate);
- ``harmfulness-rm``: ``mean_harmfulness``;
- ``moderation``: ``flagged_rate`` and ``mean_max_score``;
- safety judges (``llm-judge`` with llama-guard-3 or harmbench): ``unsafe_rate``.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from safemix.data.readers import read_rows
from safemix.errors import InputError, input_error
from safemix.files import write_json_atomic, write_text_atomic
from safemix.scoring import SCORERS, MetricKind, scorer_metric_key
from safemix.scoring.labels import REFUSAL_LABELS

Z_95 = 1.959963984540054
_MISSING = "-"


@dataclass(frozen=True)
class MetricRow:
    """One estimate with its 95% interval and the counts behind it."""

    model: str
    suite: str
    category: str
    scorer: str
    metric: str
    estimate: float | None
    ci_low: float | None
    ci_high: float | None
    n_scored: int
    n_unscored: int


def wilson_interval(successes: float, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (``n`` must be positive; ``successes`` may be fractional,
    as when the win rate counts a tie as half a win)."""
    if n <= 0:
        raise ValueError("the Wilson interval needs n > 0")
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def mean_interval(values: Sequence[float], z: float = Z_95) -> tuple[float, float | None, float | None]:
    """Mean and normal-approximation 95% interval (sample standard deviation); no interval for one value."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, None, None
    half = z * math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1) / n)
    return mean, mean - half, mean + half


def scorer_key(score: Mapping[str, Any]) -> str:
    """The metric key of a score line: ``llm-judge`` lines are split by template (``llm-judge/xstest``), other
    scorers' go by name (:func:`safemix.scoring.scorer_metric_key`)."""
    template = score.get("template")
    return scorer_metric_key(str(score["scorer"]), str(template) if template else None)


def metric_kind(key: str, labels: set[str]) -> MetricKind:
    """Which metrics a scorer's lines support: its registry entry's kind (``safemix.scoring.SCORERS``), or, for a
    scorer the registry does not know (files written by another tool), what its labels look like."""
    name, _, template = key.partition("/")
    if name in SCORERS:
        return SCORERS[name].kind_of(template or None)
    if labels and labels <= {"safe", "unsafe"}:
        return "unsafe"
    if labels and labels <= set(REFUSAL_LABELS):
        return "refusal"
    return "harmfulness"


def response_harm_field(key: str) -> str | None:
    """The field of a refusal scorer's lines that also says whether the response is harmful, if it has one."""
    name, _, template = key.partition("/")
    return SCORERS[name].harm_fields.get(template) if name in SCORERS and template else None


def _rate(group: tuple[str, str, str, str], metric: str, hits: int, n_scored: int, n_unscored: int) -> MetricRow:
    low, high = wilson_interval(hits, n_scored) if n_scored else (None, None)
    return MetricRow(*group, metric, hits / n_scored if n_scored else None, low, high, n_scored, n_unscored)


def _mean(group: tuple[str, str, str, str], metric: str, values: list[float], n_unscored: int) -> MetricRow:
    mean, low, high = mean_interval(values) if values else (None, None, None)
    return MetricRow(*group, metric, mean, low, high, len(values), n_unscored)


def group_metrics(group: tuple[str, str, str, str], scores: Sequence[Mapping[str, Any]]) -> list[MetricRow]:
    """The metric rows of one (model, suite, category, scorer) group."""
    scored = [s for s in scores if s.get("value") is not None]
    n_unscored = len(scores) - len(scored)
    kind = metric_kind(group[3], {str(s["label"]) for s in scored if s.get("label") is not None})
    if kind == "refusal":
        if group[2] == "harmful":
            rows = [_rate(group, "harmful_compliance_rate", sum(s["label"] == "full_compliance" for s in scored),
                          len(scored), n_unscored)]
        else:
            refused = sum(s["label"] in ("full_refusal", "partial_refusal") for s in scored)
            rows = [_rate(group, "refusal_rate", refused, len(scored), n_unscored)]
        if harm_field := response_harm_field(group[3]):
            # Only a yes/no answer counts: an N/A (None) or absent field is unscored for this rate, never "safe".
            answers = [s[harm_field] for s in scored if isinstance(s.get(harm_field), bool)]
            rows.append(_rate(group, "unsafe_rate", sum(answers), len(answers), len(scores) - len(answers)))
        return rows
    if kind == "moderation":
        return [_rate(group, "flagged_rate", sum(s["label"] == "flagged" for s in scored), len(scored), n_unscored),
                _mean(group, "mean_max_score", [float(s["value"]) for s in scored], n_unscored)]
    if kind == "unsafe":
        return [_rate(group, "unsafe_rate", sum(s["label"] == "unsafe" for s in scored), len(scored), n_unscored)]
    return [_mean(group, "mean_harmfulness", [float(s["value"]) for s in scored], n_unscored)]


def compute_metrics(scores: Iterable[Mapping[str, Any]]) -> list[MetricRow]:
    """Group score lines by (model, suite, category, scorer) and compute each group's metrics, sorted.

    Raises:
        InputError: the same (model, scorer, id) occurs twice (a file given twice, or two runs mixed up).
    """
    groups: dict[tuple[str, str, str, str], list[Mapping[str, Any]]] = defaultdict(list)
    seen: set[tuple[str, str, str]] = set()
    for score in scores:
        key = scorer_key(score)
        model = str(score.get("model") or _MISSING)
        identity = (model, key, str(score["id"]))
        if identity in seen:
            raise InputError(f"id {score['id']!r} is scored twice by {key} for model {model}; give each score file once")
        seen.add(identity)
        group = (model, str(score.get("suite") or _MISSING), str(score.get("category") or _MISSING), key)
        groups[group].append(score)
    return [row for group in sorted(groups) for row in group_metrics(group, groups[group])]


def score_files(paths: Sequence[Path]) -> list[Path]:
    """Expand directories into the score files under them (``*.jsonl`` whose lines carry a ``scorer``)."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = [f for f in sorted(path.rglob("*.jsonl")) if _is_score_file(f)]
            if not found:
                raise input_error(path, "holds no score files (*.jsonl with a 'scorer' field)")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise input_error(path, "file or directory not found")
    return files


def _is_score_file(path: Path) -> bool:
    with path.open(encoding="utf-8") as handle:
        first = handle.readline()
    try:
        return isinstance(record := json.loads(first), dict) and "scorer" in record and "value" in record
    except json.JSONDecodeError:
        return False


def read_scores(paths: Sequence[Path]) -> list[dict[str, Any]]:
    """Read score lines from files and directories; every line needs ``id``, ``scorer`` and ``value``."""
    scores = []
    for file in score_files(paths):
        for row in read_rows(file, "jsonl"):
            for field in ("id", "scorer", "value"):
                if field not in row.values:
                    raise input_error(file, f"field {field!r} is missing; is this a scores file?", row.where)
            scores.append(dict(row.values))
    return scores


def rows_to_csv(rows: Sequence[MetricRow]) -> str:
    """The metric rows as CSV text, with a header."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[f.name for f in fields(MetricRow)], lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in asdict(row).items()})
    return buffer.getvalue()


def write_metrics(rows: Sequence[MetricRow], out_dir: Path) -> tuple[Path, Path]:
    """Write ``metrics.csv`` and ``metrics.json`` into ``out_dir`` (atomically); return both paths."""
    csv_path, json_path = out_dir / "metrics.csv", out_dir / "metrics.json"
    write_text_atomic(csv_path, rows_to_csv(rows))
    write_json_atomic(json_path, [asdict(row) for row in rows])
    return csv_path, json_path
