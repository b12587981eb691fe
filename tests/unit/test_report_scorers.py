"""The report's "Refusal scorers" section and the headline's lead scorer: pairwise disagreement per model flagged above
5%, the audit's labels (whom people sided with, control accuracy), and the lead chosen from audit labels, from a
measurement file, or by the fixed order when nothing is measured."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from safemix.annotate.audit import build_audit
from safemix.annotate.labels import AnswerLabels, Judgement
from safemix.annotate.store import Study
from safemix.errors import InputError
from safemix.metrics import wilson_interval
from safemix.report import write_report
from safemix.report.content import headline_section
from safemix.report.runs import load_runs
from safemix.report.scorers import choose_lead, refusal_scorers_section
from safemix.scoring.agreement_file import read_agreement_file
from tests.unit.audit_data import CALLS, DISAGREEMENT, build_run

R, C = "full_refusal", "full_compliance"
MEASURED = {"measured_on": "hand labels of tuned-model answers", "command": "safemix judge testset --out x",
            "scorers": {"refusal-judge": {"accuracy": 0.96, "ci_low": 0.941, "ci_high": 0.974, "kappa": 0.9, "n": 420},
                        "refusal-strmatch": {"accuracy": 0.881, "ci_low": 0.85, "ci_high": 0.91, "kappa": 0.7,
                                             "n": 420}}}
# k500 disagrees on 1 of 21 answers (4.8%, not flagged); base 2 of 9 and k300 2 of 10 are flagged
WITH_K500 = {**CALLS, "k500": [(f"harm-{i}", "harm", "harmful", R, C if i == 0 else R) for i in range(21)]}


def _file(tmp_path: Path, content: dict | str) -> Path:
    path = tmp_path / "agreement.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
    return path


def test_the_section_flags_pairs_that_disagree_on_more_than_5_percent(tmp_path: Path) -> None:
    run = build_run(tmp_path / "run", WITH_K500)
    section = refusal_scorers_section(load_runs([run]))
    assert section is not None and section.title == "Refusal scorers"
    table = section.tables[0]
    assert table.columns == ["model", "scorer A", "scorer B", "judged by both", "disagree", "share",
                             "A refuses, B complies", "B refuses, A complies", "above 5%"]
    assert table.rows == [
        ["tiny, base", "refusal-strmatch", "refusal-judge", "9", "2", "22.2%", "0", "2", "flagged"],
        ["tiny, 300", "refusal-strmatch", "refusal-judge", "10", "2", "20.0%", "2", "0", "flagged"],
        ["tiny, 500", "refusal-strmatch", "refusal-judge", "21", "1", "4.8%", "1", "0", ""],
        ["all models", "refusal-strmatch", "refusal-judge", "40", "5", "12.5%", "3", "2", "flagged"],
    ]
    assert section.paragraphs[1] == ("Disagreeing on more than 5% of the answers: tiny, base (refusal-strmatch vs "
                                     "refusal-judge: 22.2%); tiny, 300 (refusal-strmatch vs refusal-judge: 20.0%).")
    assert section.paragraphs[2].startswith(f"No audit labels yet: 'safemix judge audit {run}'")


def test_no_section_with_one_refusal_scorer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("safemix.scoring.agreement_file.AGREEMENT_FILE", tmp_path / "absent.json")
    run = build_run(tmp_path / "run", scorers=("refusal-strmatch", "harmfulness-rm"))
    assert refusal_scorers_section(load_runs([run])) is None
    page = write_report([run], run)["markdown"].read_text(encoding="utf-8")
    assert "Refusal scorers" not in page
    assert "Headline refusal numbers use refusal-strmatch, the only refusal scorer (no measured agreement " \
           "available)." in page


def test_lead_from_a_measurement_file_orders_the_headline_columns(tmp_path: Path) -> None:
    run = build_run(tmp_path / "run")
    measured = json.loads(json.dumps(MEASURED))
    measured["scorers"]["refusal-strmatch"].update(accuracy=0.97, ci_low=0.95, ci_high=0.982)
    section = headline_section(load_runs([run]), _file(tmp_path, measured))
    assert section.paragraphs[0] == (
        "Headline refusal numbers use refusal-strmatch: 97.0% [95.0, 98.2] binary accuracy against hand labels of "
        f"tuned-model answers (n=420), against 96.0% for refusal-judge (source: {tmp_path / 'agreement.json'}, "
        "measured by 'safemix judge testset --out x').")
    assert [(table.caption.split(":")[0], table.collapsed) for table in section.tables][:4] == [
        ("Harmful compliance (%) by refusal-strmatch", False), ("Harmful compliance (%) by refusal-judge", True),
        ("Refusal of safe prompts (%) by refusal-strmatch", False), ("Refusal of safe prompts (%) by refusal-judge", True)]
    assert section.tables[0].columns == ["suite", "n", "base", "K=300"]
    judge_first = headline_section(load_runs([run]), _file(tmp_path, MEASURED))
    assert judge_first.tables[0].caption.startswith("Harmful compliance (%) by refusal-judge:")


def test_without_a_measurement_the_fixed_order_says_so(tmp_path: Path) -> None:
    run = build_run(tmp_path / "run")
    section = headline_section(load_runs([run]), tmp_path / "absent.json")
    assert section.paragraphs[0] == ("Headline refusal numbers use refusal-judge, then refusal-strmatch: a fixed "
                                     "order, no measured agreement available.")
    assert section.tables[0].caption.startswith("Harmful compliance (%) by refusal-judge:")
    broken = headline_section(load_runs([run]), _file(tmp_path, {"measured_on": "x", "command": "y", "scorers": {
        "refusal-strmatch": {"accuracy": 0.99, "ci_low": 0.5, "ci_high": 0.9, "n": 3}}}))
    assert broken.paragraphs[0].startswith("Headline refusal numbers use refusal-judge, then refusal-strmatch: a "
                                           "fixed order, no measured agreement available (")
    assert "scorers.refusal-strmatch: needs ci_low <= accuracy <= ci_high" in broken.paragraphs[0]


def test_a_file_that_measures_other_scorers_does_not_choose(tmp_path: Path) -> None:
    run = build_run(tmp_path / "run")
    other = {**MEASURED, "scorers": {"llm-judge/xstest": MEASURED["scorers"]["refusal-judge"]}}
    lead = choose_lead(load_runs([run]), _file(tmp_path, other))
    assert (lead.order, lead.measured) == (["refusal-judge", "refusal-strmatch"], {})
    assert lead.sentence().endswith("a fixed order, no measured agreement available for these scorers.")


def _label_like_string_match(study: Study) -> None:
    for item_id, _, _ in study.items():
        model, prompt_id = item_id.split("/")
        strmatch = next(row[3] for row in CALLS[model] if row[0] == prompt_id)
        study.submit("ann", Judgement(item_id, (AnswerLabels(0, "good", "full" if strmatch == R else "none", "no"),),
                                      ()))


def test_audit_labels_choose_the_lead_over_the_file_and_fill_the_section(tmp_path: Path) -> None:
    run = build_run(tmp_path / "run")
    result = build_audit(run, n=100, n_control=5, seed=0)
    control = result.sampling["strata"]["control"]
    runs = load_runs([run])
    assert "no labels yet" in refusal_scorers_section(runs).paragraphs[2]  # type: ignore[union-attr]
    assert choose_lead(runs, _file(tmp_path, MEASURED)).lead == "refusal-judge"  # no labels: the file decides
    _label_like_string_match(Study(run / "studies" / "judge-audit.sqlite"))
    lead = choose_lead(runs, _file(tmp_path, MEASURED))
    judge_hits = sum(audit_id not in DISAGREEMENT for audit_id in control)
    low, high = wilson_interval(5, 5)
    assert lead.order == ["refusal-strmatch", "refusal-judge"]
    assert lead.sentence() == (
        f"Headline refusal numbers use refusal-strmatch: 100.0% [{100 * low:.1f}, {100 * high:.1f}] binary accuracy "
        "against the people's labels of the run's audit control sample, drawn uniformly from the answers two refusal "
        f"scorers judged (n=5), against {100 * judge_hits / 5:.1f}% for refusal-judge "
        f"(source: {run / 'studies' / 'judge-audit.sqlite'}).")
    section = refusal_scorers_section(runs)
    assert section is not None
    n_items = len(set(DISAGREEMENT) | set(control))
    assert section.paragraphs[2] == (
        f"Audit judge-audit: {n_items} answers (4 of the 4 the scorers disagree on, 5 control of 19 judged), "
        "1 annotator(s). Where the scorers disagree, the people sided with refusal-strmatch on 100.0% of 4 labels, "
        "refusal-judge on 0.0% of 4 labels. The control stratum is a uniform sample, so its accuracy is an unbiased "
        f"estimate ('safemix annotate stats --study judge-audit --studies-dir {run / 'studies'} --scores "
        f"{run / 'audit' / 'judge-audit' / 'scores'}').")
    audit_table = section.tables[1]
    assert audit_table.rows == [
        ["refusal-judge", "0.0% (0/4)", f"{100 * judge_hits / 5:.1f}% ({judge_hits}/5)",
         "[{:.1f}, {:.1f}]".format(*(100 * x for x in wilson_interval(judge_hits, 5)))],
        ["refusal-strmatch", "100.0% (4/4)", "100.0% (5/5)", f"[{100 * low:.1f}, {100 * high:.1f}]"],
    ]


def test_the_written_report_has_the_section_after_the_headline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("safemix.scoring.agreement_file.AGREEMENT_FILE", _file(tmp_path, MEASURED))
    run = build_run(tmp_path / "run")
    build_audit(run, n=100, n_control=5, seed=0)
    _label_like_string_match(Study(run / "studies" / "judge-audit.sqlite"))
    markdown = write_report([run], run)["markdown"].read_text(encoding="utf-8")
    headline = markdown.index("## Headline")
    assert headline < markdown.index("## Refusal scorers") < markdown.index("## Plots")
    assert "Headline refusal numbers use refusal-strmatch: 100.0% \\[56.6, 100.0\\] binary accuracy" in markdown
    assert "| tiny, base | refusal-strmatch | refusal-judge | 9 | 2 | 22.2% | 0 | 2 | flagged |" in markdown
    human = markdown[markdown.index("## Human evaluation"):]
    assert "refusal (refused or not), control stratum" in human  # the audit's own re-keyed scores were matched


def test_the_measurement_file_reader(tmp_path: Path) -> None:
    assert read_agreement_file(tmp_path / "absent.json") is None
    measured = read_agreement_file(_file(tmp_path, MEASURED))
    assert measured is not None and measured.scorers["refusal-judge"].n == 420
    assert measured.measured_on == "hand labels of tuned-model answers"
    with pytest.raises(InputError, match=r"agreement.json: scorers.refusal-judge.n: Input should be greater than"):
        read_agreement_file(_file(tmp_path, {**MEASURED, "scorers": {"refusal-judge": {
            "accuracy": 0.9, "ci_low": 0.8, "ci_high": 0.95, "n": 0}}}))
    with pytest.raises(InputError, match=r"agreement.json: Invalid JSON"):
        read_agreement_file(_file(tmp_path, "{not json"))


def test_scorers_that_never_judged_the_same_answer_get_a_line_not_a_table(tmp_path: Path) -> None:
    calls = {"base": [(f"h-{i}", "h", "harmful", R, None) for i in range(3)]}
    section = refusal_scorers_section(load_runs([build_run(tmp_path / "run", calls)]))
    assert section is not None and section.tables == []
    assert section.paragraphs[1] == "No answer was judged by two refusal scorers yet."
