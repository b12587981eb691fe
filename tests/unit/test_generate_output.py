"""The generate stage with the fake backend: record shape, manifest, resume after a crash, refusing other settings."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from safemix.errors import InputError
from safemix.generate.config import GenerateConfig, load_presets
from safemix.generate.fake import FakeGenerator
from safemix.generate.output import settings_difference
from safemix.generate.runner import generate_suites
from safemix.records import Generation, Prompt

RECORD_KEYS = ["id", "suite", "category", "prompt", "response", "finish_reason", "n_new_tokens"]


@pytest.fixture()
def prompt_files(tmp_path: Path) -> dict[str, Path]:
    """Two small prompt files: 23 harmful prompts (one duplicate) and 7 safe ones."""
    harmful = tmp_path / "inputs" / "harm.jsonl"
    harmful.parent.mkdir()
    rows = [{"prompt": f"harmful request number {index} " + "word " * (index % 5)} for index in range(22)]
    rows.append({"prompt": rows[3]["prompt"]})
    harmful.write_text("".join(json.dumps(row) + "\n" for row in rows))
    safe = tmp_path / "inputs" / "safe.csv"
    safe.write_text("question\n" + "".join(f"how do I kill process {index}?\n" for index in range(7)))
    return {"harm": harmful, "safe": safe}


def fake_config(prompt_files: dict[str, Path], **changes: object) -> GenerateConfig:
    fields: dict[str, object] = {
        "backend": "fake",
        "base_model": "fake-model",
        "suites": [
            {"path": str(prompt_files["harm"]), "category": "harmful"},
            {"path": str(prompt_files["safe"]), "category": "safe", "columns": {"prompt": "question"}},
        ],
        "batch_size": 4,
        "decoding": {"max_new_tokens": 9},
    }
    fields.update(changes)
    return GenerateConfig.model_validate(fields)


def read_lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_writes_one_record_per_prompt_with_the_issue_shape(tmp_path: Path, prompt_files: dict[str, Path]) -> None:
    manifest = generate_suites(fake_config(prompt_files), tmp_path / "out", data_dir=None)
    rows = read_lines(tmp_path / "out" / "harm.jsonl")
    assert [row["id"] for row in rows] == [f"harm-{index}" for index in range(22)]
    assert all(list(row) == RECORD_KEYS for row in rows)
    assert {row["category"] for row in rows} == {"harmful"}
    assert all(row["finish_reason"] in ("stop", "length") and 0 < row["n_new_tokens"] <= 9 for row in rows)
    assert manifest["suites"]["harm"]["duplicates_dropped"] == ["harm-22"]
    assert manifest["suites"]["safe"]["n_prompts"] == 7 and manifest["suites"]["safe"]["complete"]
    assert manifest["settings"]["decoding"]["max_new_tokens"] == 9
    assert manifest == json.loads((tmp_path / "out" / "manifest.json").read_text())


def test_the_same_run_twice_gives_identical_bytes(tmp_path: Path, prompt_files: dict[str, Path]) -> None:
    for name in ("a", "b"):
        generate_suites(fake_config(prompt_files), tmp_path / name, data_dir=None)
    for file in ("harm.jsonl", "safe.jsonl", "manifest.json"):
        assert (tmp_path / "a" / file).read_bytes() == (tmp_path / "b" / file).read_bytes()


class Crash(Exception):
    """Stands for kill -9 in the middle of a run."""


FAKE_ITER_BATCHES = FakeGenerator.iter_batches


def out_of_order_then_crash(after_batches: int | None):
    """An ``iter_batches`` that yields batches last-first (like a length-sorted backend) and may crash."""

    def iter_batches(self: FakeGenerator, prompts: Sequence[Prompt]) -> Iterator[list[Generation]]:
        for number, batch in enumerate(list(FAKE_ITER_BATCHES(self, prompts))[::-1]):
            if number == after_batches:
                raise Crash
            yield batch

    return iter_batches


def test_resume_after_a_crash_matches_an_uninterrupted_run(
    tmp_path: Path, prompt_files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = fake_config(prompt_files)
    monkeypatch.setattr(FakeGenerator, "iter_batches", out_of_order_then_crash(None))
    generate_suites(config, tmp_path / "whole", data_dir=None)

    monkeypatch.setattr(FakeGenerator, "iter_batches", out_of_order_then_crash(2))
    with pytest.raises(Crash):
        generate_suites(config, tmp_path / "resumed", data_dir=None)
    partial = read_lines(tmp_path / "resumed" / "harm.jsonl")
    # the last two batches (2 + 4 of 22 prompts) reached the disk before the crash, in the order they finished
    assert [row["id"] for row in partial] == [f"harm-{index}" for index in (20, 21, 16, 17, 18, 19)]
    assert json.loads((tmp_path / "resumed" / "manifest.json").read_text())["suites"]["harm"]["complete"] is False
    with open(tmp_path / "resumed" / "harm.jsonl", "a") as handle:
        handle.write('{"id": "harm-0", "suite": "ha')  # a torn last line, as kill -9 can leave

    monkeypatch.setattr(FakeGenerator, "iter_batches", out_of_order_then_crash(None))
    generate_suites(config, tmp_path / "resumed", data_dir=None)
    for file in ("harm.jsonl", "safe.jsonl", "manifest.json"):
        assert (tmp_path / "resumed" / file).read_bytes() == (tmp_path / "whole" / file).read_bytes()


def test_resume_generates_only_the_missing_ids(tmp_path: Path, prompt_files: dict[str, Path],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    config = fake_config(prompt_files)
    generate_suites(config, tmp_path / "out", data_dir=None)
    lines = (tmp_path / "out" / "harm.jsonl").read_text().splitlines(keepends=True)
    (tmp_path / "out" / "harm.jsonl").write_text("".join(lines[:-5]))
    asked: list[str] = []

    def spy(self: FakeGenerator, prompts: Sequence[Prompt]) -> Iterator[list[Generation]]:
        asked.extend(prompt.id for prompt in prompts)
        return FAKE_ITER_BATCHES(self, prompts)

    monkeypatch.setattr(FakeGenerator, "iter_batches", spy)
    generate_suites(config, tmp_path / "out", data_dir=None)
    assert asked == [f"harm-{index}" for index in range(17, 22)]
    assert len(read_lines(tmp_path / "out" / "harm.jsonl")) == 22


def test_a_finished_run_does_not_build_the_generator_again(tmp_path: Path, prompt_files: dict[str, Path],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    generate_suites(fake_config(prompt_files), tmp_path / "out", data_dir=None)
    monkeypatch.setattr("safemix.generate.runner.build_generator", lambda *args: pytest.fail("model loaded"))
    generate_suites(fake_config(prompt_files), tmp_path / "out", data_dir=None)


def test_other_settings_are_refused_unless_overwrite(tmp_path: Path, prompt_files: dict[str, Path]) -> None:
    out = tmp_path / "out"
    generate_suites(fake_config(prompt_files), out, data_dir=None)
    with pytest.raises(InputError) as caught:
        generate_suites(fake_config(prompt_files, preset="paper"), out, data_dir=None)
    assert str(caught.value) == (f"{out}: holds a run with other settings (decoding.num_beams: 1 -> 4); "
                                 "use --overwrite or another --out")
    generate_suites(fake_config(prompt_files, preset="paper"), out, data_dir=None, overwrite=True)
    assert json.loads((out / "manifest.json").read_text())["settings"]["decoding"]["num_beams"] == 4


def test_a_finished_rerun_with_another_batch_size_is_not_refused_and_writes_nothing(
    tmp_path: Path, prompt_files: dict[str, Path]
) -> None:
    # batch_size is left out of the settings a rerun must match; that it changes no answer is checked on a real
    # model in tests/integration/test_generate_hf.py
    first = generate_suites(fake_config(prompt_files), tmp_path / "out", data_dir=None)
    written = {path: path.stat().st_mtime_ns for path in (tmp_path / "out").iterdir()}
    manifest = generate_suites(fake_config(prompt_files, batch_size=2), tmp_path / "out", data_dir=None)
    assert manifest == first and manifest["batch_size"] == 4  # the batch size the answers were made with
    assert {path: path.stat().st_mtime_ns for path in (tmp_path / "out").iterdir()} == written


def test_changed_prompts_are_refused(tmp_path: Path, prompt_files: dict[str, Path]) -> None:
    generate_suites(fake_config(prompt_files), tmp_path / "out", data_dir=None)
    with open(prompt_files["safe"], "a") as handle:
        handle.write("a new question\n")
    with pytest.raises(InputError, match="suite 'safe' was generated from other prompts"):
        generate_suites(fake_config(prompt_files), tmp_path / "out", data_dir=None)


def test_suite_files_without_a_manifest_are_refused(tmp_path: Path, prompt_files: dict[str, Path]) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "safe.jsonl").write_text("")
    with pytest.raises(InputError, match=r"safe.jsonl: exists but .*manifest.json does not; use --overwrite"):
        generate_suites(fake_config(prompt_files), tmp_path / "out", data_dir=None)


def test_a_corrupt_line_names_file_and_line(tmp_path: Path, prompt_files: dict[str, Path]) -> None:
    generate_suites(fake_config(prompt_files), tmp_path / "out", data_dir=None)
    path = tmp_path / "out" / "harm.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:2]) + '{"id": "harm-2"}\n')
    with pytest.raises(InputError, match=r"harm.jsonl: line 3: not a generation record \(suite: Field required\)"):
        generate_suites(fake_config(prompt_files), tmp_path / "out", data_dir=None)


def test_a_suite_named_twice_is_refused(tmp_path: Path, prompt_files: dict[str, Path]) -> None:
    config = fake_config(prompt_files, suites=[{"path": str(prompt_files["harm"]), "category": "harmful"}] * 2)
    with pytest.raises(InputError, match="suite 'harm' is named twice"):
        generate_suites(config, tmp_path / "out", data_dir=None)


def test_builtin_suites_run_with_the_fake_backend(tmp_path: Path, data_dir: Path) -> None:
    config = GenerateConfig(backend="fake", base_model="m", suites=["I-MaliciousInstructions", "o-controversial"])
    manifest = generate_suites(config, tmp_path / "out", data_dir=data_dir)
    assert manifest["suites"]["i-malicious-instructions"]["duplicates_dropped"] == [
        "i-malicious-instructions-98", "i-malicious-instructions-99"]
    assert manifest["suites"]["i-malicious-instructions"]["source_sha256"] == {
        "i-malicious-instructions": "7a2bc751d49983800848050282aa2a84b3faa7044c3178228c49dd68df7d679f"}
    assert len(read_lines(tmp_path / "out" / "o-controversial.jsonl")) == 40


def test_presets_and_overrides() -> None:
    presets = load_presets()
    assert (presets["greedy"].num_beams, presets["greedy"].max_new_tokens, presets["greedy"].do_sample) == (1, 128, False)
    assert (presets["paper"].num_beams, presets["paper"].max_new_tokens, presets["paper"].do_sample) == (4, 128, False)
    decoding = GenerateConfig(preset="paper", decoding={"max_new_tokens": 64}).resolved_decoding()
    assert (decoding.num_beams, decoding.max_new_tokens) == (4, 64)
    with pytest.raises(ValueError, match="unknown preset 'beam'; known presets: greedy, paper"):
        GenerateConfig(preset="beam")


def test_settings_difference_names_the_first_change() -> None:
    old = {"model": {"name": "a"}, "decoding": {"num_beams": 1, "max_new_tokens": 9}}
    new = {"model": {"name": "b"}, "decoding": {"num_beams": 4, "max_new_tokens": 9}}
    assert settings_difference(old, new) == "decoding.num_beams: 1 -> 4, and 1 more"
    assert settings_difference(old, old) == ""
