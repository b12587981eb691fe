"""Labelled responses for training and evaluating the refusal judge, read from the local data directory.

Every example carries a refusal label and a ``group``: the model that wrote it for XSTest's human-labelled
completions (``xstest:gpt4``, ...), so leave-one-model-out can hold a model out, and ``extra`` for the
automatically labelled or label-by-construction data that is only ever used for training.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from safemix.data.catalog import get_source, locate
from safemix.data.readers import read_rows
from safemix.data.sources import SourceSpec, load_instructions
from safemix.errors import InputError, input_error
from safemix.files import sha256_file

log = logging.getLogger(__name__)

RefusalLabel = Literal["full_compliance", "full_refusal", "partial_refusal"]
REFUSAL_LABELS: tuple[RefusalLabel, ...] = ("full_compliance", "full_refusal", "partial_refusal")

#: XSTest's three models with human-labelled completions, by catalog name.
XSTEST_COMPLETIONS: dict[str, str] = {
    "gpt4": "xstest-completions-gpt4",
    "llama2orig": "xstest-completions-llama2orig",
    "llama2new": "xstest-completions-llama2new",
}
#: Refusal-style safe answers to harmful instructions (the paper's safety set): labelled full_refusal.
REFUSAL_SOURCES: tuple[str, ...] = ("paper-safety",)
#: Ordinary instruction answers, including answers on sensitive-but-benign topics: labelled full_compliance.
COMPLIANCE_SOURCES: tuple[str, ...] = ("llamafactory-alpaca-en-demo", "alpaca-safety-only", "alpaca-eval")
#: Arditi et al. (2024) completions of 5 chat models; labels are automatic (substring match, LlamaGuard 2).
REFUSAL_DIRECTION_GLOB = "refusal-direction/pipeline/runs/*/completions/*_evaluations.json"


@dataclass(frozen=True)
class LabelledResponse:
    """One response with its refusal label, where it came from, and its leave-one-model-out group."""

    prompt: str
    response: str
    label: RefusalLabel
    source: str
    group: str


@dataclass(frozen=True)
class TrainingFile:
    """A file read for training: recorded in the head's data card."""

    source: str
    path: str
    sha256: str
    examples: int
    license: str


def xstest_label(raw: str, path: Path, where: str) -> RefusalLabel:
    """Turn XSTest's ``1_full_compliance`` / ``2_full_refusal`` / ``3_partial_refusal`` into a label."""
    label = raw.partition("_")[2]
    if label not in REFUSAL_LABELS:
        raise input_error(path, f"unexpected XSTest label {raw!r}", where)
    return label  # type: ignore[return-value]


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


def _refusal_direction_label(item: dict[str, object]) -> RefusalLabel | None:
    """Label from Arditi et al.'s automatic judgements, or None where they disagree.

    ``is_jailbreak_substring_matching`` is 0 when a refusal phrase occurs. On harmful prompts LlamaGuard 2 also
    judged the answer; an answer that the substring rule calls compliant but LlamaGuard calls safe is often a
    deflection, so those disagreements are left out rather than guessed.
    """
    substring = item.get("is_jailbreak_substring_matching")
    guard = item.get("is_jailbreak_llamaguard2")
    if guard is not None and guard != substring:
        return None
    return "full_refusal" if substring == 0 else "full_compliance"


def read_refusal_direction(data_dir: Path) -> Iterator[tuple[list[LabelledResponse], Path]]:
    """Yield the labelled responses of each refusal-direction completions file, in path order."""
    for path in sorted(data_dir.glob(REFUSAL_DIRECTION_GLOB)):
        try:
            items = json.loads(path.read_text(encoding="utf-8"))["completions"]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise input_error(path, f"expected a JSON object with a 'completions' list ({err})") from None
        model, run = path.parts[-3], path.name.removesuffix("_evaluations.json")
        examples = []
        for item in items:
            label = _refusal_direction_label(item)
            if label is not None and str(item.get("response") or "").strip():
                examples.append(LabelledResponse(str(item["prompt"]), str(item["response"]), label,
                                                 f"refusal-direction:{model}/{run}", "extra"))
        yield examples, path


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
    return [LabelledResponse(prompt, answer, label, name, "extra") for prompt, answer in pairs if answer.strip()], path


def load_judge_data(data_dir: Path | None, *, extra: bool = True) -> tuple[list[LabelledResponse], list[TrainingFile]]:
    """Read every labelled response the refusal judge trains on, and the files they came from.

    Args:
        data_dir: the local data mirror (``shared/data`` layout); nothing is downloaded.
        extra: also read the automatically labelled and label-by-construction data (group ``extra``).

    Raises:
        InputError: no data directory, or a file is missing or malformed.
    """
    if data_dir is None:
        raise InputError("training the refusal judge needs the data directory: pass --data-dir or set SAFEMIX_DATA_DIR")
    examples: list[LabelledResponse] = []
    files: list[TrainingFile] = []

    def add(batch: list[LabelledResponse], path: Path, source: str, license: str) -> None:
        examples.extend(batch)
        files.append(TrainingFile(source, str(path.relative_to(data_dir)) if path.is_relative_to(data_dir) else str(path),
                                  sha256_file(path), len(batch), license))

    for name in XSTEST_COMPLETIONS.values():
        batch, path = read_xstest_completions(name, data_dir)
        add(batch, path, name, get_source(name).license)
    if extra:
        for name in REFUSAL_SOURCES:
            batch, path = read_instruction_answers(name, "full_refusal", data_dir)
            add(batch, path, name, get_source(name).license)
        for name in COMPLIANCE_SOURCES:
            batch, path = read_instruction_answers(name, "full_compliance", data_dir)
            add(batch, path, name, get_source(name).license)
        for batch, path in read_refusal_direction(data_dir):
            add(batch, path, "refusal-direction", "Apache-2.0 (repo); completions under each model's license")
    log.info("refusal-judge data: %d examples from %d files", len(examples), len(files))
    return examples, files
