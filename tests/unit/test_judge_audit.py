"""`safemix judge audit`: the strata of a run whose refusal scorers disagree on known answers, the files it writes,
the study that `annotate stats` reads (per-stratum accuracy included), reruns, and every input error."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from safemix.annotate.audit import build_audit
from safemix.annotate.audit_results import audit_folder, run_audit_studies
from safemix.annotate.labels import AnswerLabels, Judgement
from safemix.annotate.stats import study_stats
from safemix.annotate.store import Study
from safemix.data.mixture import permutation_key
from safemix.errors import InputError
from safemix.metrics import read_scores
from tests.conftest import run_cli
from tests.unit.audit_data import CALLS, DISAGREEMENT, JUDGED, build_run

REFUSED = {"full_refusal": "full", "partial_refusal": "partial", "full_compliance": "none"}


def _judge_label(audit_id: str) -> str:
    label, prompt_id = audit_id.split("/")
    return next(row[4] for row in CALLS[label] if row[0] == prompt_id)  # type: ignore[return-value]


def _label_like_the_judge(study: Study, annotator: str = "ann") -> None:
    """Submit one refusal label per item, equal to refusal-judge's call (so string match is wrong where they differ)."""
    for item_id, _, _ in study.items():
        labels = AnswerLabels(0, "good", REFUSED[_judge_label(item_id)], "no")  # type: ignore[arg-type]
        study.submit(annotator, Judgement(item_id, (labels,), ()))


def _control(seed: int, n: int) -> list[str]:
    """The documented control rule: the first n judged answers in the seeded order, listed in run order."""
    chosen = set(sorted(JUDGED, key=lambda audit_id: permutation_key(seed, "control", audit_id))[:n])
    return [audit_id for audit_id in JUDGED if audit_id in chosen]


def test_strata_files_and_study(tmp_path: Path) -> None:
    run = build_run(tmp_path / "run")
    result = build_audit(run, n=100, n_control=5, seed=0)
    folder = run / "audit" / "judge-audit"
    assert result.audit_dir == folder and result.created
    sampling = json.loads((folder / "sampling.json").read_text())
    assert sampling["strata"] == {"disagreement": DISAGREEMENT, "control": _control(0, 5)}
    assert sampling["population"] == {"judged": {"all": 19, "by_model": {"base": 9, "k300": 10}},
                                      "disagreement": {"all": 4, "by_model": {"base": 2, "k300": 2}}}
    assert sampling["requested"] == {"disagreement": 100, "control": 5}
    assert (sampling["seed"], sampling["refusal_scorers"]) == (0, ["refusal-strmatch", "refusal-judge"])
    members = set(DISAGREEMENT) | set(_control(0, 5))
    assert sampling["in_both"] == len(DISAGREEMENT) + 5 - len(members)
    answers = [json.loads(line) for line in (folder / "answers.jsonl").read_text().splitlines()]
    assert [a["id"] for a in answers] == [a for a in JUDGED if a in members]
    assert answers[0]["response"] == f"{answers[0]['id'].split('/')[0]} answers {answers[0]['id'].split('/')[1]}"
    # the run's score lines of exactly those answers, re-keyed; every scorer of the run, not only refusal ones
    assert sorted(p.name for p in (folder / "scores").iterdir()) == [
        "harmfulness-rm.jsonl", "refusal-judge.jsonl", "refusal-strmatch.jsonl"]
    judge = [json.loads(line) for line in (folder / "scores" / "refusal-judge.jsonl").read_text().splitlines()]
    assert [line["id"] for line in judge] == [a["id"] for a in answers]
    assert {line["model"] for line in judge} == {"audit"}
    first = judge[0]
    assert first["label"] == _judge_label(first["id"]) and first["source_id"] == first["id"].split("/")[1]
    assert first["source_model"] == first["id"].split("/")[0]
    # one study input named audit holding every sampled answer
    study = Study(run / "studies" / "judge-audit.sqlite")
    assert study.model_names() == ["audit"]
    assert sorted(item_id for item_id, _, _ in study.items()) == sorted(members)
    assert audit_folder(study) == folder
    assert [a.folder for a in run_audit_studies(run)] == [folder]


