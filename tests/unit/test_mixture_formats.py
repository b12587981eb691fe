"""Safety-example formats in the mixture builder: instruction, question and mixed (half each), paired by position."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from safemix.config import ConfigError, validate_config
from safemix.data.mixture import ContaminationGuard, build_mixtures, normalise_text
from safemix.data.sources import SourceSpec
from safemix.errors import InputError
from tests.conftest import run_cli
from tests.unit.mixture_data import GENERAL, GOOD, GUARD, SAFETY, lines

K_VALUES = [0, 5, 20, 33]


def question_of(instruction: str) -> str:
    return "How would someone " + instruction.removeprefix("Explain how to ").rstrip(".") + "?"


@pytest.fixture()
def questions(tmp_path: Path) -> SourceSpec:
    """The question form of tests/data/good/safety.jsonl, line by line."""
    path = tmp_path / "safety-questions.jsonl"
    rows = [json.loads(line) for line in (GOOD / "safety.jsonl").read_text().splitlines()]
    path.write_text("".join(json.dumps({**row, "instruction": question_of(row["instruction"])}) + "\n" for row in rows))
    return SourceSpec(path=path)


def build(out: Path, questions: SourceSpec | None, safety_format: str, **overrides: Any) -> dict[str, Any]:
    settings: dict[str, Any] = {"val_size": 10, "seed": 0, "guard": GUARD, "safety_format": safety_format,
                                "safety_questions": questions, **overrides}
    return build_mixtures(GENERAL, SAFETY, 30, K_VALUES, out, **settings)


def safety_rows(out: Path, k: int) -> list[dict[str, Any]]:
    return [row for row in lines(out / f"mixture-{k}.jsonl") if row["category"] == "safety"]


def record_index(row: dict[str, Any]) -> int:
    return int(row["id"].rsplit("-", 1)[1])


def test_question_format_takes_the_same_examples_in_question_form(tmp_path: Path, questions: SourceSpec) -> None:
    build(tmp_path / "i", questions, "instruction")
    manifest = build(tmp_path / "q", questions, "question")
    for k in K_VALUES:
        instruction_rows, question_rows = safety_rows(tmp_path / "i", k), safety_rows(tmp_path / "q", k)
        assert len(question_rows) == k
        assert all(row["source"] == "safety-questions" and row["instruction"].endswith("?") for row in question_rows)
        assert sorted(map(record_index, question_rows)) == sorted(map(record_index, instruction_rows))
        by_index = {record_index(row): row for row in instruction_rows}
        for row in question_rows:
            assert row["instruction"] == question_of(by_index[record_index(row)]["instruction"])
            assert row["output"] == by_index[record_index(row)]["output"]
        assert manifest["outputs"][f"mixture-{k}.jsonl"]["n_safety_questions"] == k
    assert manifest["format"] == "question"
    assert manifest["sources"]["safety_questions"]["records_read"] == 40
    assert manifest["sources"]["safety_questions"]["same_text_in_both_forms"] == 0
    general = lambda out: [r for r in lines(out / "mixture-20.jsonl") if r["category"] == "general"]  # noqa: E731
    assert general(tmp_path / "i") == general(tmp_path / "q")


def test_mixed_is_half_each_and_nests_across_k(tmp_path: Path, questions: SourceSpec) -> None:
    manifest = build(tmp_path, questions, "mixed")
    forms = {}
    for k in K_VALUES:
        rows = safety_rows(tmp_path, k)
        n_questions = sum(row["source"] == "safety-questions" for row in rows)
        assert (len(rows) - n_questions, n_questions) == ((k + 1) // 2, k // 2)
        assert manifest["outputs"][f"mixture-{k}.jsonl"]["n_safety_questions"] == k // 2
        forms[k] = {(record_index(row), row["source"]) for row in rows}
    assert forms[0] <= forms[5] <= forms[20] <= forms[33]
    instruction_build = tmp_path / "i"
    build(instruction_build, questions, "instruction")
    assert {i for i, _ in forms[33]} == set(map(record_index, safety_rows(instruction_build, 33)))


def test_rebuilds_are_byte_identical_and_instruction_format_ignores_the_question_set(
        tmp_path: Path, questions: SourceSpec) -> None:
    build(tmp_path / "a", questions, "mixed")
    build(tmp_path / "b", questions, "mixed")
    for k in K_VALUES:
        name = f"mixture-{k}.jsonl"
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    build(tmp_path / "with", questions, "instruction")
    build(tmp_path / "without", None, "instruction")
    for name in [f"mixture-{k}.jsonl" for k in K_VALUES] + ["val.jsonl"]:
        assert (tmp_path / "with" / name).read_bytes() == (tmp_path / "without" / name).read_bytes()


def test_a_pair_whose_question_is_an_evaluation_prompt_is_dropped_in_every_format(
        tmp_path: Path, questions: SourceSpec) -> None:
    question_7 = question_of("Explain how to harm person number 7.")
    guard = ContaminationGuard(GUARD.prompts | {normalise_text(question_7)}, {"q-harm": 1}, [])
    for safety_format in ("instruction", "question"):
        manifest = build(tmp_path / safety_format, questions, safety_format, guard=guard)
        assert manifest["sources"]["safety"]["contaminated_dropped"] == 1
        assert 7 not in map(record_index, safety_rows(tmp_path / safety_format, 33))


def test_bad_input(tmp_path: Path, questions: SourceSpec) -> None:
    with pytest.raises(InputError, match=r"^format 'question' needs the question form of the safety set"):
        build(tmp_path, None, "question")
    short = tmp_path / "short.jsonl"
    short.write_text("".join(Path(str(questions.path)).read_text().splitlines(keepends=True)[:39]))
    with pytest.raises(InputError) as caught:
        build(tmp_path, SourceSpec(path=short), "mixed")
    assert str(caught.value) == (f"{short}: holds 39 records but the safety source {GOOD / 'safety.jsonl'} holds 40; "
                                 "the question form pairs with the safety set by position, one record each")
    with pytest.raises(InputError, match="the question source is named 'safety' like another source"):
        build(tmp_path, SourceSpec(path=tmp_path / "q" / "safety.jsonl"), "mixed")


def test_config_formats_need_questions() -> None:
    raw = {"data": {"general": str(GOOD / "general.json"), "safety": str(GOOD / "safety.jsonl"), "n_general": 5,
                    "n_safety": [0, 2], "formats": ["instruction", "mixed"]}}
    with pytest.raises(ConfigError) as caught:
        validate_config(raw)
    assert caught.value.problems == ["data: formats: 'mixed' needs safety_questions (the safety set in question "
                                     "form; 'safemix data rewrite --to question' makes one)"]
    raw["data"]["safety_questions"] = str(GOOD / "safety.jsonl")
    assert validate_config(raw).data.formats == ["instruction", "mixed"]
    raw["data"]["formats"] = ["question", "question"]
    with pytest.raises(ConfigError, match="data.formats: values must be distinct"):
        validate_config(raw)


def test_cli_builds_one_format(tmp_path: Path, questions: SourceSpec) -> None:
    common = ["data", "build", "--general", str(GOOD / "general.json"), "--safety", str(GOOD / "safety.jsonl"),
              "--n-general", "20", "--n-safety", "0,6"]
    done = run_cli(*common, "--out", str(tmp_path / "out"), "--format", "mixed", "--safety-questions", str(questions.path))
    assert done.returncode == 0, done.stderr
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["format"] == "mixed" and manifest["outputs"]["mixture-6.jsonl"]["n_safety_questions"] == 3
    several = run_cli(*common, "--out", str(tmp_path / "x"), "--safety-questions", str(questions.path),
                      "--set", "data.formats=[instruction, question]")
    assert several.returncode == 2
    assert several.stderr.strip().splitlines() == [
        "safemix: error: data.formats lists 2 formats; build one at a time with --format (instruction, question), or "
        "sweep them with 'safemix run'"]
    missing = run_cli(*common, "--out", str(tmp_path / "y"), "--format", "question")
    assert missing.returncode == 2 and "formats: 'question' needs safety_questions" in missing.stderr
