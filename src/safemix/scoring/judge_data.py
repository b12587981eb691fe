"""Labelled (prompt, response) pairs for training the refusal judge, read from the local data directory.

The judge must learn the answer's stance toward the request, not the request's topic. Data where every refusal is
about a harmful request and every compliance about a benign one teaches the topic, so the stance data is built
so that each topic is seen with both stances (docs/refusal-judge.md, data card):

- harmful requests, refused: the paper's safety answers and safemix's starter safety set; refusal-direction
  baseline answers to JailbreakBench;
- harmful requests, complied with: refusal-direction answers of five chat models steered to comply
  (``jailbreakbench_ablation`` / ``_actadd``), AdvBench's affirmative openings, degenerate answers;
- benign requests, complied with: Alpaca, Alpaca on sensitive topics, AlpacaEval, safemix's starter general set,
  refusal-direction baselines;
- benign requests, refused: refusal-direction answers of models steered to refuse (``harmless_actadd``) and the
  constructed refusals of :mod:`safemix.scoring.judge_constructed` (no stock prefix, deflections, partial refusals);
- both, as the models safemix tunes write them: labelled answers of SmolLM2 before and after safety tuning to
  prompts outside the test set (``safemix/scoring/testset/refusal-judge-train-answers-v2.jsonl``).

Every example carries a ``group``: ``xstest:<model>`` for XSTest's human-labelled completions (the folds of the
held-out evaluation), ``tuned-xstest`` for tuned-model answers to XSTest prompts, and ``stance`` for the rest. Prompts of the hand-labelled test set are removed from all
of it (:func:`load_judge_data`'s ``exclude``), so the test set stays unseen.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from safemix.data.catalog import get_source, locate
from safemix.data.mixture import normalise_text, permutation_key
from safemix.data.readers import read_rows
from safemix.data.sources import SourceSpec, load_instructions
from safemix.errors import InputError, input_error
from safemix.files import sha256_file, sha256_text
from safemix.scoring.labels import REFUSAL_LABELS, RefusalLabel
from safemix.scoring.strmatch import is_prefix_refusal

log = logging.getLogger(__name__)


#: XSTest's three models with human-labelled completions, by catalog name.
XSTEST_COMPLETIONS: dict[str, str] = {
    "gpt4": "xstest-completions-gpt4",
    "llama2orig": "xstest-completions-llama2orig",
    "llama2new": "xstest-completions-llama2new",
}
#: (catalog source, label, at most this many examples): answers whose label holds by construction.
ANSWER_SOURCES: tuple[tuple[str, RefusalLabel, int], ...] = (
    ("paper-safety", "full_refusal", 900),
    ("llamafactory-alpaca-en-demo", "full_compliance", 500),
    ("alpaca-safety-only", "full_compliance", 600),
    ("alpaca-eval", "full_compliance", 300),
    # safemix's own starter sets, which the quickstart tunes with: its refusals say why and offer an alternative
    ("starter-safety", "full_refusal", 300),
    ("starter-general", "full_compliance", 300),
)
#: Arditi et al. (2024) completions of 5 chat models, per run: the stance the run was steered to. An answer is
#: kept only where XSTest's prefix rule agrees with that stance (``harmless_actadd`` answers that comply anyway,
#: ``*_ablation`` answers that still refuse, are left out rather than guessed).
REFUSAL_DIRECTION_GLOB = "refusal-direction/pipeline/runs/*/completions/*_evaluations.json"
REFUSAL_DIRECTION_STANCE: dict[str, RefusalLabel] = {
    "harmless_actadd": "full_refusal",
    "harmless_baseline": "full_compliance",
    "jailbreakbench_ablation": "full_compliance",
    "jailbreakbench_actadd": "full_compliance",
    "jailbreakbench_baseline": "full_refusal",
}
REFUSAL_DIRECTION_LICENSE = "Apache-2.0 (repo); completions under each model's license"
#: Group of tuned-model answers to XSTest prompts (see :func:`read_tuned_answers`).
TUNED_XSTEST_GROUP = "tuned-xstest"


@dataclass(frozen=True)
class LabelledResponse:
    """One response with its refusal label, where it came from, and its group (``xstest:<model>`` or ``stance``)."""

    prompt: str
    response: str
    label: RefusalLabel
    source: str
    group: str


@dataclass(frozen=True)
class TrainingFile:
    """A file read for training: recorded in the judge's data card.

    ``examples`` counts the examples built from the file; a constructed kind built from several files records each
    of them with the kind's whole count.
    """

    source: str
    path: str
    sha256: str
    examples: int
    license: str


def prompt_key(prompt: str) -> str:
    """Identity of a prompt across sources: sha256 of its normalised text (NFKC, case and spacing ignored)."""
    return sha256_text(normalise_text(prompt))


def xstest_label(raw: str, path: Path, where: str) -> RefusalLabel:
    """Turn XSTest's ``1_full_compliance`` / ``2_full_refusal`` / ``3_partial_refusal`` into a label."""
    label = raw.partition("_")[2]
    if label not in REFUSAL_LABELS:
        raise input_error(path, f"unexpected XSTest label {raw!r}", where)
    return label


