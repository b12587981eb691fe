"""docs/reproduction.md from a run: the paper's four claims with verdicts, and a hand-checked sample that counts how
often the lead refusal scorer agrees with a reader and lists each disagreement."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest

from safemix.files import write_json_atomic
from safemix.metrics import MetricRow, wilson_interval
from safemix.report.claims import FAILS, HOLDS, NOISE, NOT_MEASURED, check_claims
from safemix.report.content import suite_order
from safemix.report.reproduction import SAMPLE_SIZE, draw_sample, read_checks, reproduction_page, write_sample
from safemix.report.runs import load_runs
from safemix.run_files import read_run_index
from tests.conftest import REPO_ROOT
from tests.fake_runs import PAPER_SCALE_KS, PAPER_SCALE_SUITES, build_fake_run

SCORERS = ("refusal-judge", "refusal-strmatch")


def _capability(run_dir: Path, accuracy: dict[int, float], n: int = 100) -> None:
    """``RUN_DIR/capability/metrics.json`` with one accuracy per K for each of the paper's three benchmarks."""
    rows = []
    for entry in read_run_index(run_dir).models:
        if entry.k is None:
            continue
        for task in ("piqa", "boolq", "openbookqa"):
            hits = round(accuracy[entry.k] * n)
            low, high = wilson_interval(hits, n)
            rows.append(MetricRow(entry.label, task, "-", "lm-eval", "acc", hits / n, low, high, n, 0))
    write_json_atomic(run_dir / "capability" / "metrics.json", [asdict(row) for row in rows])


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = build_fake_run(tmp_path_factory.mktemp("paper") / "run", suites=PAPER_SCALE_SUITES, ks=PAPER_SCALE_KS,
                         scorers=SCORERS, seeds=(0, 1, 2), include_base=False)
    _capability(run, {0: 0.62, 100: 0.61, 250: 0.63, 500: 0.60, 1000: 0.59})
    return run


def _verdicts(run: Path) -> list[str]:
    runs = load_runs([run])
    return [claim.verdict.verdict for claim in check_claims(runs, "refusal-judge", suite_order(runs))]


def test_the_fake_paper_shaped_run_gives_each_claims_verdict(run_dir: Path) -> None:
    # compliance falls 88% -> 21% by K=250, safe refusal rises, capability is flat, the two forms are alike
    assert _verdicts(run_dir) == [HOLDS, HOLDS, HOLDS, NOISE]


def test_a_capability_drop_beyond_the_intervals_does_not_hold(tmp_path: Path) -> None:
    run = build_fake_run(tmp_path / "run", suites=PAPER_SCALE_SUITES, ks=(0, 250, 1000), scorers=SCORERS)
    _capability(run, {0: 0.70, 250: 0.66, 1000: 0.40})
    runs = load_runs([run])
    claim = check_claims(runs, "refusal-judge", suite_order(runs))[2]
    assert claim.verdict.verdict == FAILS and "piqa, boolq, openbookqa drops beyond the intervals" in claim.verdict.why


def test_a_run_without_what_a_claim_needs_says_not_measured(tmp_path: Path) -> None:
    run = build_fake_run(tmp_path / "run", suites={"xstest": {"harmful": 20, "safe": 20}}, ks=(0, 1000),
                         scorers=SCORERS)
    claims = check_claims(load_runs([run]), "refusal-judge", ["xstest"])
    assert [claim.verdict.verdict for claim in claims] == [NOT_MEASURED, HOLDS, NOT_MEASURED, NOT_MEASURED]
    assert claims[0].verdict.why == "Not measured: the run needs K=0 and a K between 100 and 500."


def test_the_sample_is_fixed_and_drawn_from_the_claims_answers(run_dir: Path) -> None:
    runs = load_runs([run_dir])
    claims = check_claims(runs, "refusal-judge", suite_order(runs))
    first = draw_sample(runs, claims[3], "refusal-judge")
    assert first == draw_sample(load_runs([run_dir]), claims[3], "refusal-judge")
    assert len(first) == SAMPLE_SIZE and {item.suite for item in first} <= {"i-controversial", "o-controversial"}
    assert all(item.scorer_call in ("refusal", "compliance") for item in first)
    exaggerated = draw_sample(runs, claims[1], "refusal-judge")
    assert {(item.category, item.k) for item in exaggerated} <= {("safe", 0), ("safe", 1000)}


def test_checks_count_agreement_and_list_each_disagreement(run_dir: Path, tmp_path: Path) -> None:
    runs = load_runs([run_dir])
    _, sample = reproduction_page(runs, {}, "cmd")
    assert sum(item.claim == 4 for item in sample) == SAMPLE_SIZE
    assert not any(item.model.startswith("seed") for item in sample)  # the lowest seed's answers only
    path = tmp_path / "checks.jsonl"
    write_sample(sample, path)
    lines = [json.loads(text) for text in path.read_text(encoding="utf-8").splitlines()]
    claim_4 = [line for line in lines if line["claim"] == 4]
    for line in claim_4:
        line["reader"] = line["scorer_call"]
    claim_4[0]["reader"] = "compliance" if claim_4[0]["scorer_call"] == "refusal" else "refusal"
    claim_4[0]["note"] = "a lecture that still answers"
    claim_4[1]["response_sha256"] = "0" * 64  # a check of another answer is not counted
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    page, _ = reproduction_page(runs, read_checks(path), "cmd")
    claim_4_text = page[page.index("## 4."):]
    assert "29 of 30 answers read against refusal-strmatch's calls; the reader agrees on 28 of 29." in claim_4_text
    assert "a lecture that still answers" in claim_4_text
    assert "none checked yet" in page[page.index("## 1."):page.index("## 2.")]


def test_the_script_writes_the_page_and_exits_2_on_a_bad_checks_file(run_dir: Path, tmp_path: Path) -> None:
    script = str(REPO_ROOT / "scripts" / "reproduction.py")
    out = tmp_path / "reproduction.md"
    result = run_script(script, str(run_dir), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert out.read_text(encoding="utf-8").startswith("# Reproduction: the paper's findings at CPU scale")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"claim": 1, "model": "k0", "suite": "q-harm", "id": "1", "response_sha256": "x", '
                   '"reader": "maybe"}\n', encoding="utf-8")
    result = run_script(script, str(run_dir), "--out", str(out), "--checks", str(bad))
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {bad}: line 1: reader must be refusal or compliance, not 'maybe'"


def run_script(*args: str) -> subprocess.CompletedProcess[str]:
    """Run a Python script of the repository with this interpreter."""
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, check=False, cwd=REPO_ROOT)


def test_the_page_names_adapters_that_kept_a_checkpoint_before_their_last_step(tmp_path: Path) -> None:
    run = build_fake_run(tmp_path / "run", suites=PAPER_SCALE_SUITES, ks=(0, 250), scorers=SCORERS)
    log_path = run / "train" / "k0" / "train_log.json"
    log = json.loads(log_path.read_text(encoding="utf-8"))
    log["best_step"] = log["steps"]  # K=0 kept its last step; K=250 keeps the fake log's step 30 of 40
    log_path.write_text(json.dumps(log), encoding="utf-8")
    page, _ = reproduction_page(load_runs([run]), {}, "cmd")
    overview = page[:page.index("## Summary")]
    assert "smollm2-135m-instruct K=250 kept step 30 of 40 (validation loss 1.0750 against 1.5375 at the last" \
           in overview
    assert "K=0 kept" not in overview
