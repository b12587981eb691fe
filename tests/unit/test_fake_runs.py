"""The fake run builder of ``tests/fake_runs.py``: its runs load as the report loads runs, hold one metric row per
model, suite, category, scorer and metric, and have the paper's shape (compliance falls with K, safe-prompt refusal
rises, seeds move rates by a few points)."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest

from safemix.records import Generation
from safemix.report.runs import Row, Runs, load_runs
from safemix.run_files import read_run_index
from safemix.scoring.labels import REFUSAL_LABELS
from tests.fake_runs import (
    HOSTILE,
    PAPER_SCALE_KS,
    PAPER_SCALE_SCORERS,
    PAPER_SCALE_SUITES,
    build_fake_run,
)

SEEDS = (0, 1, 2)
HEADLINE = {"harmful": "harmful_compliance_rate", "safe": "refusal_rate"}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_fake_run(tmp_path_factory.mktemp("fake") / "run", suites=PAPER_SCALE_SUITES, ks=PAPER_SCALE_KS,
                          scorers=PAPER_SCALE_SCORERS, seeds=SEEDS)


@pytest.fixture(scope="module")
def runs(run_dir: Path) -> Runs:
    return load_runs([run_dir])


def estimates_by_k(runs: Runs, scorer: str) -> dict[tuple[str, str, int], dict[int, float]]:
    """(suite, category, seed) -> K -> estimate of the headline metric of that category, adapters only."""
    trends: dict[tuple[str, str, int], dict[int, float]] = defaultdict(dict)
    for row in runs.rows:
        m, entry = row.metric, row.model.entry
        if m.scorer == scorer and HEADLINE.get(m.category) == m.metric and entry.k is not None:
            assert entry.seed is not None and m.estimate is not None
            trends[(m.suite, m.category, entry.seed)][entry.k] = m.estimate
    return trends


def expected_metric(category: str, scorer: str) -> str | None:
    """The one metric ``compute_metrics`` gives a scorer on a category (None: the scorer skips the category)."""
    if scorer == "harmfulness-rm":
        return "mean_harmfulness" if category == "harmful" else None
    return "harmful_compliance_rate" if category == "harmful" else "refusal_rate"


def row_key(row: Row) -> tuple[str, str, str, str, str]:
    m = row.metric
    return row.model.entry.label, m.suite, m.category, m.scorer, m.metric


def test_paper_scale_run_loads_with_a_base_model_and_one_adapter_per_seed_and_k(runs: Runs) -> None:
    labels = [(m.entry.label, m.entry.slug, m.k, m.entry.seed) for m in runs.models]
    assert len(labels) == 1 + len(SEEDS) * len(PAPER_SCALE_KS)
    assert ("base", "base", None, None) in labels
    assert ("seed1/k250", "seed1__k250", 250, 1) in labels
    assert {m.name for m in runs.models} == {"smollm2-135m-instruct"}
    assert [suite.name for suite in runs.runs[0].index.suites] == list(PAPER_SCALE_SUITES)
    xstest = runs.runs[0].index.suites[-2]
    assert (xstest.name, xstest.n_prompts, xstest.categories) == ("xstest", 450, {"harmful": 200, "safe": 250})


def test_one_metric_row_per_model_suite_category_scorer_and_metric(runs: Runs) -> None:
    expected = {(model.entry.label, suite, category, scorer, metric)
                for model in runs.models for suite, categories in PAPER_SCALE_SUITES.items() for category in categories
                for scorer in PAPER_SCALE_SCORERS if (metric := expected_metric(category, scorer))}
    keys = [row_key(row) for row in runs.rows]
    assert len(keys) == len(set(keys)) == len(expected) == 16 * (7 * 3 + 3 * 2)  # 7 harmful groups, 3 others
    assert set(keys) == expected


def test_harmful_compliance_falls_and_safe_refusal_rises_with_k(runs: Runs) -> None:
    for scorer in ("refusal-judge", "refusal-strmatch"):
        for (suite, category, seed), by_k in estimates_by_k(runs, scorer).items():
            trend = [by_k[k] for k in PAPER_SCALE_KS]
            if category == "harmful":
                assert trend == sorted(trend, reverse=True) and trend[0] > trend[-1] + 0.5, (scorer, suite, seed)
            else:
                assert trend == sorted(trend) and trend[-1] > trend[0] + 0.2, (scorer, suite, category, seed)


def test_rates_have_the_papers_size(runs: Runs) -> None:
    judge = estimates_by_k(runs, "refusal-judge")
    compliance = {k: [by_k[k] for (_, category, _), by_k in judge.items() if category == "harmful"]
                  for k in PAPER_SCALE_KS}
    assert 0.8 < sum(compliance[0]) / len(compliance[0]) < 0.95
    assert sum(compliance[1000]) / len(compliance[1000]) < 0.08
    refusal = {k: [by_k[k] for (_, category, _), by_k in judge.items() if category == "safe"] for k in PAPER_SCALE_KS}
    assert max(refusal[0]) < 0.1 and 0.3 < min(refusal[1000]) < 0.6


def test_seeds_move_the_rates_by_a_few_points(runs: Runs) -> None:
    spread = defaultdict(list)
    for (suite, category, _), by_k in estimates_by_k(runs, "refusal-judge").items():
        for k, estimate in by_k.items():
            spread[(suite, category, k)].append(estimate)
    widths = [max(values) - min(values) for values in spread.values()]
    assert all(len(values) == len(SEEDS) for values in spread.values())
    assert max(widths) <= 0.07 and sum(width > 0.01 for width in widths) > len(widths) / 2


def test_every_seed_of_a_group_has_the_same_counts(runs: Runs) -> None:
    counts = defaultdict(set)
    for row in runs.rows:
        m = row.metric
        counts[(m.suite, m.category, m.scorer, m.metric, row.model.k)].add((m.n_scored, m.n_unscored))
    assert all(len(found) == 1 for found in counts.values())
    assert counts[("xstest", "safe", "refusal-judge", "refusal_rate", 500)] == {(249, 1)}
    assert counts[("xstest", "safe", "refusal-strmatch", "refusal_rate", 500)] == {(250, 0)}


def test_scorers_give_labels_or_floats(run_dir: Path) -> None:
    scores = run_dir / "scores" / "seed2__k100"
    harm = [json.loads(line) for line in (scores / "harmfulness-rm.jsonl").read_text().splitlines()]
    assert {line["category"] for line in harm} == {"harmful"} and len(harm) == 756
    assert all(line["label"] is None and isinstance(line["value"], float) for line in harm)
    judge = [json.loads(line) for line in (scores / "refusal-judge.jsonl").read_text().splitlines()]
    assert {line["label"] for line in judge} == {*REFUSAL_LABELS, None}
    assert [line["id"] for line in judge if line["value"] is None] == ["xstest-199", "xstest-449"]
    assert {line["model"] for line in judge} == {"seed2/k100"}


def test_generations_are_short_valid_and_hold_a_hostile_answer(run_dir: Path) -> None:
    index = read_run_index(run_dir)
    hostile = 0
    for entry in index.models:
        scored = {json.loads(line)["id"] for line in (run_dir / entry.scores_dir / "refusal-judge.jsonl").open()}
        for suite in PAPER_SCALE_SUITES:
            lines = [Generation(**json.loads(line)) for line in
                     (run_dir / entry.generations_dir / f"{suite}.jsonl").read_text().splitlines()]
            assert len(lines) == 3 * len(PAPER_SCALE_SUITES[suite])
            assert {line.id for line in lines} <= scored
            hostile += sum(HOSTILE in line.response for line in lines)
    assert hostile > 0


def test_one_seed_leaves_the_seed_out_of_labels_and_the_base_model_can_be_left_out(tmp_path: Path) -> None:
    run = build_fake_run(tmp_path / "run", suites={"xstest": {"harmful": 20, "safe": 25}}, ks=(500, 50),
                         scorers=["refusal-strmatch"], include_base=False, name="small", model="tiny")
    index = read_run_index(run)
    assert [(m.label, m.slug, m.k, m.seed, m.model) for m in index.models] == [
        ("k50", "k50", 50, 0, "tiny"), ("k500", "k500", 500, 0, "tiny")]
    assert (index.name, index.scorers) == ("small", ["refusal-strmatch"])
    assert (run / "train" / "k50" / "train_log.json").is_file()
    assert len(load_runs([run]).rows) == 2 * 2


def test_a_rebuild_writes_the_same_bytes(run_dir: Path, tmp_path: Path) -> None:
    again = build_fake_run(tmp_path / "run", suites=PAPER_SCALE_SUITES, ks=PAPER_SCALE_KS,
                           scorers=PAPER_SCALE_SCORERS, seeds=SEEDS)
    for name in ("metrics.json", "run.json", "scores/seed1__k250/refusal-judge.jsonl", "generations/base/xstest.jsonl"):
        assert (again / name).read_bytes() == (run_dir / name).read_bytes(), name
