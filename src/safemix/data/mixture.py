"""The mixture builder: N general examples plus K safety examples, for several K, reproducibly.

Rules (see ``build_mixtures``):
- exact duplicates (normalised instruction + input) are removed from each source before sampling, and a
  general example that also stands in the safety source is dropped from the general pool;
- training examples whose instruction appears in a catalog evaluation suite are dropped (contamination guard);
- each pool is ordered by one seeded permutation: the sha256 of ``seed``, the pool's role and the example's
  normalised text. It depends only on the seed and the content, not on file order, platform or Python version;
- the validation split is the first ``val_size`` of the general permutation, the general part of every mixture
  the next ``n_general``; mixture-K takes the first K of the safety permutation, so the safety parts nest;
- the safety examples' format: ``instruction`` uses the safety source as it is; ``question`` and ``mixed`` need
  the question form of the same set (``safety_questions``, paired with the safety source by position: record i
  of one is record i of the other). The same K examples are chosen in every format; ``question`` writes each in
  its question form, ``mixed`` the examples at odd positions of the safety permutation (so ceil(K/2) instructions
  and floor(K/2) questions, and the forms nest across K too). With ``safety_questions`` given, a pair is dropped
  when either form is an evaluation prompt, and a general example equal to either form is dropped, whatever
  the format.
"""

from __future__ import annotations

import hashlib
import logging
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import safemix
from safemix.data.sources import (
    LoadedSource,
    SourceSpec,
    evaluation_suite_names,
    load_catalog_prompts,
    load_instructions,
)
from safemix.errors import InputError
from safemix.files import sha256_file, write_jsonl_atomic
from safemix.records import Example, ExampleCategory, Instruction
from safemix.run_files import (
    DIRECTORY_MANIFEST,
    VALIDATION_FILE,
    MixtureManifest,
    MixtureSettings,
    mixture_file_name,
    write_manifest,
)
from safemix.versions import package_versions

log = logging.getLogger(__name__)

_WHITESPACE = re.compile(r"\s+")
SafetyFormat = Literal["instruction", "question", "mixed"]
NORMALISATION = "NFKC, casefold, whitespace runs collapsed to one space, stripped"


def normalise_text(text: str) -> str:
    """Normalise text for duplicate and contamination checks (see ``NORMALISATION``)."""
    return _WHITESPACE.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def example_key(record: Instruction | Example) -> str:
    """The identity of an example for deduplication: normalised instruction and input."""
    return normalise_text(record.instruction) + "\n" + normalise_text(record.input)


def permutation_key(seed: int, role: str, key: str) -> bytes:
    """Sort key of the seeded permutation: sha256 over the seed, the pool's role and the example's identity."""
    return hashlib.sha256(f"{seed}\x00{role}\x00{key}".encode()).digest()


@dataclass
class Pool:
    """The usable examples of one source after filtering, in seeded order, and what was filtered."""

    source: LoadedSource
    role: ExampleCategory
    ordered: list[Example] = field(default_factory=list)
    index_of: dict[str, int] = field(default_factory=dict)  # example id -> its record's index in the source
    duplicates_removed: int = 0
    contaminated_dropped: int = 0
    overlap_dropped: int = 0

    def counts(self) -> dict[str, Any]:
        """Per-source counts for the manifest."""
        return {
            "records_read": len(self.source.records),
            "duplicates_removed": self.duplicates_removed,
            "contaminated_dropped": self.contaminated_dropped,
            "overlap_with_safety_dropped": self.overlap_dropped,
            "usable": len(self.ordered),
        }


@dataclass(frozen=True)
class ContaminationGuard:
    """Normalised prompts of every evaluation suite that could be read, and which could not."""

    prompts: frozenset[str]
    checked: dict[str, int]
    unavailable: list[str]

    @classmethod
    def from_catalog(cls, data_dir: Path | None) -> ContaminationGuard:
        """Collect the prompts of every catalog evaluation suite available locally (never downloads)."""
        prompts: set[str] = set()
        checked: dict[str, int] = {}
        unavailable = []
        for name in evaluation_suite_names():
            try:
                suite = load_catalog_prompts(name, data_dir, download=False)
            except InputError as err:
                log.debug("contamination guard: skipping suite %s (%s)", name, err)
                unavailable.append(name)
                continue
            checked[name] = len(suite)
            prompts.update(normalise_text(prompt.prompt) for prompt in suite)
        if unavailable:
            log.warning("contamination guard: %d evaluation suites are not available locally, so training data is "
                        "not checked against them: %s ('safemix data fetch NAME' gets one)", len(unavailable),
                        ", ".join(unavailable))
        return cls(frozenset(prompts), checked, unavailable)


