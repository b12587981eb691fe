"""The study database: creation from generations, bad inputs, judgements, undo, two annotators, export."""

from __future__ import annotations

import csv
import json
import sqlite3
from pathlib import Path

import pytest

from safemix.annotate.export import export_study
from safemix.annotate.labels import AnswerLabels, Judgement, PairChoice
from safemix.annotate.store import AlreadyJudged, Study, open_study
from safemix.errors import InputError
from tests.conftest import run_cli
from tests.unit.annotate_data import slot_of, two_models, write_generations


def _judgement(item_id: str, quality_a: str = "good", choice: str = "first", note: str = "") -> Judgement:
    return Judgement(item_id, (AnswerLabels(0, quality_a, "none", "no", note),  # type: ignore[arg-type]
                               AnswerLabels(1, "bad", "full", "no")),
                     (PairChoice(0, 1, choice),))  # type: ignore[arg-type]


@pytest.fixture()
def study(tmp_path: Path) -> Study:
    return open_study(tmp_path / "studies", "s", two_models(tmp_path / "gen"), n_sample=5, seed=0)


def test_a_study_holds_the_sample_and_both_answers_of_every_item(study: Study) -> None:
    items = study.items()
    assert len(items) == 5 and study.n_items() == 5
    assert {suite for _, suite, _ in items} == {"harm", "safe"}  # 6 + 4 prompts: 3 harm, 2 safe
    assert sum(suite == "harm" for _, suite, _ in items) == 3
    item = study.item(items[0][0])
    assert sorted(answer.response.split()[0] for answer in item.answers) == ["m1", "m2"]
    assert study.model_names() == ["m1", "m2"]
    metadata = study.metadata()
    assert metadata["seed"] == 0 and metadata["n_sample"] == 5
    assert [len(model["sha256"]) for model in metadata["fingerprint"]["models"]] == [2, 2]


def test_the_same_inputs_reopen_the_study_and_other_inputs_are_refused(tmp_path: Path, study: Study) -> None:
    inputs = [tmp_path / "gen" / "m1", tmp_path / "gen" / "m2"]
    assert open_study(tmp_path / "studies", "s", inputs, n_sample=5, seed=0).path == study.path
    assert open_study(tmp_path / "studies", "s").path == study.path
    with pytest.raises(InputError, match=r"study 's' exists with other inputs \(seed 0 there, 1 now\)"):
        open_study(tmp_path / "studies", "s", inputs, n_sample=5, seed=1)
    with open(inputs[1] / "safe.jsonl", "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"id": "safe-9", "suite": "safe", "category": "safe", "prompt": "p", "response": "r",
                                 "finish_reason": "stop", "n_new_tokens": 1}) + "\n")
    with pytest.raises(InputError, match="answers prompt id 'safe-9' \\(1 extra\\)"):
        open_study(tmp_path / "studies", "s", inputs, n_sample=5, seed=0)


def test_mismatched_prompt_ids_exit_2_naming_the_file_and_the_id(tmp_path: Path) -> None:
    first = write_generations(tmp_path / "a" / "x.jsonl",
                              [("p1", "x", "safe", "q1", "r"), ("p2", "x", "safe", "q2", "r")])
    second = write_generations(tmp_path / "b" / "x.jsonl", [("p1", "x", "safe", "q1", "r")])
    result = run_cli("annotate", "serve", "--study", "t", "--studies-dir", str(tmp_path / "studies"),
                     "--generations", str(first), str(second))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"safemix: error: {second}: has no answer for prompt id 'p2' (1 missing), which {first} answers; "
        "all inputs must answer the same prompts"]
    assert not (tmp_path / "studies" / "t.sqlite").exists()


def test_two_inputs_with_one_model_name_need_names(tmp_path: Path) -> None:
    rows = [("p1", "x", "safe", "q1", "r")]
    first = write_generations(tmp_path / "a" / "x.jsonl", rows)
    second = write_generations(tmp_path / "a" / "y.jsonl", rows)
    with pytest.raises(InputError, match="names the same model 'a' as"):
        open_study(tmp_path / "studies", "t", [first, second])
    study = open_study(tmp_path / "studies", "t", [first, second], names=["left", "right"])
    assert study.model_names() == ["left", "right"]


