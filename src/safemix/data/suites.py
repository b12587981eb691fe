"""Evaluation suites: named prompt sets (from the catalog, derived from it, or a user's file), deduplicated.

Every catalog source of kind ``prompts`` is a suite under its catalog name; the paper's sets also answer to
their paper names (``I-MaliciousInstructions``; names are matched case-insensitively). Two suites are derived:

- ``o-controversial``: the opinion form of I-Controversial. Each instruction has the shape
  ``<Explain|Describe|Write a reason> why CLAIM.`` and becomes ``What do you think about the claim that CLAIM?``
  (see :func:`opinion_question`).
- ``harmbench``: HarmBench's *standard* text behaviours of both splits (41 val + 159 test). The raw splits
  (``harmbench-val``, ``harmbench-test``) are suites too, but their contextual behaviours lack the context
  string and their copyright behaviours need a different judge.

Every prompt carries a category: ``harmful``, ``safe`` (safe but sensitive: over-refusal probes) or
``general``. Prompts whose normalised text repeats an earlier prompt of the same suite are dropped, and the
dropped ids are reported (I-MaliciousInstructions holds two such pairs).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from difflib import get_close_matches
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from safemix.data import readers
from safemix.data.catalog import get_source, locate
from safemix.data.mixture import normalise_text
from safemix.data.sources import evaluation_suite_names, load_catalog_prompts
from safemix.errors import InputError, input_error
from safemix.files import canonical_json, sha256_file, sha256_text
from safemix.records import Prompt, PromptCategory

#: The paper's names for its evaluation sets (Bianchi et al., 2024), accepted wherever a suite is named.
PAPER_NAMES: dict[str, str] = {
    "i-malicious-instructions": "I-MaliciousInstructions",
    "i-cona": "I-CoNa",
    "i-controversial": "I-Controversial",
    "o-controversial": "O-Controversial",
    "q-harm": "Q-Harm",
    "i-physical-safety-unsafe": "I-PhysicalSafetyUnsafe",
    "i-physical-safety-safe": "I-PhysicalSafetySafe",
    "i-alpaca": "I-Alpaca",
}
_SUITE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_OPINION_LEADS = ("Explain why ", "Describe why ", "Write a reason why ")
_HARMBENCH_SPLITS = ("harmbench-val", "harmbench-test")


def opinion_question(instruction: str) -> str:
    """Rewrite an I-Controversial instruction into the opinion question of O-Controversial.

    ``Explain why X.``, ``Describe why X.`` and ``Write a reason why X.`` all become
    ``What do you think about the claim that X?``: the same claim, asked as an opinion instead of an order.

    Raises:
        ValueError: the instruction does not start with one of those three leads.
    """
    for lead in _OPINION_LEADS:
        if instruction.startswith(lead):
            claim = instruction[len(lead) :].strip().rstrip(".")
            return f"What do you think about the claim that {claim}?"
    raise ValueError(f"no opinion form for {instruction!r}: it does not start with {' / '.join(_OPINION_LEADS)}")


def _o_controversial(data_dir: Path | None, download: bool) -> list[Prompt]:
    return [
        prompt.model_copy(update={"id": f"o-controversial-{index}", "suite": "o-controversial",
                                  "prompt": opinion_question(prompt.prompt)})
        for index, prompt in enumerate(load_catalog_prompts("i-controversial", data_dir, download=download))
    ]


def _harmbench_standard(data_dir: Path | None, download: bool) -> list[Prompt]:
    prompts = []
    for split in _HARMBENCH_SPLITS:
        rows = readers.read_rows(locate(split, data_dir, download=download), "csv")
        standard = {row.values["BehaviorID"] for row in rows if row.values.get("FunctionalCategory") == "standard"}
        for prompt in load_catalog_prompts(split, data_dir, download=download):
            behavior_id = prompt.id.removeprefix(f"{split}-")
            if behavior_id in standard:
                prompts.append(prompt.model_copy(update={"id": f"harmbench-{behavior_id}", "suite": "harmbench"}))
    return prompts


@dataclass(frozen=True)
class DerivedSuite:
    """A built-in suite computed from catalog sources."""

    description: str
    sources: tuple[str, ...]
    build: Callable[[Path | None, bool], list[Prompt]]


DERIVED_SUITES: dict[str, DerivedSuite] = {
    "o-controversial": DerivedSuite(
        "Opinion form of I-Controversial: 'What do you think about the claim that X?' for each 'Explain why X.'",
        ("i-controversial",), _o_controversial),
    "harmbench": DerivedSuite(
        "HarmBench standard text behaviours (validation 41 + test 159); contextual and copyright ones left out",
        _HARMBENCH_SPLITS, _harmbench_standard),
}


def builtin_suite_names() -> list[str]:
    """Canonical names of every built-in suite: the catalog's prompt sets, then the derived suites."""
    return [*evaluation_suite_names(), *DERIVED_SUITES]


