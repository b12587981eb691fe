"""What an audit study (``safemix judge audit``) found: each refusal scorer's binary accuracy per stratum.

An audit study is a study with one input named ``audit`` whose folder (``RUN_DIR/audit/STUDY/``) still holds the same
``answers.jsonl`` (sha256 of the study's fingerprint) and a ``sampling.json``. Given a run directory, the folder is
looked for in ``RUN_DIR/audit/<the input folder's name>`` first (so a copied or moved run finds its own), else where
the study says its input came from.

Accuracy per stratum: over the labels of that stratum's answers that the scorer judged, the share where the scorer's
call (refusal or not) equals the person's (refusal full or partial = refusal, none = compliance). Every annotator's
label counts once, as in ``annotate.stats``. On the ``control`` stratum, a uniform sample of all judged answers, this
estimates the scorer's accuracy on the run; on the ``disagreement`` stratum it says which scorer the people sided
with where the scorers differ.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safemix.annotate.audit import ANSWERS_FILE, AUDIT_DIR, AUDIT_MODEL, SAMPLING_FILE, STRATA
from safemix.annotate.store import STUDY_SUFFIX, AnswerRow, Study
from safemix.files import sha256_file
from safemix.metrics import metric_kind, read_scores, scorer_key, wilson_interval
from safemix.run_files import SCORES_DIR
from safemix.run_scores import REFUSED_BY_HUMAN, refusal_call


@dataclass(frozen=True)
class StratumAccuracy:
    """A refusal scorer's binary agreement with the people on one stratum: ``hits`` of ``n`` labels."""

    scorer: str
    stratum: str
    hits: int
    n: int

    @property
    def accuracy(self) -> float | None:
        """hits / n (None without labels)."""
        return self.hits / self.n if self.n else None

    @property
    def interval(self) -> tuple[float, float] | None:
        """Wilson 95% interval of the accuracy (None without labels)."""
        return wilson_interval(self.hits, self.n) if self.n else None


@dataclass(frozen=True)
class AuditStudy:
    """An audit study of a run: the study database and its audit folder."""

    study: Study
    folder: Path

    def sampling(self) -> dict[str, Any]:
        """The folder's ``sampling.json``."""
        return read_sampling(self.folder)

    def scores(self) -> list[dict[str, Any]]:
        """The re-keyed score lines of the audited answers (``scores/*.jsonl``)."""
        scores_dir = self.folder / SCORES_DIR
        return read_scores([scores_dir]) if scores_dir.is_dir() else []

    def accuracy(self) -> list[StratumAccuracy]:
        """Each refusal scorer's accuracy per stratum against the study's live labels."""
        return stratum_accuracy(self.study.answer_rows(), self.scores(), self.sampling()["strata"])


def audit_folder(study: Study, run_dir: Path | None = None) -> Path | None:
    """The audit folder of a study, or None when the study is no audit study (or its folder is gone or changed)."""
    metadata = study.metadata()
    inputs = metadata.get("inputs", [])
    if len(inputs) != 1 or inputs[0].get("name") != AUDIT_MODEL:
        return None
    expected = metadata["fingerprint"]["models"][0]["sha256"]
    source = Path(inputs[0]["source"]).parent
    candidates = ([Path(run_dir) / AUDIT_DIR / source.name] if run_dir is not None else []) + [source]
    for folder in candidates:
        answers = folder / ANSWERS_FILE
        if answers.is_file() and (folder / SAMPLING_FILE).is_file() and [sha256_file(answers)] == expected:
            return folder
    return None


def read_sampling(folder: Path) -> dict[str, Any]:
    """An audit folder's ``sampling.json``."""
    return json.loads((folder / SAMPLING_FILE).read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def run_audit_studies(run_dir: Path) -> list[AuditStudy]:
    """The audit studies in ``RUN_DIR/studies/`` whose answers came from ``RUN_DIR/audit/``, by name."""
    run_dir = Path(run_dir)
    audits = []
    for path in sorted((run_dir / "studies").glob(f"*{STUDY_SUFFIX}")):
        study = Study(path)
        folder = audit_folder(study, run_dir)
        if folder is not None and folder.resolve().parent == (run_dir / AUDIT_DIR).resolve():
            audits.append(AuditStudy(study, folder))
    return audits


def stratum_accuracy(answers: Sequence[AnswerRow], scores: Iterable[Mapping[str, Any]],
                     strata: Mapping[str, Sequence[str]]) -> list[StratumAccuracy]:
    """Each refusal scorer's binary accuracy on each stratum, by scorer key then stratum (see the module docstring).

    Args:
        answers: the study's live labels (``Study.answer_rows``).
        scores: score lines of the same answers (matched by model and id); only refusal scorers count.
        strata: stratum name -> its item ids (``sampling.json``'s ``strata``).
    """
    calls: dict[str, dict[tuple[str, str], bool]] = defaultdict(dict)
    labels: dict[str, set[str]] = defaultdict(set)
    for score in scores:
        key = scorer_key(score)
        if score.get("label") is not None:
            labels[key].add(str(score["label"]))
        if (call := refusal_call(score)) is not None:
            calls[key][(str(score.get("model")), str(score["id"]))] = call
    rows = []
    for key in sorted(calls):
        if metric_kind(key, labels[key]) != "refusal":
            continue
        for stratum in (s for s in STRATA if s in strata):
            members = set(strata[stratum])
            pairs = [(REFUSED_BY_HUMAN[a.refusal], calls[key][(a.model, a.item_id)]) for a in answers
                     if a.item_id in members and (a.model, a.item_id) in calls[key]]
            rows.append(StratumAccuracy(key, stratum, sum(h == c for h, c in pairs), len(pairs)))
    return rows