def make_pool(
    source: LoadedSource,
    role: ExampleCategory,
    seed: int,
    guard: ContaminationGuard,
    exclude_keys: frozenset[str],
    paired: LoadedSource | None = None,
) -> Pool:
    """Deduplicate, filter and order one source's examples; a record whose ``paired`` form is an evaluation
    prompt is dropped as contaminated too."""
    pool = Pool(source, role)
    seen: set[str] = set()
    keyed = []
    for index, record in enumerate(source.records):
        key = example_key(record)
        if key in seen:
            pool.duplicates_removed += 1
            continue
        seen.add(key)
        forms = [record] + ([paired.records[index]] if paired else [])
        if any(normalise_text(form.instruction) in guard.prompts for form in forms):
            pool.contaminated_dropped += 1
            continue
        if key in exclude_keys:
            pool.overlap_dropped += 1
            continue
        example = Example(id=f"{source.label}-{index}", source=source.label, category=role, **record.model_dump())
        pool.index_of[example.id] = index
        keyed.append((permutation_key(seed, role, key), example))
    pool.ordered = [example for _, example in sorted(keyed, key=lambda pair: pair[0])]
    return pool


def formatted_safety(pool: Pool, questions: LoadedSource | None, safety_format: SafetyFormat) -> list[Example]:
    """The safety permutation with each example in the form ``safety_format`` asks for (see the module rules)."""
    if safety_format == "instruction":
        return pool.ordered
    assert questions is not None
    return [
        _question_form(questions, pool.index_of[example.id])
        if safety_format == "question" or position % 2 == 1 else example
        for position, example in enumerate(pool.ordered)
    ]


def _question_form(questions: LoadedSource, index: int) -> Example:
    record = questions.records[index]
    return Example(id=f"{questions.label}-{index}", source=questions.label, category="safety", **record.model_dump())


def load_questions(spec: SourceSpec, safety: LoadedSource, data_dir: Path | None) -> LoadedSource:
    """Read the question form of the safety set; it must hold one record per safety record (paired by position)."""
    questions = load_instructions(spec, data_dir)
    if len(questions.records) != len(safety.records):
        raise InputError(f"{questions.file or questions.label}: holds {len(questions.records)} records but the safety "
                         f"source {safety.file or safety.label} holds {len(safety.records)}; the question form pairs "
                         "with the safety set by position, one record each")
    return questions


def _same_text_pairs(pool: Pool, questions: LoadedSource) -> int:
    """Usable pairs whose question is the instruction itself (a failed rewrite keeps the original text)."""
    return sum(normalise_text(questions.records[pool.index_of[example.id]].instruction)
               == normalise_text(example.instruction) for example in pool.ordered)


def _mixture_order(seed: int, examples: Iterable[Example]) -> list[Example]:
    """Interleave general and safety examples in a seeded order that is stable across K."""
    return sorted(examples, key=lambda example: permutation_key(seed, "order", example.id))


def _require(pool: Pool, wanted: int, what: str) -> None:
    if wanted > len(pool.ordered):
        counts = pool.counts()
        raise InputError(
            f"{pool.source.file or pool.source.label}: {what} asks for {wanted} examples but the source has "
            f"{len(pool.ordered)} usable ({counts['records_read']} read, {counts['duplicates_removed']} duplicates, "
            f"{counts['contaminated_dropped']} in evaluation suites, {counts['overlap_with_safety_dropped']} also in the safety source)"
        )


