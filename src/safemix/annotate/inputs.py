"""The answers a study compares: one generations file or directory per model, all answering the same prompts.

A model's name is, in order of preference: the ``--name`` given for it; its ``run.json`` label when the input lies
in a run directory (``RUN_DIR/generations/<slug>/``), so that it matches the ``model`` of the run's score lines;
the model named by the generations manifest (``safemix generate``); the input's folder name.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from safemix.errors import InputError, input_error
from safemix.files import sha256_file
from safemix.generate.output import read_generations
from safemix.records import Generation
from safemix.run_files import RUN_INDEX, read_run_index
from safemix.scoring.inputs import generations_model_name, input_files


@dataclass(frozen=True)
class ModelAnswers:
    """One model's answers, keyed by prompt id, and the files (with their sha256) they were read from."""

    name: str
    source: str
    files: dict[str, str]
    answers: dict[str, Generation]


def read_model_answers(paths: Sequence[Path], names: Sequence[str] = ()) -> list[ModelAnswers]:
    """Read each model's generations and check that every model answered exactly the same prompts.

    Args:
        paths: one generations JSONL file, or a directory of ``<suite>.jsonl`` files, per model.
        names: display names overriding the automatic ones, one per path in the same order (or none).

    Raises:
        InputError: a bad record, an id twice, two models with one name, or prompt ids (or prompt texts) that differ
            between inputs.
    """
    if names and len(names) != len(paths):
        raise InputError(f"--name is given {len(names)} time(s) for {len(paths)} generations inputs; "
                         "give one name per input, in the same order")
    models = [_read_one(path, names[index] if names else model_name(path)) for index, path in enumerate(paths)]
    _check_distinct(models)
    for model in models[1:]:
        _check_same_prompts(models[0], model)
    return models


def model_name(path: Path) -> str:
    """The model that wrote a generations file or directory: its run label, else its generations manifest's model."""
    folder = (path if path.is_dir() else path.parent).resolve()
    run_dir = folder.parent.parent
    if folder.parent.name == "generations" and (run_dir / RUN_INDEX).is_file():
        for entry in read_run_index(run_dir).models:
            if (run_dir / entry.generations_dir).resolve() == folder:
                return entry.label
    return generations_model_name(path)


def _read_one(path: Path, name: str) -> ModelAnswers:
    answers: dict[str, Generation] = {}
    files = input_files(path)
    for file in files:
        for record in read_generations(file):
            if record.id in answers:
                raise input_error(file, f"prompt id {record.id!r} occurs twice in {path}")
            answers[record.id] = record
    return ModelAnswers(name, str(path), {str(file): sha256_file(file) for file in files}, answers)


def _check_distinct(models: list[ModelAnswers]) -> None:
    seen: dict[str, ModelAnswers] = {}
    for model in models:
        if model.name in seen:
            raise input_error(model.source, f"names the same model {model.name!r} as {seen[model.name].source}; "
                              "give every input its own --name")
        seen[model.name] = model


def _check_same_prompts(reference: ModelAnswers, model: ModelAnswers) -> None:
    missing = [prompt_id for prompt_id in reference.answers if prompt_id not in model.answers]
    if missing:
        raise input_error(model.source, f"has no answer for prompt id {missing[0]!r} ({len(missing)} missing), which "
                          f"{reference.source} answers; all inputs must answer the same prompts")
    extra = [prompt_id for prompt_id in model.answers if prompt_id not in reference.answers]
    if extra:
        raise input_error(model.source, f"answers prompt id {extra[0]!r} ({len(extra)} extra), which "
                          f"{reference.source} does not; all inputs must answer the same prompts")
    for prompt_id, record in model.answers.items():
        if record.prompt != reference.answers[prompt_id].prompt:
            raise input_error(model.source,
                              f"prompt id {prompt_id!r} has another prompt text than in {reference.source}")
