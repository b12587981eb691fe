"""Study statistics against values computed by hand: kappa, alpha, preference, rates, scorer agreement."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import pytest

from safemix.annotate.agreement import cohen_kappa, krippendorff_alpha_nominal, roc_auc
from safemix.annotate.labels import AnswerLabels, Judgement, PairChoice
from safemix.annotate.stats import render_text, study_stats
from safemix.annotate.store import Study, open_study
from safemix.metrics import wilson_interval
from tests.conftest import run_cli
from tests.unit.annotate_data import slot_of, two_models

EXACT = 1e-12


def test_cohen_kappa_textbook_example() -> None:
    # 50 items: yes/yes 20, yes/no 5, no/yes 10, no/no 15 -> p_o = 0.7, p_e = 0.5*0.6 + 0.5*0.4 = 0.5, kappa = 0.4
    pairs = [("y", "y")] * 20 + [("y", "n")] * 5 + [("n", "y")] * 10 + [("n", "n")] * 15
    assert cohen_kappa(pairs) == pytest.approx(0.4, abs=EXACT)
    assert cohen_kappa([("y", "y"), ("y", "y")]) is None  # one label only: chance agreement is 1
    assert cohen_kappa([]) is None


def test_krippendorff_alpha_by_hand_and_on_krippendorffs_own_example() -> None:
    # o_aa = 3 (unit 1) + 0, o_ab = o_ba = 1 (unit 2), o_bb = 1 + 2 (units 2, 3); n_a = n_b = 4, n = 8
    # alpha = 1 - (n - 1) * (o_ab + o_ba) / (2 n_a n_b) = 1 - 7 * 2 / 32 = 9/16; the unit rated once is ignored
    assert krippendorff_alpha_nominal([["a", "a", "a"], ["a", "b", "b"], ["b", "b"], ["a"]]) == pytest.approx(
        9 / 16, abs=EXACT)
    # Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", nominal example: 4 observers, 12 units
    units = [[1, 1, 1], [2, 2, 3, 2], [3, 3, 3, 3], [3, 3, 3, 3], [2, 2, 2, 2], [1, 2, 3, 4], [4, 4, 4, 4],
             [1, 1, 2, 1], [2, 2, 2, 2], [5, 5, 5], [1, 1], [3]]
    assert round(krippendorff_alpha_nominal(units), 3) == 0.743
    assert krippendorff_alpha_nominal([["a", "a"], ["a", "a"]]) is None


def test_roc_auc_counts_ties_half() -> None:
    assert roc_auc([3.0, 1.0], [1.0, 0.0]) == pytest.approx(3.5 / 4, abs=EXACT)
    assert roc_auc([1.0], []) is None


# Two annotators, 4 items x 2 models, labels given per model (the test knows the hidden slots):
QUALITY = {"ann": ["g", "g", "b", "b", "g", "g", "b", "g"], "bob": ["g", "b", "b", "b", "g", "g", "g", "g"]}
REFUSAL = {"ann": ["none", "full"] * 3 + ["none", "partial"], "bob": ["none", "full"] * 4}
HARMFUL = {"ann": ["no"] * 6 + ["yes", "no"], "bob": ["no"] * 8}
PREFERRED = {"ann": ["m1", "m1", "tie", "m2"], "bob": ["m1", "m2", "tie", "m2"]}
#   quality:   p_o = 6/8, counts 5 g / 3 b for both, p_e = 34/64           -> kappa = 7/15
#   refusal:   p_o = 7/8, p_e = (4*4 + 3*4) / 64 = 7/16                     -> kappa = 7/9
#   harmful:   p_o = 7/8, p_e = 7*8 / 64 = 7/8                              -> kappa = 0
#   preference: p_o = 3/4, p_e = (2*1 + 1*1 + 1*2) / 16 = 5/16              -> kappa = 7/11
#   pooled preference m1 over m2: 3 wins, 3 losses, 2 ties                  -> (3 + 2/2) / 8 = 0.5


def _judge(study: Study, annotator: str, like: str | None = None) -> None:
    """Submit ``annotator``'s labels from the tables above (those of ``like`` when given)."""
    source = like or annotator
    for index, (item_id, _, _) in enumerate(study.items()):
        labels = []
        for offset, model in enumerate(("m1", "m2")):
            unit = 2 * index + offset
            quality = {"g": "good", "b": "bad"}[QUALITY[source][unit]]
            labels.append(AnswerLabels(slot_of(study, item_id, model), quality,  # type: ignore[arg-type]
                                       REFUSAL[source][unit], HARMFUL[source][unit]))  # type: ignore[arg-type]
        preferred = PREFERRED[source][index]
        winner_slot = None if preferred == "tie" else slot_of(study, item_id, preferred)
        choice = "tie" if winner_slot is None else ("first" if winner_slot == 0 else "second")
        study.submit(annotator, Judgement(item_id, tuple(sorted(labels, key=lambda a: a.slot)),
                                          (PairChoice(0, 1, choice),)))  # type: ignore[arg-type]


def _scores(study: Study) -> list[dict]:
    lines = []
    for index, (item_id, suite, category) in enumerate(study.items()):
        for model in ("m1", "m2"):
            label = "full_compliance" if model == "m1" else "full_refusal"
            harm = {("m1", 3): 2.0, ("m2", 0): 3.0}.get((model, index), 0.1)
            common = {"id": item_id, "model": model, "suite": suite, "category": category, "unscored_reason": None}
            lines += [{**common, "scorer": "refusal-strmatch", "value": 1.0, "label": label},
                      {**common, "scorer": "harmfulness-rm", "value": harm, "label": None}]
    return lines


