"""``safemix judge audit RUN_DIR``: an annotation study that checks a run's refusal scorers against people.

The population is every answer of a finished run that at least two refusal scorers judged (``safemix.run_scores``:
refusal = full or partial refusal, compliance = full_compliance). Two strata are drawn from it:

- ``disagreement``: the answers on which the scorers' binary calls differ; up to ``n`` of them, a seeded sample
  stratified by model (``annotate.sampling.sample_items`` with the model as the stratum: largest remainders);
- ``control``: ``n_control`` answers drawn uniformly from all judged answers (the first of a seeded order), so each
  scorer's accuracy on them estimates its accuracy on the whole run without the over-sampling's bias.

An answer drawn in both strata is one item with both memberships. Every choice is a sort by
``safemix.data.mixture.permutation_key`` of the seed and the ids, never Python's ``random``.

``RUN_DIR/audit/STUDY/`` (written whole, atomically) holds:

- ``answers.jsonl``: Generation lines of the sampled answers with id ``<model slug>/<prompt id>``, so one study input
  named ``audit`` holds the answers of every model (the study machinery wants one input answering a set of ids);
- ``scores/<scorer>.jsonl``: the run's score lines of those answers, re-keyed to model ``audit`` and the composite id
  (``source_model`` and ``source_id`` keep the originals), which ``safemix annotate stats --scores`` matches;
- ``sampling.json``: seed, requested sizes, population sizes per stratum and model, and the ids of each stratum.

The study is ``STUDIES_DIR/STUDY.sqlite``, created with ``annotate.store.open_study`` (reopened when it holds the same
answers and seed). Every input problem is found before anything is written.
"""

from __future__ import annotations

import json
import shlex
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safemix.annotate.sampling import sample_items
from safemix.annotate.store import Study, open_study, study_path
from safemix.data.mixture import permutation_key
from safemix.errors import InputError, input_error
from safemix.files import sha256_file, sha256_text, write_dir_atomic
from safemix.generate.output import generation_line, read_generations
from safemix.records import Generation
from safemix.run_files import SCORES_DIR, RunIndex, read_run_index
from safemix.run_scores import RunScores, read_run_scores

AUDIT_MODEL = "audit"
AUDIT_DIR = "audit"
ANSWERS_FILE = "answers.jsonl"
SAMPLING_FILE = "sampling.json"
DEFAULT_STUDY = "judge-audit"
STRATA = ("disagreement", "control")


@dataclass(frozen=True)
class JudgedAnswer:
    """One answer of the run that two or more refusal scorers judged."""

    audit_id: str  # "<model slug>/<prompt id>"
    label: str  # the model's run label
    prompt_id: str
    generation: Generation
    calls: dict[str, bool]  # refusal scorer key -> refused

    @property
    def disagreement(self) -> bool:
        """Whether the scorers' binary calls differ."""
        return len(set(self.calls.values())) > 1


@dataclass(frozen=True)
class AuditResult:
    """What ``build_audit`` wrote: the audit folder, the study, whether the study is new, and the sampling record."""

    audit_dir: Path
    study: Study
    created: bool
    sampling: dict[str, Any]


def judged_answers(run_dir: Path, index: RunIndex, scores: RunScores,
                   eligible: Callable[[Generation], bool] | None = None) -> list[JudgedAnswer]:
    """Every answer judged by two or more refusal scorers, in run order (models of run.json, then file order).

    ``eligible``, when given, narrows the population to the answers it accepts (e.g. prompts held out of a
    scorer's training).

    Raises:
        InputError: a generations file is malformed, or a model answers a prompt id twice.
    """
    judged = []
    for entry in index.models:
        calls = scores.calls(entry.label)
        seen: set[str] = set()
        for path in sorted((Path(run_dir) / entry.generations_dir).glob("*.jsonl")):
            for record in read_generations(path):
                if record.id in seen:
                    raise input_error(path, f"prompt id {record.id!r} occurs in two suite files of {entry.label}")
                seen.add(record.id)
                if len(calls.get(record.id, {})) >= 2 and (eligible is None or eligible(record)):
                    audit_id = f"{entry.slug}/{record.id}"
                    generation = record.model_copy(update={"id": audit_id})
                    judged.append(JudgedAnswer(audit_id, entry.label, record.id, generation, calls[record.id]))
    return judged


