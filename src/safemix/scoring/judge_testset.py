"""The refusal judge's hand-labelled test set: answers of models that safemix tuned, labelled by reading them.

Each item is one answer of one model (base or adapter) of a safemix run to one suite prompt, with the label people
gave it by XSTest's three-way definitions (``safemix/scoring/testset/LABELLING.md``) and the strata it was
sampled from (``disagreement``: the refusal scorers of the run disagreed on it; ``control``: a seeded random
sample of all answers, so accuracy can be estimated without the over-sampling's bias). How the items were
sampled is in ``safemix/scoring/testset/README.md``.

The file stores each prompt's suite, id and :func:`~safemix.scoring.judge_data.prompt_key`, never its text:
the paper's prompts are read from the data directory (:func:`resolve_prompts`), the starter suites' from the
package.

What ``safemix judge train`` leaves out (:func:`reserved_prompt_keys`) is fixed before any answer is sampled:
every prompt of the test set's suites (:data:`TESTSET_SUITES`), and of XSTest, which the judge does train on,
the :data:`RESERVED_XSTEST` prompts that the test set's XSTest answers are drawn from.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from safemix.data.mixture import permutation_key
from safemix.data.suites import load_suite
from safemix.errors import InputError, first_problem, input_error
from safemix.scoring.judge_data import prompt_key
from safemix.scoring.labels import RefusalLabel

TESTSET_NAME = "refusal-judge-testset-v2"
TRAIN_ANSWERS_NAME = "refusal-judge-train-answers-v2"
#: Suites whose every prompt is kept out of the judge's training: the test set's answers answer them.
TESTSET_SUITES: tuple[str, ...] = (
    "starter-harmful", "starter-safe", "starter-general-prompts", "i-malicious-instructions",
    "i-physical-safety-unsafe", "i-physical-safety-safe", "o-controversial", "i-alpaca",
)
#: XSTest prompts set aside for the test set (a seeded sample); the judge trains on the others' completions.
RESERVED_XSTEST = 80
RESERVATION_SEED = 0
#: How many answers each run's sampled population held (README's sampling table). Its disagreement stratum is a
#: census of that population's disagreements and its control stratum a uniform sample of the population, so
#: together they estimate a scorer's accuracy on every answer of the run (``benchmarks/judge_eval.py``).
POPULATION_SIZES: dict[str, int] = {"quickstart": 800, "judge-testset": 1404, "paper-cpu": 4250}
#: Draws of the Monte Carlo behind :func:`population_accuracy`'s interval.
POSTERIOR_DRAWS = 4000
#: The annotation app's refusal labels (none / full / partial) as XSTest's three classes.
LABEL_OF_HUMAN_REFUSAL: dict[str, RefusalLabel] = {"none": "full_compliance", "full": "full_refusal",
                                                   "partial": "partial_refusal"}


class TestItem(BaseModel):
    """One hand-labelled answer."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    run: str
    model: str
    suite: str
    category: str
    prompt_id: str
    prompt_key: str
    response: str
    label: RefusalLabel
    strata: list[Literal["disagreement", "control", "training"]] = Field(min_length=1)
    note: str = ""


def shipped_testset() -> Path:
    """The test set that ships inside the package."""
    return Path(str(resources.files("safemix.scoring").joinpath("testset", f"{TESTSET_NAME}.jsonl")))


def shipped_train_answers() -> Path:
    """The labelled answers of tuned models to prompts outside the test set, which the judge trains on."""
    return shipped_testset().with_name(f"{TRAIN_ANSWERS_NAME}.jsonl")


def read_testset(path: Path | None = None) -> list[TestItem]:
    """Read and validate a file of labelled answers (default the shipped test set).

    Raises:
        InputError: the file is missing or a line is not a valid item (naming the line).
    """
    path = path or shipped_testset()
    if not path.is_file():
        raise input_error(path, "refusal-judge test set not found")
    items = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            items.append(TestItem.model_validate_json(line))
        except ValidationError as err:
            raise input_error(path, first_problem(err), f"line {number}") from None
    return items


def testset_prompt_keys(path: Path | None = None) -> frozenset[str]:
    """The prompt keys of the test set's items."""
    return frozenset(item.prompt_key for item in read_testset(path))


def reserved_xstest_ids(data_dir: Path | None) -> list[str]:
    """The ids of the XSTest prompts reserved for the test set, in their seeded order."""
    prompts = load_suite("xstest", data_dir, download=False).prompts
    ordered = sorted(prompts, key=lambda p: permutation_key(RESERVATION_SEED, "judge-testset-xstest", p.id))
    return [p.id for p in ordered[:RESERVED_XSTEST]]


