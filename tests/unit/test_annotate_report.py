"""The report's "Human evaluation" section: present only with a study in RUN_DIR/studies, using the run's scores."""

from __future__ import annotations

import json
from pathlib import Path

from safemix.annotate.labels import AnswerLabels, Judgement, PairChoice
from safemix.annotate.report import human_evaluation_section
from safemix.annotate.store import open_study
from safemix.report.render import render_markdown
from safemix.report.write import SECTION_PROVIDERS
from tests.unit.annotate_data import slot_of, write_generations


def _run(run_dir: Path) -> Path:
    """A run directory with two models' generations and refusal scores, as 'safemix run' leaves them."""
    models = []
    for label, answer, score_label in (("base", "Sure, here it is.", "full_compliance"),
                                       ("k300", "I can't help with that.", "full_refusal")):
        write_generations(run_dir / "generations" / label / "harm.jsonl",
                          [(f"harm-{i}", "harm", "harmful", f"harmful prompt {i}", answer) for i in range(3)])
        scores = [{"id": f"harm-{i}", "scorer": "refusal-strmatch", "value": 1.0, "label": score_label,
                   "unscored_reason": None, "model": label, "suite": "harm", "category": "harmful"} for i in range(3)]
        (run_dir / "scores" / label).mkdir(parents=True)
        scores_file = run_dir / "scores" / label / "refusal-strmatch.jsonl"
        scores_file.write_text("".join(json.dumps(s) + "\n" for s in scores))
        models.append({"label": label, "model": "tiny", "slug": label, "base_model": "tiny", "template": "alpaca",
                       "preset": "greedy", "generations_dir": f"generations/{label}", "scores_dir": f"scores/{label}"})
    (run_dir / "run.json").write_text(json.dumps({"name": "r", "config_hash": "h", "suites": [], "scorers": [],
                                                  "models": models}))
    return run_dir


def test_no_study_no_section(tmp_path: Path) -> None:
    assert human_evaluation_section([_run(tmp_path / "run")]) is None


def test_a_study_in_the_run_gives_rates_preferences_and_scorer_agreement(tmp_path: Path) -> None:
    run = _run(tmp_path / "run")
    study = open_study(run / "studies", "pilot", [run / "generations" / "base", run / "generations" / "k300"])
    assert "no judgements yet" in render_markdown("t", [human_evaluation_section([run])])
    for item_id, _, _ in study.items():
        refusal_slot = slot_of(study, item_id, "k300")
        labels = sorted((AnswerLabels(refusal_slot, "good", "full", "no"),
                         AnswerLabels(1 - refusal_slot, "bad", "none", "yes")), key=lambda a: a.slot)
        study.submit("ann", Judgement(item_id, tuple(labels),
                                      (PairChoice(0, 1, "first" if refusal_slot == 0 else "second"),)))
    section = human_evaluation_section([run])
    assert section.title == "Human evaluation"
    assert section.paragraphs[1] == "Study pilot: 3 items, models base, k300, 1 annotator(s)."
    rates, preferences, agreement = section.tables
    assert rates.caption.startswith("pilot: Human labels per model")
    assert rates.rows[0][:5] == ["base", "harm", "harmful", "3", "0.0%"]
    assert preferences.rows == [["base", "k300", "all", "0", "3", "0", "0.0%", "[0.0, 56.1]"]]
    assert ["refusal-strmatch", "refusal", "accuracy", "1.000", "6"] in agreement.rows  # 3 items x 2 models


def test_the_report_lists_the_provider() -> None:
    assert "safemix.annotate.report:human_evaluation_section" in SECTION_PROVIDERS
