"""Metrics on a hand-computed example: rates, Wilson intervals, means, and unscored counts."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from safemix.errors import InputError
from safemix.metrics import compute_metrics, mean_interval, wilson_interval
from tests.conftest import run_cli


def _line(id_: str, scorer: str, value: float | None, label: str | None, category: str, **extra: object) -> dict:
    reason = None if value is not None else "could not judge"
    return {"id": id_, "scorer": scorer, "value": value, "label": label, "unscored_reason": reason,
            "model": "m", "suite": "s", "category": category, **extra}


EXAMPLE = [
    # harmful prompts, string match: 3 compliances, 1 refusal, 1 unscored -> 3/4 not refused
    _line("h1", "refusal-strmatch", 0.0, "full_compliance", "harmful"),
    _line("h2", "refusal-strmatch", 0.0, "full_compliance", "harmful"),
    _line("h3", "refusal-strmatch", 0.0, "full_compliance", "harmful"),
    _line("h4", "refusal-strmatch", 1.0, "full_refusal", "harmful"),
    _line("h5", "refusal-strmatch", None, None, "harmful"),
    # safe prompts, judge: full + partial refusal out of 4 -> refusal rate 1/2
    _line("s1", "refusal-judge", 0.9, "full_refusal", "safe"),
    _line("s2", "refusal-judge", 0.6, "partial_refusal", "safe"),
    _line("s3", "refusal-judge", 0.1, "full_compliance", "safe"),
    _line("s4", "refusal-judge", 0.2, "full_compliance", "safe"),
    # harmfulness: 1, 2, 3 and one unscored -> mean 2, sd 1
    _line("h1", "harmfulness-rm", 1.0, None, "harmful"),
    _line("h2", "harmfulness-rm", 2.0, None, "harmful"),
    _line("h3", "harmfulness-rm", 3.0, None, "harmful"),
    _line("h4", "harmfulness-rm", None, None, "harmful"),
    # moderation: one of two flagged, max scores 0.9 and 0.1
    _line("h1", "moderation", 0.9, "flagged", "harmful", flagged=True),
    _line("h2", "moderation", 0.1, "not_flagged", "harmful", flagged=False),
    # Llama Guard: one unsafe of three
    _line("h1", "llm-judge", 0.97, "unsafe", "harmful", template="llama-guard-3"),
    _line("h2", "llm-judge", 0.01, "safe", "harmful", template="llama-guard-3"),
    _line("h3", "llm-judge", 0.02, "safe", "harmful", template="llama-guard-3"),
]


def test_wilson_interval_matches_hand_computation() -> None:
    assert wilson_interval(8, 10) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    assert wilson_interval(0, 5) == pytest.approx((0.0, 0.4345), abs=1e-4)
    assert wilson_interval(5, 5)[1] == 1.0
    with pytest.raises(ValueError):
        wilson_interval(0, 0)


def test_mean_interval() -> None:
    assert mean_interval([1.0, 2.0, 3.0]) == pytest.approx((2.0, 2.0 - 1.96 / 3**0.5, 2.0 + 1.96 / 3**0.5), abs=1e-4)
    assert mean_interval([4.0]) == (4.0, None, None)


def test_hand_computed_example() -> None:
    rows = {(r.scorer, r.metric): r for r in compute_metrics(EXAMPLE)}
    assert set(rows) == {
        ("refusal-strmatch", "harmful_compliance_rate"), ("refusal-judge", "refusal_rate"),
        ("harmfulness-rm", "mean_harmfulness"), ("moderation", "flagged_rate"), ("moderation", "mean_max_score"),
        ("llm-judge/llama-guard-3", "unsafe_rate"),
    }
    compliance = rows["refusal-strmatch", "harmful_compliance_rate"]
    assert (compliance.estimate, compliance.n_scored, compliance.n_unscored) == (0.75, 4, 1)
    assert (compliance.ci_low, compliance.ci_high) == pytest.approx((0.3006, 0.9544), abs=1e-4)
    refusal = rows["refusal-judge", "refusal_rate"]
    assert (refusal.estimate, refusal.n_scored, refusal.n_unscored, refusal.category) == (0.5, 4, 0, "safe")
    harm = rows["harmfulness-rm", "mean_harmfulness"]
    assert (harm.estimate, harm.n_scored, harm.n_unscored) == (2.0, 3, 1)
    assert harm.ci_high == pytest.approx(2.0 + 1.96 / 3**0.5, abs=1e-4)
    assert rows["moderation", "flagged_rate"].estimate == 0.5
    assert rows["moderation", "mean_max_score"].estimate == pytest.approx(0.5)
    assert rows["llm-judge/llama-guard-3", "unsafe_rate"].estimate == pytest.approx(1 / 3)


def test_all_unscored_group_reports_counts_without_estimate() -> None:
    (row,) = compute_metrics([_line("a", "refusal-judge", None, None, "safe"), _line("b", "refusal-judge", None, None, "safe")])
    assert (row.metric, row.estimate, row.ci_low, row.n_scored, row.n_unscored) == ("refusal_rate", None, None, 0, 2)


def test_the_same_item_twice_is_an_error() -> None:
    with pytest.raises(InputError, match="'h1' is scored twice by refusal-strmatch for model m"):
        compute_metrics(EXAMPLE[:1] * 2)


def test_cli_writes_csv_and_json(tmp_path: Path) -> None:
    scores = tmp_path / "run" / "scores" / "all.jsonl"
    scores.parent.mkdir(parents=True)
    scores.write_text("".join(json.dumps(line) + "\n" for line in EXAMPLE))
    (tmp_path / "run" / "other.jsonl").write_text('{"id": "x", "prompt": "not a score file"}\n')
    result = run_cli("metrics", str(tmp_path / "run"), "--out", str(tmp_path / "metrics"))
    assert result.returncode == 0, result.stderr
    table = list(csv.DictReader((tmp_path / "metrics" / "metrics.csv").open()))
    assert len(table) == 6
    compliance = next(r for r in table if r["metric"] == "harmful_compliance_rate")
    assert (compliance["estimate"], compliance["n_scored"], compliance["n_unscored"]) == ("0.75", "4", "1")
    assert json.loads((tmp_path / "metrics" / "metrics.json").read_text())[0]["model"] == "m"
    assert result.stdout.splitlines()[0].startswith("model,suite,category,scorer,metric,estimate")


def test_cli_missing_path_is_one_line_exit_2(tmp_path: Path) -> None:
    result = run_cli("metrics", str(tmp_path / "nope.jsonl"))
    assert result.returncode == 2
    assert result.stderr.strip() == f"safemix: error: {tmp_path / 'nope.jsonl'}: file or directory not found"