def sample_strata(judged: list[JudgedAnswer], n: int, n_control: int, seed: int) -> dict[str, list[str]]:
    """The audit ids of each stratum, in run order (see the module docstring)."""
    disagreeing = {answer.audit_id: answer.label for answer in judged if answer.disagreement}
    chosen = set(sample_items(disagreeing, min(n, len(disagreeing)), seed)) if disagreeing else set()
    control_order = sorted((answer.audit_id for answer in judged),
                           key=lambda audit_id: permutation_key(seed, "control", audit_id))
    control = set(control_order[:n_control])
    return {"disagreement": [a.audit_id for a in judged if a.audit_id in chosen],
            "control": [a.audit_id for a in judged if a.audit_id in control]}


def build_audit(run_dir: Path, study: str = DEFAULT_STUDY, studies_dir: Path | None = None, n: int = 100,
                n_control: int = 50, seed: int = 0, eligible: Callable[[Generation], bool] | None = None,
                eligible_note: str = "") -> AuditResult:
    """Sample a run's answers for an audit of its refusal scorers, write ``RUN_DIR/audit/STUDY/`` and the study.

    Args:
        run_dir: a run directory of ``safemix run`` (``run.json``, generations, scores).
        study: the study's name; also the audit folder's name.
        studies_dir: where the study database goes (default ``RUN_DIR/studies``, which the report reads).
        n: the most answers of the disagreement stratum.
        n_control: answers of the control stratum (0 for none).
        seed: seed of both samples, the study's item order.
        eligible: narrows the population to the answers it accepts (default: every judged answer).
        eligible_note: what ``eligible`` accepts, in words, for ``sampling.json``.

    Raises:
        InputError: no run.json, fewer than two refusal scorers with score files, ``n`` below 1, nothing to sample,
            or a study or audit folder of that name holding another sample. Nothing is written then.
    """
    run_dir = Path(run_dir)
    studies_dir = run_dir / "studies" if studies_dir is None else Path(studies_dir)
    if n < 1:
        raise InputError(f"--n {n}: must be at least 1")
    if n_control < 0:
        raise InputError(f"--control {n_control}: must be 0 or more")
    database = study_path(studies_dir, study)
    index = read_run_index(run_dir)
    scores = read_run_scores(run_dir, index)
    if len(scores.refusal_scorers) < 2:
        found = ", ".join(scores.refusal_scorers) or "none"
        raise input_error(run_dir, f"an audit compares two or more refusal scorers; the run's score files have "
                          f"{len(scores.refusal_scorers)} ({found}); add e.g. refusal-strmatch and refusal-judge to "
                          "scoring.scorers")
    judged = judged_answers(run_dir, index, scores, eligible)
    if not judged:
        raise input_error(run_dir, f"no answer was judged by two refusal scorers ({', '.join(scores.refusal_scorers)})")
    strata = sample_strata(judged, n, n_control, seed)
    members = set(strata["disagreement"]) | set(strata["control"])
    if not members:
        raise input_error(run_dir, "the refusal scorers never disagree and --control is 0: nothing to annotate")
    sampled = [answer for answer in judged if answer.audit_id in members]
    answers_text = "".join(generation_line(answer.generation) for answer in sampled)
    sampling = _sampling_record(study, seed, n, n_control, scores.refusal_scorers, index, judged, strata)
    if eligible is not None:
        sampling["population_filter"] = eligible_note or "narrowed by the caller"
    audit_dir = run_dir / AUDIT_DIR / study
    _check_no_other_sample(database, audit_dir, sha256_text(answers_text), seed)

    def write(tmp_dir: Path) -> None:
        (tmp_dir / ANSWERS_FILE).write_text(answers_text, encoding="utf-8")
        (tmp_dir / SAMPLING_FILE).write_text(json.dumps(sampling, indent=2, ensure_ascii=False) + "\n",
                                             encoding="utf-8")
        for stem, lines in _rekeyed_scores(scores, sampled).items():
            (tmp_dir / SCORES_DIR).mkdir(exist_ok=True)
            (tmp_dir / SCORES_DIR / f"{stem}.jsonl").write_text(
                "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines), encoding="utf-8")

    created = not database.is_file()
    write_dir_atomic(audit_dir, write)
    opened = open_study(studies_dir, study, [(audit_dir / ANSWERS_FILE).resolve()], [AUDIT_MODEL], None, seed)
    return AuditResult(audit_dir, opened, created, sampling)


def _check_no_other_sample(database: Path, audit_dir: Path, answers_sha256: str, seed: int) -> None:
    """Refuse to replace a study, or an audit folder, that holds another sample (its labels would stop matching)."""
    if database.is_file():
        fingerprint = Study(database).metadata()["fingerprint"]
        expected = {"models": [{"name": AUDIT_MODEL, "sha256": [answers_sha256]}], "n_sample": None, "seed": seed}
        if fingerprint != expected:
            raise input_error(database, f"study {database.stem!r} exists with other answers or another seed (a "
                              "comparison study, or an audit with other --n, --control, --seed or scores); choose "
                              "another --study")
        return
    old_answers = audit_dir / ANSWERS_FILE
    if old_answers.is_file() and sha256_file(old_answers) != answers_sha256:
        raise input_error(audit_dir, f"holds another audit sample, whose study is not in {database.parent}; choose "
                          "another --study, give that sample's --studies-dir, or remove the folder")


def _rekeyed_scores(scores: RunScores, sampled: list[JudgedAnswer]) -> dict[str, list[dict[str, Any]]]:
    """Score file stem -> the run's lines of the sampled answers, as model ``audit`` and the composite id."""
    by_id = {(label, stem): {str(line["id"]): line for line in lines}
             for label, files in scores.lines.items() for stem, lines in files.items()}
    out: dict[str, list[dict[str, Any]]] = {}
    for answer in sampled:
        for stem in scores.lines.get(answer.label, {}):
            if (line := by_id[(answer.label, stem)].get(answer.prompt_id)) is not None:
                out.setdefault(stem, []).append({**line, "id": answer.audit_id, "model": AUDIT_MODEL,
                                                 "source_model": answer.label, "source_id": answer.prompt_id})
    return {stem: out[stem] for stem in sorted(out)}


def _sampling_record(study: str, seed: int, n: int, n_control: int, scorers: list[str],
                     index: RunIndex, judged: list[JudgedAnswer], strata: dict[str, list[str]]) -> dict[str, Any]:
    """How the sample was drawn, naming the run by its name and config hash (a run directory can be moved)."""
    label_of = {answer.audit_id: answer.label for answer in judged}
    labels = [entry.label for entry in index.models]

    def sizes(ids: list[str]) -> dict[str, Any]:
        counts = Counter(label_of[audit_id] for audit_id in ids)
        return {"all": len(ids), "by_model": {label: counts[label] for label in labels if counts[label]}}

    return {
        "run": index.name, "config_hash": index.config_hash, "study": study, "seed": seed, "refusal_scorers": scorers,
        "requested": {"disagreement": n, "control": n_control},
        "population": {"judged": sizes([a.audit_id for a in judged]),
                       "disagreement": sizes([a.audit_id for a in judged if a.disagreement])},
        "sampled": {stratum: sizes(strata[stratum]) for stratum in STRATA},
        "in_both": len(set(strata["disagreement"]) & set(strata["control"])),
        "models": {entry.slug: entry.label for entry in index.models},
        "strata": strata,
    }


def _and(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def audit_summary(result: AuditResult) -> list[str]:
    """What ``safemix judge audit`` prints: one line per stratum, the study, and the commands to serve and to count."""
    s = result.sampling
    by_model = ", ".join(f"{label} {n} of {s['population']['disagreement']['by_model'].get(label, 0)}"
                         for label, n in s["sampled"]["disagreement"]["by_model"].items())
    studies_dir = result.study.path.parent
    name = result.study.path.stem
    serve = shlex.join(["safemix", "annotate", "serve", "--study", name, "--studies-dir", str(studies_dir)])
    stats = shlex.join(["safemix", "annotate", "stats", "--study", name, "--studies-dir", str(studies_dir),
                        "--scores", str(result.audit_dir / SCORES_DIR)])
    return [
        f"disagreement: {s['sampled']['disagreement']['all']} of {s['population']['disagreement']['all']} answers on "
        f"which {_and(s['refusal_scorers'])} disagree, stratified by model" + (f" ({by_model})" if by_model else ""),
        f"control: {s['sampled']['control']['all']} of {s['population']['judged']['all']} judged answers, drawn "
        f"uniformly ({s['in_both']} also in disagreement)",
        f"{result.study.path}: {result.study.n_items()} items ({'created' if result.created else 'reopened'}); "
        f"answers, scores and sampling.json in {result.audit_dir}",
        f"annotate: {serve}",
        f"stats:    {stats}",
    ]
