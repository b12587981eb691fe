"""Compare two models' answers to the same prompts with the pairwise judge, and compute model A's win rate.

Read top to bottom, a comparison: reads both answer files and pairs them by prompt id (the ids and prompts must
match); decides for each item which answer the judge sees first, from a sha256 of the seed and the prompt id
(deterministic, about half each way, recorded per item); judges the pairs through the scoring cache (committed
every CHUNK_SIZE verdicts), so a rerun calls the judge only for what is missing; turns each verdict into model A's score (win 1, tie 0.5, loss 0,
unscored when the reply does not parse); and writes one line per item plus a manifest.

The win rate is (wins + 0.5 * ties) / n over the n scored items, with a 95% Wilson score interval computed with
wins + 0.5 * ties as the successes. Each item's score lies in [0, 1], so its variance is at most p(1 - p): with
ties the interval is conservative (a little wider than needed), never too narrow.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import Any

import safemix
from safemix.errors import InputError, input_error
from safemix.files import canonical_json, sha256_file, write_jsonl_atomic
from safemix.generate.base import chunks
from safemix.generate.output import read_generations
from safemix.metrics import wilson_interval
from safemix.progress import progress_bar
from safemix.records import Generation
from safemix.run_files import (
    WinrateCounts,
    WinrateEstimate,
    WinrateManifest,
    read_manifest,
    sidecar_manifest,
    write_manifest,
)
from safemix.scoring.base import Judgement
from safemix.scoring.run import ScoreCache, scorer_identity
from safemix.versions import package_versions
from safemix.winrate.judge import AnswerPair, PairwiseJudge

log = logging.getLogger(__name__)

ORDER_SCHEME = "sha256(f'{seed}\\x00{prompt id}'): first byte even -> model A's answer is shown as answer A"
INTERVAL = "95% Wilson score interval with wins + 0.5 * ties as successes over the scored items"
DEFAULT_SUITE = "i-alpaca"
CACHE_FILE = "scores.sqlite"
CHUNK_SIZE = 32  # verdicts per judge call: the unit of cache commits (what a kill can lose) and of progress
_VERSIONED_PACKAGES = ("pydantic", "torch", "transformers", "openai")


@dataclass(frozen=True)
class Answers:
    """One model's answers: the file they came from and its records in file order."""

    name: str
    file: Path
    records: list[Generation]


@dataclass(frozen=True)
class WinRate:
    """Model A's record against model B and its win rate."""

    wins: int
    ties: int
    losses: int
    unscored: int

    @property
    def n_scored(self) -> int:
        """Items with a verdict."""
        return self.wins + self.ties + self.losses

    def interval(self) -> tuple[float | None, float | None, float | None]:
        """(estimate, ci_low, ci_high); all None when no item was scored."""
        if not self.n_scored:
            return None, None, None
        points = self.wins + 0.5 * self.ties
        low, high = wilson_interval(points, self.n_scored)  # fractional successes: see the module doc
        return points / self.n_scored, low, high

    @classmethod
    def from_values(cls, values: list[float | None]) -> WinRate:
        """Count model A's scores (1 win, 0.5 tie, 0 loss, None unscored)."""
        return cls(wins=values.count(1.0), ties=values.count(0.5), losses=values.count(0.0), unscored=values.count(None))


def answers_file(path: Path, suite: str | None) -> Path:
    """A generations directory means its ``<suite>.jsonl``; a file is itself."""
    if path.is_dir():
        return path / f"{suite or DEFAULT_SUITE}.jsonl"
    return path


def read_answers(path: Path, name: str) -> Answers:
    """Read a generations file (``safemix generate`` records); ids must be unique.

    Raises:
        InputError: the file is missing or unreadable, a line is not a generation record, or an id repeats.
    """
    records = read_generations(path)
    return Answers(name, path, records)


def pair_answers(a: Answers, b: Answers) -> list[tuple[Generation, Generation]]:
    """Pair the answers by prompt id, in A's order.

    Raises:
        InputError: an id in one file only (the message names the file that lacks it and the id), or an id whose
            prompt text differs between the files.
    """
    by_id = {record.id: record for record in b.records}
    a_ids = {record.id for record in a.records}
    missing_in_b = [record.id for record in a.records if record.id not in by_id]
    if missing_in_b:
        raise input_error(b.file, f"has no answer to prompt id {missing_in_b[0]!r} of {a.file} "
                                  f"({len(missing_in_b)} such ids); both models must answer the same prompts")
    missing_in_a = [record.id for record in b.records if record.id not in a_ids]
    if missing_in_a:
        raise input_error(a.file, f"has no answer to prompt id {missing_in_a[0]!r} of {b.file} "
                                  f"({len(missing_in_a)} such ids); both models must answer the same prompts")
    for record in a.records:
        if record.prompt != by_id[record.id].prompt:
            raise input_error(b.file, f"prompt id {record.id!r} holds another prompt than in {a.file}")
    return [(record, by_id[record.id]) for record in a.records]


def a_shown_first(seed: int, prompt_id: str) -> bool:
    """Whether model A's answer is shown as answer A for this item (see :data:`ORDER_SCHEME`)."""
    return hashlib.sha256(f"{seed}\x00{prompt_id}".encode()).digest()[0] % 2 == 0