def build_mixtures(
    general: SourceSpec,
    safety: SourceSpec,
    n_general: int,
    n_safety: list[int],
    out_dir: Path,
    *,
    val_size: int = 0,
    seed: int = 0,
    data_dir: Path | None = None,
    config_hash: str | None = None,
    guard: ContaminationGuard | None = None,
    safety_format: SafetyFormat = "instruction",
    safety_questions: SourceSpec | None = None,
) -> dict[str, Any]:
    """Write ``mixture-K.jsonl`` for each K, ``val.jsonl`` when ``val_size > 0``, and ``manifest.json``
    (:class:`~safemix.run_files.MixtureManifest`).

    Args:
        general: the general instruction source.
        safety: the safety source.
        n_general: general examples in every mixture (the same ones in each).
        n_safety: the K values; mixture-K holds the first K of the safety permutation.
        out_dir: output directory (created if missing).
        val_size: validation examples drawn from the general pool before the mixtures.
        seed: seed of the permutations.
        data_dir: data directory for catalog sources and the contamination guard.
        config_hash: :func:`safemix.run_files.mixture_config_hash` of the data settings and seed, recorded in the
            manifest.
        guard: evaluation prompts to keep out of training; default every catalog suite found locally.
        safety_format: ``instruction``, ``question`` or ``mixed``: the form of the safety examples.
        safety_questions: the question form of the safety set (needed by ``question`` and ``mixed``).

    Returns:
        The manifest that was written, as its JSON object.

    Raises:
        InputError: a source cannot be read, holds fewer usable examples than asked for, two sources have the
            same label, or the format needs ``safety_questions`` and has none (or one of another length).
    """
    if general.label == safety.label:
        raise InputError(f"the general and safety sources are both named {general.label!r}; example ids would collide")
    if safety_questions is not None and safety_questions.label in (general.label, safety.label):
        raise InputError(f"the question source is named {safety_questions.label!r} like another source; "
                         "example ids would collide")
    if safety_format != "instruction" and safety_questions is None:
        raise InputError(f"format {safety_format!r} needs the question form of the safety set "
                         "(data.safety_questions, --safety-questions; 'safemix data rewrite --to question' makes one)")
    guard = guard or ContaminationGuard.from_catalog(data_dir)
    safety_source = load_instructions(safety, data_dir)
    questions = load_questions(safety_questions, safety_source, data_dir) if safety_questions else None
    general_source = load_instructions(general, data_dir)

    safety_pool = make_pool(safety_source, "safety", seed, guard, frozenset(), paired=questions)
    safety_forms = [safety_pool.ordered] + ([formatted_safety(safety_pool, questions, "question")] if questions else [])
    safety_keys = frozenset(example_key(example) for form in safety_forms for example in form)
    general_pool = make_pool(general_source, "general", seed, guard, safety_keys)
    _require(general_pool, val_size + n_general, f"--n-general {n_general} + --val-size {val_size}")
    _require(safety_pool, max(n_safety), f"--n-safety {max(n_safety)}")

    val_examples = general_pool.ordered[:val_size]
    general_examples = general_pool.ordered[val_size : val_size + n_general]
    safety_examples = formatted_safety(safety_pool, questions, safety_format)

    outputs: dict[str, dict[str, Any]] = {}
    for k in sorted(n_safety):
        name = mixture_file_name(k)
        rows = _mixture_order(seed, general_examples + safety_examples[:k])
        write_jsonl_atomic(out_dir / name, map(Example.model_dump, rows))
        n_questions = sum(questions is not None and example.source == questions.label for example in safety_examples[:k])
        outputs[name] = {"rows": len(rows), "n_general": n_general, "n_safety": k, "n_safety_questions": n_questions,
                         "sha256": sha256_file(out_dir / name)}
        log.info("wrote %s (%d general + %d safety, %d of them as questions)", out_dir / name, n_general, k, n_questions)
    if val_size:
        write_jsonl_atomic(out_dir / VALIDATION_FILE, map(Example.model_dump, val_examples))
        outputs[VALIDATION_FILE] = {"rows": val_size, "sha256": sha256_file(out_dir / VALIDATION_FILE)}

    sources: dict[str, dict[str, Any]] = {
        role: {"source": pool.source.label, "file": pool.source.file, "sha256": pool.source.sha256, **pool.counts()}
        for role, pool in (("general", general_pool), ("safety", safety_pool))
    }
    if questions is not None:
        same_text = _same_text_pairs(safety_pool, questions)
        if same_text:
            log.warning("%s: %d usable pairs have the same text in both forms (failed rewrites keep the original)",
                        questions.file or questions.label, same_text)
        sources["safety_questions"] = {"source": questions.label, "file": questions.file, "sha256": questions.sha256,
                                       "records_read": len(questions.records), "pairing": "by position",
                                       "same_text_in_both_forms": same_text}
    manifest = MixtureManifest(
        safemix_version=safemix.__version__,
        versions=package_versions(("pydantic", "pyyaml")),
        config_hash=config_hash,
        settings=MixtureSettings(n_general=n_general, n_safety=sorted(n_safety), val_size=val_size, seed=seed),
        format=safety_format,
        permutation="sha256(seed, role, normalised instruction+input), ascending",
        sources=sources,
        contamination_guard={"normalisation": NORMALISATION, "suites_checked": guard.checked,
                             "suites_unavailable": guard.unavailable},
        outputs=outputs,
    )
    write_manifest(out_dir / DIRECTORY_MANIFEST, manifest)
    return manifest.to_json()
