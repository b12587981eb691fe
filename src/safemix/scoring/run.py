"""The scoring stage: read inputs, reuse cached judgements, score the rest in chunks, write scores + manifest.

Judgements are cached by (scorer, version, settings, fingerprints, prompt, response) and committed after every
chunk, so a killed run loses at most the chunk in flight and a rerun scores only what is missing. The scores
file itself is written atomically at the end, one line per input in input order. Items that could not be
scored (``value`` null) are not cached, so a rerun tries them again.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from safemix.errors import InputError
from safemix.files import (
    canonical_json,
    sha256_text,
    write_jsonl_atomic,
)
from safemix.progress import progress_bar
from safemix.records import Score
from safemix.run_files import ScoreCounts, ScoreManifest, read_manifest, sidecar_manifest, write_manifest
from safemix.scoring.base import IdentifiedJudge, Judgement, Scorer
from safemix.scoring.cache import KeyValueStore
from safemix.scoring.inputs import (
    Columns,
    ScoreInput,
    generations_model_name,
    input_checksums,
    read_score_inputs,
)
from safemix.versions import package_versions

log = logging.getLogger(__name__)

#: Items per scorer call: the unit of cache commits (what a kill can lose) and of progress updates.
DEFAULT_CHUNK_SIZE = 256
EMPTY_RESPONSE = "empty response"
_VERSIONED_PACKAGES = ("pydantic", "torch", "transformers", "tokenizers", "openai", "numpy")


def scorer_identity(scorer: IdentifiedJudge) -> dict[str, Any]:
    """Everything that determines the scorer's judgements (no secrets, no speed-only settings)."""
    return {"scorer": scorer.name, "version": scorer.version, "settings": scorer.settings.cache_fields(),
            "fingerprint": scorer.fingerprint}


class ScoreCache:
    """Judgements on disk, keyed by the scorer identity and the exact prompt and response."""

    def __init__(self, path: Path, scorer: IdentifiedJudge):
        self.store = KeyValueStore(path)
        self.identity = canonical_json(scorer_identity(scorer))

    def key(self, item: ScoreInput) -> str:
        """The cache key of one item under this scorer."""
        return self.text_key(item.prompt, item.response)

    def text_key(self, prompt: str, response: str) -> str:
        """The cache key of a (prompt, response) text pair under this scorer."""
        return sha256_text(canonical_json([self.identity, prompt, response]))

    def get_many(self, items: Sequence[ScoreInput]) -> dict[str, Judgement]:
        """Cached judgements of ``items``, by cache key."""
        return self.lookup([self.key(item) for item in items])

    def lookup(self, keys: Sequence[str]) -> dict[str, Judgement]:
        """Cached judgements under ``keys``, by key (keys without one are left out)."""
        return {key: Judgement(**json.loads(value)) for key, value in self.store.get_many(keys).items()}

    def put_many(self, judged: dict[str, Judgement]) -> None:
        """Store the scored judgements (unscored ones are left out so that a rerun retries them)."""
        keep = {key: canonical_json(asdict(j)).encode() for key, j in judged.items() if j.value is not None}
        if keep:
            self.store.put_many(keep)