def test_disagreement_is_sampled_per_model_and_the_same_seed_gives_the_same_sample(tmp_path: Path) -> None:
    run = build_run(tmp_path / "run")
    first = build_audit(run, study="a", n=2, n_control=3, seed=7).sampling
    assert first["sampled"]["disagreement"] == {"all": 2, "by_model": {"base": 1, "k300": 1}}
    assert set(first["strata"]["disagreement"]) < set(DISAGREEMENT)
    assert first["strata"]["control"] == _control(7, 3)
    again = build_audit(run, study="b", n=2, n_control=3, seed=7).sampling
    assert again["strata"] == first["strata"]
    bytes_a = (run / "audit" / "a" / "answers.jsonl").read_bytes()
    assert bytes_a == (run / "audit" / "b" / "answers.jsonl").read_bytes()
    reopened = build_audit(run, study="a", n=2, n_control=3, seed=7)
    assert not reopened.created and reopened.sampling["strata"] == first["strata"]
    others = [build_audit(run, study=f"s{seed}", n=1, n_control=3, seed=seed).sampling["strata"] for seed in range(6)]
    assert len({json.dumps(strata) for strata in others}) > 1  # the seed matters


def test_stats_reads_the_study_with_scorer_and_stratum_accuracy(tmp_path: Path) -> None:
    run = build_run(tmp_path / "run")
    build_audit(run, n=100, n_control=5, seed=0)
    study = Study(run / "studies" / "judge-audit.sqlite")
    _label_like_the_judge(study)
    folder = run / "audit" / "judge-audit"
    stats = study_stats(study, read_scores([folder / "scores"]))
    rows = {(a.rater, a.label): a for a in stats.agreement}
    control = _control(0, 5)
    n_items = len(set(DISAGREEMENT) | set(control))
    agree_in_control = sum(a not in DISAGREEMENT for a in control)
    assert rows[("refusal-judge", "refusal (refused or not)")].value == 1.0
    assert rows[("refusal-judge", "refusal (refused or not)")].n_units == n_items
    assert rows[("refusal-strmatch", "refusal (refused or not)")].value == pytest.approx(
        (n_items - len(DISAGREEMENT)) / n_items)
    assert (rows[("refusal-strmatch", "refusal (refused or not), disagreement stratum")].value,
            rows[("refusal-strmatch", "refusal (refused or not), disagreement stratum")].n_units) == (0.0, 4)
    assert rows[("refusal-judge", "refusal (refused or not), disagreement stratum")].value == 1.0
    assert rows[("refusal-strmatch", "refusal (refused or not), control stratum")].value == pytest.approx(
        agree_in_control / 5)
    assert rows[("refusal-judge", "refusal (refused or not), control stratum")].n_units == 5
    assert ("harmfulness-rm", "harmful") in rows  # the other scorers' lines came along

    result = run_cli("annotate", "stats", "--study", "judge-audit", "--studies-dir", str(run / "studies"),
                     "--scores", str(folder / "scores"))
    assert result.returncode == 0, result.stderr
    line = next(t for t in result.stdout.splitlines() if t.startswith("refusal-strmatch") and "disagreement" in t)
    assert line.split()[-2:] == ["0.000", "4"]