def read_xstest_completions(name: str, data_dir: Path | None) -> tuple[list[LabelledResponse], Path]:
    """Read one XSTest labelled-completions catalog source into labelled responses."""
    source = get_source(name)
    path = locate(name, data_dir, download=False)
    model = name.removeprefix("xstest-completions-").split("-")[0]
    columns = source.columns
    examples = [
        LabelledResponse(
            prompt=row.values[columns["prompt"]],
            response=row.values[columns["response"]],
            label=xstest_label(row.values[columns["label"]], path, row.where),
            source=name,
            group=f"xstest:{model}",
        )
        for row in read_rows(path, "csv")
    ]
    return examples, path


def read_refusal_direction(path: Path) -> list[LabelledResponse]:
    """The answers of one refusal-direction completions file whose prefix-rule stance matches the run's steering."""
    run = path.name.removesuffix("_evaluations.json")
    stance = REFUSAL_DIRECTION_STANCE.get(run)
    if stance is None:
        raise input_error(path, f"unknown refusal-direction run {run!r} (expected one of {sorted(REFUSAL_DIRECTION_STANCE)})")
    try:
        items = json.loads(path.read_text(encoding="utf-8"))["completions"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise input_error(path, f"expected a JSON object with a 'completions' list ({err})") from None
    source = f"refusal-direction:{path.parts[-3]}/{run}"
    examples = []
    for item in items:
        prompt, response = str(item.get("prompt") or ""), str(item.get("response") or "")
        if response.strip() and is_prefix_refusal(response) == (stance == "full_refusal"):
            examples.append(LabelledResponse(prompt, response, stance, source, "stance"))
    return examples


def read_instruction_answers(name: str, label: RefusalLabel, data_dir: Path | None) -> tuple[list[LabelledResponse], Path]:
    """Read an instruction source (or a prompt suite with an ``output`` column) as answers with one label."""
    source = get_source(name)
    if source.kind == "instructions":
        loaded = load_instructions(SourceSpec(name=name), data_dir)
        pairs = [(record.instruction, record.output) for record in loaded.records]
    else:
        rows = read_rows(locate(name, data_dir, download=False), "auto")
        pairs = [(row.values[source.columns["prompt"]], row.values["output"]) for row in rows]
    path = locate(name, data_dir, download=False)
    return [LabelledResponse(prompt, answer, label, name, "stance") for prompt, answer in pairs if answer.strip()], path


def read_tuned_answers(data_dir: Path) -> tuple[list[LabelledResponse], Path, str, str]:
    """The labelled answers of SmolLM2 before and after safety tuning to prompts outside the test set.

    Returns the examples, the file, the source name and the license, in the order :meth:`JudgeData.add` takes.
    Answers to XSTest prompts form the group :data:`TUNED_XSTEST_GROUP`: only the final XSTest stage trains on
    them, so the held-out folds never see a prompt of their test half.
    """
    from safemix.scoring.judge_testset import read_testset, resolve_prompts, shipped_train_answers

    path = shipped_train_answers()
    items = read_testset(path)
    examples = [LabelledResponse(prompt, item.response, item.label, f"tuned-answers:{item.model}",
                                 TUNED_XSTEST_GROUP if item.suite == "xstest" else "stance")
                for item, prompt in zip(items, resolve_prompts(items, data_dir))]
    return examples, path, "tuned-answers", "answers: SmolLM2 (Apache-2.0) via safemix, labelled by reading; prompts: their suites' licenses"


def read_prompts(name: str, data_dir: Path | None) -> tuple[list[tuple[str, dict[str, str]]], Path]:
    """Each row of a prompt source as (prompt text, all its columns): for the constructed examples."""
    source = get_source(name)
    path = locate(name, data_dir, download=False)
    column = source.columns.get("prompt", "prompt")
    return [(row.values[column], dict(row.values)) for row in read_rows(path, "auto")], path


def seeded_sample(examples: Iterable[LabelledResponse], limit: int, seed: int, role: str) -> list[LabelledResponse]:
    """At most ``limit`` examples, chosen by a seeded sort on (prompt, response): independent of file order."""
    ordered = sorted(examples, key=lambda e: permutation_key(seed, role, f"{e.prompt}\x00{e.response}"))
    return ordered[:limit]


class JudgeData:
    """Collects examples and the files they came from, dropping the excluded prompts as it goes."""

    def __init__(self, data_dir: Path, exclude: Collection[str]):
        self.data_dir = data_dir
        self.exclude = exclude
        self.examples: list[LabelledResponse] = []
        self.files: list[TrainingFile] = []
        self.n_excluded = 0

    def add(self, batch: list[LabelledResponse], path: Path | Sequence[Path], source: str, license: str) -> None:
        """Add the examples built from one file, or several (without excluded prompts), and record the files."""
        kept = [e for e in batch if prompt_key(e.prompt) not in self.exclude]
        self.n_excluded += len(batch) - len(kept)
        self.examples.extend(kept)
        for file in [path] if isinstance(path, Path) else path:
            relative = str(file.relative_to(self.data_dir)) if file.is_relative_to(self.data_dir) else str(file)
            self.files.append(TrainingFile(source, relative, sha256_file(file), len(kept), license))


def load_judge_data(data_dir: Path | None, *, exclude: Collection[str] = (), stance: bool = True, seed: int = 0,
                    construct: Callable[[JudgeData, int], None] | None = None) -> JudgeData:
    """Read every labelled response the refusal judge trains on, and the files they came from.

    Args:
        data_dir: the local data mirror (``shared/data`` layout); nothing is downloaded.
        exclude: :func:`prompt_key` of prompts that must never be trained on (the hand-labelled test set's).
        stance: also read the stance data (group ``stance``); without it, XSTest's human labels only.
        seed: seed of the per-source samples and of the constructed examples.
        construct: adds the constructed examples (default :func:`safemix.scoring.judge_constructed.add_constructed`).

    Raises:
        InputError: no data directory, or a file is missing or malformed.
    """
    if data_dir is None:
        raise InputError("training the refusal judge needs the data directory: pass --data-dir or set SAFEMIX_DATA_DIR")
    data = JudgeData(data_dir, frozenset(exclude))
    for name in XSTEST_COMPLETIONS.values():
        batch, path = read_xstest_completions(name, data_dir)
        data.add(batch, path, name, get_source(name).license)
    if stance:
        for name, label, limit in ANSWER_SOURCES:
            batch, path = read_instruction_answers(name, label, data_dir)
            data.add(seeded_sample(batch, limit, seed, name), path, name, get_source(name).license)
        for path in sorted(data_dir.glob(REFUSAL_DIRECTION_GLOB)):
            data.add(read_refusal_direction(path), path, "refusal-direction", REFUSAL_DIRECTION_LICENSE)
        data.add(*read_tuned_answers(data_dir))
        if construct is None:
            from safemix.scoring.judge_constructed import add_constructed

            construct = add_constructed
        construct(data, seed)
    log.info("refusal-judge data: %d examples from %d files (%d left out: prompts of the test set)",
             len(data.examples), len(data.files), data.n_excluded)
    return data