def canonical_suite_name(name: str) -> str:
    """Return the canonical name of a built-in suite given by its name or paper name, in any case.

    Raises:
        InputError: unknown name; the message lists the known suites.
    """
    known = {key.lower(): key for key in builtin_suite_names()}
    known.update({paper.lower(): key for key, paper in PAPER_NAMES.items()})
    if name.lower() in known:
        return known[name.lower()]
    close = get_close_matches(name.lower(), known, n=1)
    hint = f" (did you mean {known[close[0]]}?)" if close else ""
    raise InputError(f"unknown suite {name!r}{hint}; known suites: {', '.join(builtin_suite_names())}")


def suite_description(name: str) -> str:
    """A one-line description of a built-in suite."""
    derived = DERIVED_SUITES.get(name)
    return derived.description if derived else get_source(name).description


def looks_like_path(text: str) -> bool:
    """A suite reference is a file path if it has a path separator, an extension, or exists on disk."""
    return "/" in text or "\\" in text or bool(Path(text).suffix) or Path(text).exists()


class SuiteSpec(BaseModel):
    """A suite as named in a config or on the command line: a built-in ``name``, or a prompt file ``path``.

    A plain string is accepted: a path if it has a ``/``, an extension, or exists on disk; else a suite name.
    A file suite maps its columns (``columns: {prompt: question, id: qid}``, default ``prompt``) and needs a
    ``category``; its name (default: the file stem) names the output file. ``limit`` keeps a fixed sample of the
    suite's prompts (``sample_prompts``), for runs that must fit a time budget.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = None
    path: Path | None = None
    format: readers.Format = "auto"
    columns: dict[str, str] = Field(default_factory=dict)
    category: PromptCategory | None = None
    limit: int | None = Field(default=None, ge=1, description="keep at most this many prompts, a fixed sample")

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        return {"path": Path(value)} if looks_like_path(value) else {"name": value}

    @model_validator(mode="after")
    def _complete(self) -> SuiteSpec:
        if self.path is None:
            if self.name is None:
                raise ValueError("give a suite 'name' or a prompt file 'path'")
            try:
                canonical_suite_name(self.name)
            except InputError as err:  # re-raised as ValueError so the error carries its dotted path
                raise ValueError(str(err)) from None
            return self
        if self.category is None:
            raise ValueError(f"suite file {self.path}: give its category, harmful, safe or general "
                             "(--suite-category, or 'category' in the config)")
        if not _SUITE_NAME.match(self.label):
            raise ValueError(f"suite name {self.label!r}: use letters, digits, '.', '_' and '-' only")
        if self.label.lower() in {name.lower() for name in builtin_suite_names()} | {p.lower() for p in PAPER_NAMES.values()}:
            raise ValueError(f"suite file {self.path}: the name {self.label!r} belongs to a built-in suite; set 'name'")
        return self

    @property
    def label(self) -> str:
        """The suite's name: the canonical built-in name, the given name, or the file stem."""
        if self.path is None:
            return canonical_suite_name(str(self.name))
        return self.name or self.path.stem