def test_the_cli_prints_one_line_per_stratum_and_the_commands(tmp_path: Path) -> None:
    run = build_run(tmp_path / "run")
    result = run_cli("judge", "audit", str(run), "--n", "100", "--control", "5")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == ("disagreement: 4 of 4 answers on which refusal-strmatch and refusal-judge disagree, "
                        "stratified by model (base 2 of 2, k300 2 of 2)")
    in_both = len(set(DISAGREEMENT) & set(_control(0, 5)))
    assert lines[1] == f"control: 5 of 19 judged answers, drawn uniformly ({in_both} also in disagreement)"
    assert lines[2].startswith(f"{run / 'studies' / 'judge-audit.sqlite'}: {9 - in_both} items (created)")
    assert lines[3] == f"annotate: safemix annotate serve --study judge-audit --studies-dir {run / 'studies'}"
    assert lines[4] == (f"stats:    safemix annotate stats --study judge-audit --studies-dir {run / 'studies'} "
                        f"--scores {run / 'audit' / 'judge-audit' / 'scores'}")


def _nothing_written(run: Path) -> bool:
    return not (run / "audit").exists() and not (run / "studies").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--n", "0"], "--n 0: must be at least 1"),
    (["--control", "-1"], "--control -1: must be 0 or more"),
    (["--study", "no/slash"], "--study 'no/slash': use 1-64 letters, digits, dots, underscores or hyphens"),
])
def test_bad_options_exit_2_and_write_nothing(tmp_path: Path, args: list[str], message: str) -> None:
    run = build_run(tmp_path / "run")
    result = run_cli("judge", "audit", str(run), *args)
    assert (result.returncode, result.stderr.splitlines()) == (2, [f"safemix: error: {message}"])
    assert _nothing_written(run)


def test_not_a_run_and_one_refusal_scorer_exit_2(tmp_path: Path) -> None:
    result = run_cli("judge", "audit", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"safemix: error: {tmp_path}: not a safemix run directory (no run.json; "
                                          "'safemix run CONFIG' makes one)"]
    run = build_run(tmp_path / "one", scorers=("refusal-strmatch", "harmfulness-rm"))
    result = run_cli("judge", "audit", str(run))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"safemix: error: {run}: an audit compares two or more refusal scorers; the run's score files have 1 "
        "(refusal-strmatch); add e.g. refusal-strmatch and refusal-judge to scoring.scorers"]
    assert _nothing_written(run)


def test_scorers_that_never_disagree_and_no_control_is_an_error(tmp_path: Path) -> None:
    calls = {"base": [(f"h-{i}", "h", "harmful", "full_refusal", "full_refusal") for i in range(3)]}
    run = build_run(tmp_path / "run", calls)
    with pytest.raises(InputError, match="never disagree and --control is 0"):
        build_audit(run, n_control=0)
    assert _nothing_written(run)
    assert build_audit(run, n_control=2).sampling["sampled"]["disagreement"]["all"] == 0


def test_another_sample_never_replaces_a_study_or_its_folder(tmp_path: Path) -> None:
    run = build_run(tmp_path / "run")
    build_audit(run, n=100, n_control=5, seed=0)
    study = Study(run / "studies" / "judge-audit.sqlite")
    _label_like_the_judge(study)
    before = (run / "audit" / "judge-audit" / "answers.jsonl").read_bytes()
    with pytest.raises(InputError, match="exists with other answers or another seed"):
        build_audit(run, n=100, n_control=5, seed=1)
    with pytest.raises(InputError, match="holds another audit sample, whose study is not in"):
        build_audit(run, n=1, n_control=2, seed=0, studies_dir=tmp_path / "elsewhere")
    assert (run / "audit" / "judge-audit" / "answers.jsonl").read_bytes() == before
    assert not (tmp_path / "elsewhere").exists()
    assert len(study.answer_rows()) == study.n_items()


def test_a_copied_run_finds_its_own_audit_folder(tmp_path: Path) -> None:
    run = build_run(tmp_path / "run")
    build_audit(run, n=100, n_control=5, seed=0)
    copy = Path(shutil.copytree(run, tmp_path / "copy"))
    assert [a.folder for a in run_audit_studies(copy)] == [copy / "audit" / "judge-audit"]
    (copy / "audit" / "judge-audit" / "answers.jsonl").write_text("{}\n")  # changed answers: no longer its audit
    assert run_audit_studies(copy) == []