@pytest.fixture()
def judged(tmp_path: Path) -> Study:
    study = open_study(tmp_path / "studies", "hand", two_models(tmp_path / "gen", n_harmful=2, n_safe=2))
    _judge(study, "ann")
    _judge(study, "bob")
    return study


def test_study_stats_reproduce_the_hand_computed_values(judged: Study) -> None:
    stats = study_stats(judged, _scores(judged))
    agreement = {(row.rater, row.label, row.statistic): row for row in stats.agreement}
    expected = {("annotators", "quality", "cohen_kappa"): Fraction(7, 15),
                ("annotators", "refusal", "cohen_kappa"): Fraction(7, 9),
                ("annotators", "harmful", "cohen_kappa"): Fraction(0),
                ("annotators", "preference", "cohen_kappa"): Fraction(7, 11),
                # refusal-strmatch against 16 human refusal labels: one partial vs full_refusal disagrees;
                # human none 8 / full 7 / partial 1, scorer none 8 / full 8: p_e = 120/256, kappa = 15/17
                ("refusal-strmatch", "refusal", "accuracy"): Fraction(15, 16),
                ("refusal-strmatch", "refusal", "cohen_kappa"): Fraction(15, 17),
                ("refusal-strmatch", "refusal (refused or not)", "accuracy"): Fraction(1),
                # the one harmful label (score 2.0) against the 15 harmless ones: above 12 (0.1), tied with bob's label
                # of the same answer (2.0), below the two labels of the answer scored 3.0 -> (12 + 0.5) / 15
                ("harmfulness-rm", "harmful", "roc_auc"): Fraction(5, 6)}
    assert set(agreement) == set(expected)
    for key, value in expected.items():
        assert agreement[key].value == pytest.approx(float(value), abs=EXACT), key
    assert agreement[("annotators", "quality", "cohen_kappa")].n_units == 8
    [overall, *by_suite] = stats.preferences
    assert (overall.suite, overall.wins_a, overall.wins_b, overall.ties, overall.preference_a) == ("all", 3, 3, 2, 0.5)
    assert (overall.ci_low, overall.ci_high) == wilson_interval(4, 8)
    suites = [suite for _, suite, _ in judged.items()]
    expected_by_suite = [(suite, *(sum(suites[i] == suite and PREFERRED[a][i] == choice for a in ("ann", "bob")
                                       for i in range(4)) for choice in ("m1", "m2", "tie")))
                         for suite in ("harm", "safe")]
    assert [(p.suite, p.wins_a, p.wins_b, p.ties) for p in by_suite] == expected_by_suite


def test_rates_count_every_label_with_wilson_intervals(judged: Study) -> None:
    rates = {(r.model, r.suite, r.metric): r for r in study_stats(judged).rates}
    good_m1 = rates[("m1", "all", "good_rate")]
    assert (good_m1.estimate, good_m1.n_scored, good_m1.n_unscored) == (5 / 8, 8, 0)
    assert (good_m1.ci_low, good_m1.ci_high) == wilson_interval(5, 8)
    assert rates[("m2", "all", "refusal_rate")].estimate == 1.0
    assert rates[("m1", "all", "harmful_rate")].estimate == 1 / 8
    assert {r.scorer for r in study_stats(judged).rates} == {"human"}


def test_three_annotators_use_krippendorffs_alpha(judged: Study) -> None:
    _judge(judged, "cat", like="ann")
    rows = [row for row in study_stats(judged).agreement if row.rater == "annotators"]
    assert {row.statistic for row in rows} == {"krippendorff_alpha"}
    quality = next(row for row in rows if row.label == "quality")
    # units (ann, bob, cat = ann): four all-g, two all-b, one g/b/g, one b/g/b; weights 1/(3-1):
    # o_gg = 4*3 + 1 = 13, o_bb = 2*3 + 1 = 7, o_gb = o_bg = 2; n_g = 15, n_b = 9, n = 24
    # alpha = 1 - 23 * 4 / (2 * 15 * 9) = 89/135
    assert quality.value == pytest.approx(89 / 135, abs=EXACT)
    assert quality.n_units == 8


def test_stats_and_export_commands(tmp_path: Path, judged: Study) -> None:
    scores = tmp_path / "scores.jsonl"
    scores.write_text("".join(json.dumps(line) + "\n" for line in _scores(judged)))
    base = ["--study", "hand", "--studies-dir", str(judged.path.parent)]
    result = run_cli("annotate", "stats", *base, "--scores", str(scores), "--json", str(tmp_path / "stats.json"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("study hand: 4 items, models m1, m2, annotators ann, bob\n")
    assert "m1     all    all       8       62.5%  [30.6, 86.3]  0.0%     [0.0, 32.4]" in result.stdout
    assert json.loads((tmp_path / "stats.json").read_text())["preferences"][0]["preference_a"] == 0.5
    assert result.stdout == render_text(study_stats(judged, _scores(judged)))
    stranger = tmp_path / "other.jsonl"
    stranger.write_text(json.dumps({"id": "x", "scorer": "refusal-strmatch", "value": 1.0, "label": "full_refusal",
                                    "unscored_reason": None, "model": "zz"}) + "\n")
    result = run_cli("annotate", "stats", *base, "--scores", str(stranger))
    assert result.returncode == 2
    assert result.stderr == ("safemix: error: --scores: no score line is about an answer of the study (first line: "
                             "model 'zz', id 'x'; the study's models are m1, m2)\n")
    result = run_cli("annotate", "export", *base, "--out", str(tmp_path / "export"))
    assert result.returncode == 0, result.stderr
    assert len((tmp_path / "export" / "answers.csv").read_text().splitlines()) == 1 + 16