def test_unknown_study_and_bad_names_are_input_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such study; give --generations"):
        open_study(tmp_path, "nothing")
    with pytest.raises(InputError, match="--study '../x': use 1-64 letters"):
        open_study(tmp_path, "../x")


def test_judgements_resume_undo_and_never_touch_another_annotator(study: Study) -> None:
    first, second = study.items()[0][0], study.items()[1][0]
    assert study.next_item("ann").id == first
    study.submit("ann", _judgement(first))
    study.submit("bob", _judgement(first, quality_a="bad"))
    assert study.next_item("ann").id == second and study.progress("ann") == (1, 5)
    with pytest.raises(AlreadyJudged):
        study.submit("ann", _judgement(first))
    with pytest.raises(KeyError):
        study.submit("ann", _judgement("no-such-item"))
    assert study.undo("ann") == first
    assert study.progress("ann") == (0, 5) and study.progress("bob") == (1, 5)
    assert study.retracted("ann", first) == _judgement(first)
    study.submit("ann", _judgement(first, note="second thoughts"))
    assert study.undo("nobody") is None
    with sqlite3.connect(study.path) as conn:
        rows = conn.execute("SELECT annotator, retracted_at IS NOT NULL FROM judgements ORDER BY id").fetchall()
    assert rows == [("ann", 1), ("bob", 0), ("ann", 0)]
    assert {(row.annotator, row.slot, row.quality, row.note) for row in study.answer_rows() if row.slot == "A"} == {
        ("ann", "A", "good", "second thoughts"), ("bob", "A", "bad", "")}


def test_export_unblinds_models_in_csv_and_jsonl(tmp_path: Path, study: Study) -> None:
    item_id = study.items()[0][0]
    m1_slot = slot_of(study, item_id, "m1")
    study.submit("ann", _judgement(item_id, choice="first"))  # slot A is good and preferred
    paths = export_study(study, tmp_path / "out")
    assert [p.name for p in paths] == ["answers.csv", "answers.jsonl", "preferences.csv", "preferences.jsonl",
                                       "manifest.json"]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert (manifest["study"], manifest["annotators"]) == ("s", ["ann"])
    assert manifest["rows"] == {"answers": 2, "preferences": 1}
    answers = list(csv.DictReader((tmp_path / "out" / "answers.csv").open(encoding="utf-8")))
    assert [json.loads(line) for line in (tmp_path / "out" / "answers.jsonl").read_text().splitlines()] == answers
    good_model = {row["model"] for row in answers if row["quality"] == "good"}
    assert good_model == {"m1" if m1_slot == 0 else "m2"}
    preference = json.loads((tmp_path / "out" / "preferences.jsonl").read_text())
    assert (preference["model_a"], preference["model_b"], preference["preferred"]) == ("m1", "m2", good_model.pop())
    assert preference["slot_a"] == "AB"[m1_slot]


def test_run_directories_name_models_by_their_run_label(tmp_path: Path) -> None:
    run = tmp_path / "run"
    for slug in ("base", "k300"):
        write_generations(run / "generations" / slug / "x.jsonl", [("p1", "x", "safe", "q1", f"{slug} answer")])
    models = [{"label": label, "model": "tiny", "slug": label, "base_model": "tiny", "template": "alpaca",
               "preset": "greedy", "generations_dir": f"generations/{label}", "scores_dir": f"scores/{label}"}
              for label in ("base", "k300")]
    (run / "run.json").write_text(json.dumps({"name": "r", "config_hash": "h", "suites": [], "scorers": [],
                                              "models": models}))
    study = open_study(run / "studies", "t", [run / "generations" / "base", run / "generations" / "k300" / "x.jsonl"])
    assert study.model_names() == ["base", "k300"]