@dataclass(frozen=True)
class Suite:
    """A loaded, deduplicated suite.

    Attributes:
        name: canonical name; the output file is ``<name>.jsonl``.
        prompts: the prompts in suite order, duplicates removed.
        source: where they came from (catalog names, or the file path).
        source_sha256: the sha256 of each source file, by source.
        duplicate_ids: ids dropped because their normalised prompt repeats an earlier one.
    """

    name: str
    prompts: tuple[Prompt, ...]
    source: str
    source_sha256: dict[str, str]
    duplicate_ids: tuple[str, ...]

    @property
    def sha256(self) -> str:
        """A hash of the prompts themselves (ids, text, categories), independent of the file's bytes."""
        return sha256_text(canonical_json([prompt.model_dump(mode="json") for prompt in self.prompts]))

    def category_counts(self) -> dict[str, int]:
        """Number of prompts per category."""
        counts: dict[str, int] = {}
        for prompt in self.prompts:
            counts[str(prompt.category)] = counts.get(str(prompt.category), 0) + 1
        return counts


def load_suite(spec: SuiteSpec | str, data_dir: Path | None, *, download: bool = True) -> Suite:
    """Load a suite: read its prompts, give file prompts their category, drop duplicates.

    Args:
        spec: a suite name, a prompt file, or a full spec.
        data_dir: the local data mirror for built-in suites.
        download: fetch a built-in suite's file into the cache when it is not local (and downloads are allowed).

    Raises:
        InputError: unknown suite, missing or unreadable file, or a suite without prompts.
    """
    spec = spec if isinstance(spec, SuiteSpec) else SuiteSpec.model_validate(spec)
    name = spec.label
    if spec.path is not None:
        prompts = readers.read_prompt_rows(spec.path, name, spec.columns, spec.format, spec.category)
        source, hashes = str(spec.path), {str(spec.path): sha256_file(spec.path)}
    elif name in DERIVED_SUITES:
        derived = DERIVED_SUITES[name]
        prompts = derived.build(data_dir, download)
        source, hashes = "+".join(derived.sources), _catalog_hashes(derived.sources)
    else:
        prompts = load_catalog_prompts(name, data_dir, download=download)
        source, hashes = name, _catalog_hashes((name,))
    kept, dropped = _deduplicate(prompts)
    if not kept:
        raise input_error(source, f"suite {name!r} holds no prompts")
    return Suite(name, tuple(sample_prompts(kept, name, spec.limit)), source, hashes, tuple(dropped))


def sample_prompts(prompts: list[Prompt], suite: str, limit: int | None) -> list[Prompt]:
    """At most ``limit`` prompts, in suite order: those whose sha256 of suite name and prompt id is smallest.

    The sample depends on the ids alone: the same on every machine and run, and a larger limit keeps every prompt
    of a smaller one. Categories keep their shares up to sampling error (XSTest's harmful and safe prompts alike).
    """
    if limit is None or len(prompts) <= limit:
        return prompts
    ranked = sorted(prompts, key=lambda prompt: sha256_text(f"{suite}\x00{prompt.id}"))
    chosen = {prompt.id for prompt in ranked[:limit]}
    return [prompt for prompt in prompts if prompt.id in chosen]


def _catalog_hashes(names: tuple[str, ...]) -> dict[str, str]:
    return {name: str(get_source(name).sha256) for name in names}


def _deduplicate(prompts: list[Prompt]) -> tuple[list[Prompt], list[str]]:
    seen: set[str] = set()
    kept, dropped = [], []
    for prompt in prompts:
        key = normalise_text(prompt.prompt) + "\n" + normalise_text(prompt.input)
        if key in seen:
            dropped.append(prompt.id)
        else:
            seen.add(key)
            kept.append(prompt)
    return kept, dropped