def judge_pairs(judge: PairwiseJudge, pairs: list[tuple[Generation, Generation]], seed: int,
                cache: ScoreCache | None) -> list[dict[str, Any]]:
    """Judge every pair (cached verdicts are reused); one result line per pair, in order."""
    firsts = [a_shown_first(seed, a.id) for a, _ in pairs]
    shown = [AnswerPair(a.prompt, a.response, b.response) if first else AnswerPair(a.prompt, b.response, a.response)
             for (a, b), first in zip(pairs, firsts)]
    judgements = judge_cached(judge, shown, cache)
    return [_result_line(a, first, judgement) for (a, _), first, judgement in zip(pairs, firsts, judgements)]


def judge_cached(judge: PairwiseJudge, pairs: list[AnswerPair], cache: ScoreCache | None) -> list[Judgement]:
    """A judgement per pair, in order: cached verdicts are reused, identical pairs judged once, and the rest judged
    longest first in chunks of :data:`CHUNK_SIZE`, each committed to ``cache`` as soon as it is judged."""
    keys = [_cache_key(cache, pair) if cache else canonical_json(astuple(pair)) for pair in pairs]
    judged = cache.lookup(keys) if cache else {}
    pending = {key: pair for key, pair in zip(keys, pairs) if key not in judged}
    order = sorted(pending, key=lambda key: sum(map(len, astuple(pending[key]))), reverse=True)
    log.info("%s: %d items, %d already judged, %d to judge", judge.name, len(pairs), len(pairs) - len(pending), len(pending))
    with progress_bar(len(order), judge.name, "item") as bar:
        for chunk in chunks(order, CHUNK_SIZE):
            fresh = dict(zip(chunk, judge.judge([pending[key] for key in chunk]), strict=True))
            if cache:
                cache.put_many(fresh)
            judged.update(fresh)
            bar.update(len(chunk))
    return [judged[key] for key in keys]


def _cache_key(cache: ScoreCache, pair: AnswerPair) -> str:
    """The pair's key in the scoring cache: the instruction, and the two answers in order as a JSON list (the form
    verdicts have always been cached under, so earlier verdicts stay valid)."""
    return cache.text_key(pair.instruction, json.dumps([pair.answer_a, pair.answer_b], ensure_ascii=False))


def _result_line(a: Generation, first: bool, judgement: Judgement) -> dict[str, Any]:
    position_a_score = judgement.value
    score = None if position_a_score is None else position_a_score if first else 1.0 - position_a_score
    return {"id": a.id, "suite": a.suite, "a_position": "A" if first else "B", "verdict": judgement.label,
            "value": score, "unscored_reason": judgement.unscored_reason, "reply": judgement.extra.get("reply")}


def comparison_identity(judge: PairwiseJudge, a: Answers, b: Answers, seed: int) -> dict[str, Any]:
    """Everything that decides the result lines: judge, template, seed, order scheme, models and input bytes."""
    return {"judge": scorer_identity(judge), "template": judge.template.version, "seed": seed, "order": ORDER_SCHEME,
            "model_a": a.name, "reference": b.name,
            "inputs_sha256": {"model_a": sha256_file(a.file), "reference": sha256_file(b.file)}}


def up_to_date(out: Path, identity: dict[str, Any]) -> WinrateManifest | None:
    """The manifest of ``out`` when it was written with exactly this identity (so it can be kept), else None."""
    path = sidecar_manifest(out)
    if not (out.is_file() and path.is_file()):
        return None
    try:
        manifest = read_manifest(path, WinrateManifest)
    except InputError:
        return None
    return manifest if canonical_json(manifest.identity) == canonical_json(identity) else None


def compare(a: Answers, b: Answers, out: Path, judge: PairwiseJudge, *, seed: int = 0,
            cache_dir: Path | None = None) -> dict[str, Any]:
    """Judge A's answers against B's (the reference) and write ``out`` (one line per item) and its manifest.

    Args:
        a: the answers whose win rate is measured.
        b: the reference answers.
        out: the result lines (JSONL); the manifest is ``<out stem>.manifest.json`` beside it.
        judge: the pairwise judge.
        seed: seed of the answer order.
        cache_dir: where the scoring cache lives; None disables it.

    Returns:
        The manifest written.
    """
    pairs = pair_answers(a, b)
    if not pairs:
        raise input_error(a.file, "holds no answers to compare")
    identity = comparison_identity(judge, a, b, seed)
    cache = ScoreCache(cache_dir / CACHE_FILE, judge) if cache_dir else None
    try:
        lines = judge_pairs(judge, pairs, seed, cache)
    finally:
        if cache is not None:
            cache.store.close()
    record = WinRate.from_values([line["value"] for line in lines])
    estimate, low, high = record.interval()
    write_jsonl_atomic(out, lines)
    manifest = WinrateManifest(
        safemix_version=safemix.__version__,
        identity=identity,
        files={"model_a": str(a.file), "reference": str(b.file)},
        judge_runtime=judge.settings.model_dump(mode="json", include=judge.settings.runtime_only),
        n_a_shown_first=sum(line["a_position"] == "A" for line in lines),
        counts=WinrateCounts(items=len(lines), wins=record.wins, ties=record.ties, losses=record.losses,
                             unscored=record.unscored),
        win_rate=WinrateEstimate(estimate=estimate, ci_low=low, ci_high=high, interval=INTERVAL),
        output=out.name,
        versions=package_versions(_VERSIONED_PACKAGES),
    )
    write_manifest(sidecar_manifest(out), manifest)
    log.info("%s vs %s: win rate %s over %d scored items (%d unscored)", a.name, b.name,
             "n/a" if estimate is None else f"{estimate:.3f}", record.n_scored, record.unscored)
    return manifest.to_json()