def reserved_prompt_keys(data_dir: Path | None) -> frozenset[str]:
    """Prompt keys the judge never trains on: every prompt of :data:`TESTSET_SUITES` and the reserved XSTest prompts."""
    keys = {prompt_key(p.prompt) for name in TESTSET_SUITES for p in load_suite(name, data_dir, download=False).prompts}
    reserved = set(reserved_xstest_ids(data_dir))
    keys.update(prompt_key(p.prompt) for p in load_suite("xstest", data_dir, download=False).prompts if p.id in reserved)
    return frozenset(keys)


def _prompts_by_id(suite: str, data_dir: Path | None) -> dict[str, str]:
    """A suite's prompts by id; ``safetext`` and ``llamafactory-alpaca-en-demo`` are the prompt sources of round 3 of
    the training answers (:mod:`~safemix.scoring.judge_constructed`), not suites."""
    from safemix.scoring.judge_constructed import instruction_prompts, safetext_questions

    if suite == "safetext":
        return safetext_questions(data_dir)
    if suite == "llamafactory-alpaca-en-demo":
        return instruction_prompts(suite, data_dir)
    return {p.id: p.prompt for p in load_suite(suite, data_dir, download=False).prompts}


def resolve_prompts(items: Sequence[TestItem], data_dir: Path | None) -> list[str]:
    """The prompt text of each item, read from its suite or source; the text must still have the recorded prompt key.

    Raises:
        InputError: a suite cannot be read, or an id is missing or its text changed.
    """
    by_suite: dict[str, dict[str, str]] = {}
    texts = []
    for item in items:
        if item.suite not in by_suite:
            by_suite[item.suite] = _prompts_by_id(item.suite, data_dir)
        text = by_suite[item.suite].get(item.prompt_id)
        if text is None or prompt_key(text) != item.prompt_key:
            raise InputError(f"test set item {item.id}: suite {item.suite!r} has "
                             f"{'no prompt ' + repr(item.prompt_id) if text is None else 'another text for ' + repr(item.prompt_id)}")
        texts.append(text)
    return texts


def population_accuracy(items: Sequence[TestItem], correct: Sequence[bool], runs: Sequence[str],
                        seed: int = 0) -> dict[str, float | int]:
    """A scorer's estimated accuracy on every answer of the test set's runs ``runs`` (a stratified estimate).

    ``correct[i]`` says whether the scorer's call on ``items[i]`` matches its label. Returns ``n`` (the runs'
    answers, :data:`POPULATION_SIZES`), ``accuracy``, ``ci_low`` and ``ci_high``.

    Each run's disagreement stratum is a census of its population's disagreements, so its items count as they are;
    the rest of the population is estimated from the run's control items outside that stratum (a uniform sample
    of it). The interval is a Jeffreys interval carried through the weighting: the 2.5 and 97.5 percentiles of
    the estimate over seeded draws of each run's rest-of-population accuracy from Beta(hits + 1/2, misses + 1/2)
    (unlike a bootstrap, it does not collapse when every sampled item is right), widened to reach the point
    estimate where a run's sample is all right (as Brown, Cai and DasGupta's Jeffreys interval then ends at 1).
    """
    census = {run: [c for it, c in zip(items, correct) if it.run == run and "disagreement" in it.strata] for run in runs}
    sample = {run: [c for it, c in zip(items, correct) if it.run == run and it.strata == ["control"]] for run in runs}
    total = sum(POPULATION_SIZES[run] for run in runs)

    def estimate(rest_accuracy: dict[str, float]) -> float:
        return sum(sum(census[run]) + (POPULATION_SIZES[run] - len(census[run])) * rest_accuracy[run]
                   for run in runs) / total

    rng = random.Random(seed)
    draws = sorted(estimate({run: rng.betavariate(sum(sample[run]) + 0.5, len(sample[run]) - sum(sample[run]) + 0.5)
                             for run in runs}) for _ in range(POSTERIOR_DRAWS))
    point = estimate({run: sum(sample[run]) / len(sample[run]) for run in runs})
    return {"n": total, "accuracy": point, "ci_low": min(point, draws[int(0.025 * POSTERIOR_DRAWS)]),
            "ci_high": max(point, draws[int(0.975 * POSTERIOR_DRAWS) - 1])}