def score_items(
    scorer: Scorer,
    items: Sequence[ScoreInput],
    *,
    cache: ScoreCache | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> list[Judgement]:
    """Judge every item, in input order, scoring only those not already in ``cache``.

    Identical (prompt, response) pairs are scored once. Pending items are scored longest-first, in
    chunks of similar length, so model scorers pad little; the result is put back in input order.
    """
    key_of = cache.key if cache else (lambda item: sha256_text(canonical_json([item.prompt, item.response])))
    keys = [key_of(item) for item in items]
    judged: dict[str, Judgement] = cache.get_many(items) if cache else {}
    for key, item in zip(keys, items):
        if not item.response.strip():
            judged[key] = Judgement.unscored(EMPTY_RESPONSE)
    pending = {key: item for key, item in zip(keys, items) if key not in judged}
    order = sorted(pending, key=lambda k: len(pending[k].prompt) + len(pending[k].response), reverse=True)
    log.info("%s: %d items, %d already judged, %d to score", scorer.name, len(items), len(items) - len(pending), len(pending))
    with progress_bar(len(order), scorer.name, "item") as bar:
        for start in range(0, len(order), chunk_size):
            chunk = order[start : start + chunk_size]
            results = scorer.score([pending[k].prompt for k in chunk], [pending[k].response for k in chunk])
            if len(results) != len(chunk):
                raise RuntimeError(f"scorer {scorer.name} returned {len(results)} judgements for {len(chunk)} items")
            fresh = dict(zip(chunk, results))
            if cache:
                cache.put_many(fresh)
            judged.update(fresh)
            bar.update(len(chunk))
    return [judged[key] for key in keys]


def to_scores(scorer_name: str, items: Sequence[ScoreInput], judgements: Sequence[Judgement], model: str | None) -> list[Score]:
    """Attach ids and grouping fields to judgements."""
    scores = []
    for item, judgement in zip(items, judgements, strict=True):
        extra = {**item.fields, **({"model": model} if model else {}), **judgement.extra}
        scores.append(Score(id=item.id, scorer=scorer_name, value=judgement.value, label=judgement.label,
                            unscored_reason=judgement.unscored_reason, **extra))
    return scores


def manifest_path(out: Path) -> Path:
    """The manifest of a scores file: ``scores/refusal-judge.jsonl`` -> ``scores/refusal-judge.manifest.json``."""
    return sidecar_manifest(out)


def write_scores(out: Path, scores: Sequence[Score], scorer: Scorer, inputs: dict[str, str], model: str | None) -> dict[str, Any]:
    """Write the scores JSONL and its manifest atomically; return the manifest."""
    write_jsonl_atomic(out, (score.model_dump(mode="json") for score in scores))
    unscored = sum(score.value is None for score in scores)
    manifest = ScoreManifest(
        **scorer_identity(scorer),
        runtime_settings=scorer.settings.model_dump(mode="json", include=scorer.settings.runtime_only),
        inputs=inputs,
        model=model,
        output=out.name,
        counts=ScoreCounts(items=len(scores), scored=len(scores) - unscored, unscored=unscored),
        versions=package_versions(_VERSIONED_PACKAGES),
    )
    write_manifest(manifest_path(out), manifest)
    return manifest.to_json()


def score_file(
    scorer_name: str,
    settings: dict[str, Any],
    input_path: Path,
    out: Path,
    *,
    columns: Columns | None = None,
    prompts_path: Path | None = None,
    model: str | None = None,
    cache_dir: Path | None = None,
) -> dict[str, Any]:
    """The ``safemix score`` stage: read inputs, build the scorer, judge with the cache, write scores + manifest.

    Inputs are read and checked before the scorer (which may load a model or need a key) is built.

    Args:
        scorer_name: a registry name (``safemix scorers``).
        settings: the scorer's settings (validated against its settings model).
        input_path: a generations directory or a JSONL / JSON / CSV file.
        out: the scores JSONL to write; the manifest goes beside it.
        columns: the input's column names.
        prompts_path: a file of prompts that pair by position with the responses.
        model: the name of the model that wrote the responses (default: from the generations manifest).
        cache_dir: where the score cache lives; None disables caching.
    """
    from safemix.scoring import build_scorer, get_scorer_info

    get_scorer_info(scorer_name)
    items = read_score_inputs(input_path, columns or Columns(), prompts_path)
    model = model or generations_model_name(input_path)
    scorer = build_scorer(scorer_name, settings)
    cache = ScoreCache(cache_dir / "scores.sqlite", scorer) if cache_dir else None
    judgements = score_items(scorer, items, cache=cache)
    return write_scores(out, to_scores(scorer.name, items, judgements, model), scorer,
                        input_checksums(input_path, prompts_path), model)


def scores_up_to_date(scorer_name: str, settings: dict[str, Any], input_path: Path, out: Path, model: str | None) -> bool:
    """True when ``out`` already holds this scorer's judgements of exactly these inputs, with these settings.

    Read from the manifest without building the scorer (which may load a model or need a key), so a pipeline can
    skip scoring whose inputs and settings did not change.
    """
    from safemix.scoring import get_scorer_info

    path = manifest_path(out)
    if not (out.is_file() and path.is_file()):
        return False
    try:
        manifest = read_manifest(path, ScoreManifest).to_json()
    except InputError:
        return False  # not a manifest this version reads: score again
    cls = get_scorer_info(scorer_name).scorer_class()
    wanted = {
        "scorer": scorer_name,
        "version": cls.version,
        "settings": cls.settings_model.model_validate(settings).cache_fields(),
        "inputs": input_checksums(input_path, None),
        "model": model,
    }
    return all(canonical_json(manifest.get(key)) == canonical_json(value) for key, value in wanted.items())

