"""Adding a scorer is one registry entry: a toy refusal scorer registered in ``safemix.scoring.SCORERS`` is built by
name, scores a file, gets refusal metrics and shows up in the report's headline, with no other code touched."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import pytest

from safemix.metrics import compute_metrics, metric_kind, read_scores, write_metrics
from safemix.report.content import headline_section
from safemix.report.runs import load_runs
from safemix.scoring import SCORERS, ScorerInfo
from safemix.scoring.base import Judgement, ScorerSettings, check_pairs
from safemix.scoring.run import score_file
from tests.fake_runs import build_fake_run


class ToySettings(ScorerSettings):
    """The toy scorer has no settings."""


class ToyRefusal:
    """Calls an answer a refusal when it holds the word "can't"."""

    name: ClassVar[str] = "toy-refusal"
    version: ClassVar[str] = "1"
    settings_model: ClassVar[type[ScorerSettings]] = ToySettings

    def __init__(self, settings: ToySettings | None = None):
        self.settings = settings or ToySettings()
        self.fingerprint: dict[str, str] = {}

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> list[Judgement]:
        """full_refusal or full_compliance by one word."""
        check_pairs(prompts, responses)
        return [Judgement(1.0, "full_refusal") if "can't" in response else Judgement(0.0, "full_compliance")
                for response in responses]


@pytest.fixture()
def toy(monkeypatch: pytest.MonkeyPatch) -> str:
    info = ScorerInfo("toy-refusal", f"{__name__}:ToyRefusal", "offline", "a one-word refusal rule", "refusal")
    monkeypatch.setitem(SCORERS, info.name, info)
    return info.name


def test_the_registry_entry_decides_the_metric_kind(toy: str) -> None:
    assert metric_kind(toy, set()) == "refusal"  # from the entry: no labels seen, yet refusal metrics
    assert metric_kind("unregistered", set()) == "harmfulness"  # an unknown scorer falls back on its labels


def test_a_registered_scorer_scores_gets_metrics_and_reaches_the_report(toy: str, tmp_path: Path) -> None:
    run = build_fake_run(tmp_path / "run", suites={"starter-harmful": {"harmful": 6}}, ks=(0, 100),
                         scorers=("refusal-strmatch",))
    for entry in load_runs([run]).models:
        generations = run / entry.entry.generations_dir
        out = run / entry.entry.scores_dir / f"{toy}.jsonl"
        score_file(toy, {}, generations, out, model=entry.entry.label, cache_dir=tmp_path / "cache")
    index_path = run / "run.json"
    index = json.loads(index_path.read_text(encoding="utf-8"))
    index["scorers"].append(toy)
    index_path.write_text(json.dumps(index), encoding="utf-8")
    files = sorted(run.glob(f"scores/*/{toy}.jsonl")) + sorted(run.glob("scores/*/refusal-strmatch.jsonl"))
    rows = compute_metrics(read_scores(files))
    assert {(row.scorer, row.metric) for row in rows} == {(toy, "harmful_compliance_rate"),
                                                          ("refusal-strmatch", "harmful_compliance_rate")}
    write_metrics(rows, run)
    section = headline_section(load_runs([run]), tmp_path / "no-measurement.json")
    assert any(table.caption.startswith(f"Harmful compliance (%) by {toy}:") for table in section.tables)
