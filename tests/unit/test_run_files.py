"""safemix.run_files: every manifest model reads back what it wrote, old files still read, the layout, the
mixtures' config hash, and the report's sentence about the mixtures of a run that sweeps formats."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from safemix.errors import InputError
from safemix.files import write_json_atomic
from safemix.report.content import overview_section
from safemix.report.runs import load_runs
from safemix.run_files import (
    GenerationManifest,
    GenerationSuite,
    Manifest,
    ModelEntry,
    RunLayout,
    ScoreCounts,
    ScoreManifest,
    TrainManifest,
    WinrateCounts,
    WinrateEstimate,
    WinrateManifest,
    mixture_config_hash,
    read_manifest,
    write_manifest,
)
from tests.fake_runs import build_fake_run, mixture_manifest

MANIFESTS: list[Manifest] = [
    mixture_manifest(300, [0, 50], "question"),
    TrainManifest(safemix_version="1", run_hash="abc", settings={"lr": 3e-4}, inputs={"train_file": {"sha256": "f"}},
                  outputs={"adapter": "adapter/", "log": "train_log.json"}, versions={"torch": "2"}, environment=None),
    GenerationManifest(safemix_version="1", settings={"model": {"name": "tiny"}}, preset="greedy", batch_size=4,
                       suites={"xstest": GenerationSuite(file="xstest.jsonl", source="xstest", source_sha256={"x": "1"},
                                                         prompts_sha256="p", n_prompts=2, categories={"safe": 2},
                                                         complete=True, sha256="s")},
                       versions={"python": "3"}, environment={"cpu": "x"}),
    ScoreManifest(scorer="refusal-strmatch", version="1", settings={}, fingerprint={}, runtime_settings={},
                  inputs={"xstest.jsonl": "s"}, model="k100", output="refusal-strmatch.jsonl",
                  counts=ScoreCounts(items=2, scored=1, unscored=1), versions={"python": "3"}),
    WinrateManifest(safemix_version="1", identity={"seed": 0}, files={"model_a": "a", "reference": "b"}, judge_runtime={},
                    n_a_shown_first=1, counts=WinrateCounts(items=2, wins=1, ties=0, losses=1, unscored=0),
                    win_rate=WinrateEstimate(estimate=0.5, ci_low=0.1, ci_high=0.9, interval="wilson"), output="a.jsonl",
                    versions={"python": "3"}),
]


@pytest.mark.parametrize("manifest", MANIFESTS, ids=lambda manifest: type(manifest).__name__)
def test_a_manifest_reads_back_equal_and_writes_the_same_bytes_as_its_json(tmp_path: Path, manifest: Manifest) -> None:
    write_manifest(tmp_path / "manifest.json", manifest)
    assert read_manifest(tmp_path / "manifest.json", type(manifest)) == manifest
    write_json_atomic(tmp_path / "as-dict.json", manifest.to_json())
    assert (tmp_path / "manifest.json").read_bytes() == (tmp_path / "as-dict.json").read_bytes()


def test_an_old_mixture_manifest_without_format_reads_as_instruction_and_keeps_unknown_keys(tmp_path: Path) -> None:
    old = mixture_manifest(300, [0, 50]).to_json()
    del old["format"]
    old["retired_key"] = [1, 2]
    write_json_atomic(tmp_path / "manifest.json", old)
    manifest = read_manifest(tmp_path / "manifest.json", type(mixture_manifest(1, [0])))
    assert manifest.format == "instruction" and manifest.settings.n_general == 300
    assert manifest.to_json()["retired_key"] == [1, 2]


def test_an_old_generation_manifest_without_environment_reads(tmp_path: Path) -> None:
    old = MANIFESTS[2].to_json()
    del old["environment"], old["preset"], old["batch_size"]
    write_json_atomic(tmp_path / "manifest.json", old)
    manifest = read_manifest(tmp_path / "manifest.json", GenerationManifest)
    assert manifest.complete and manifest.environment is None and manifest.model_name() == "tiny"


def test_a_manifest_of_another_kind_is_an_input_error_naming_the_key(tmp_path: Path) -> None:
    write_manifest(tmp_path / "manifest.json", MANIFESTS[1])
    with pytest.raises(InputError, match=r"manifest.json: suites: Field required"):
        read_manifest(tmp_path / "manifest.json", GenerationManifest)


def test_the_layout_names_every_stage_directory(tmp_path: Path) -> None:
    entry = ModelEntry(label="question/k5", model="m", slug="question__k5", base_model="m", template="alpaca",
                       preset="greedy", k=5, train_dir="train/question__k5", generations_dir="generations/question__k5",
                       scores_dir="scores/question__k5")
    layout = RunLayout(tmp_path)
    assert layout.mixtures_dir("question", 1) == tmp_path / "data" / "question" / "seed-1"
    assert layout.mixtures_dir() == tmp_path / "data"
    assert layout.adapter(entry) == tmp_path / "train" / "question__k5" / "adapter"
    assert layout.score_file(entry, "refusal-judge") == tmp_path / "scores" / "question__k5" / "refusal-judge.jsonl"
    assert layout.winrate_file(entry, "i-alpaca") == tmp_path / "winrate" / "question__k5" / "i-alpaca.jsonl"
    assert layout.capability_dir(entry) == tmp_path / "capability" / "question__k5"


def test_the_mixture_config_hash_is_the_data_section_and_seed_whoever_builds() -> None:
    data = {"n_general": 300, "n_safety": [0, 100], "formats": ["instruction"]}
    expected = hashlib.sha256(json.dumps({"data": data, "seed": 1}, sort_keys=True, ensure_ascii=False,
                                         separators=(",", ":")).encode()).hexdigest()[:12]
    assert mixture_config_hash(data, 1) == expected  # the value finished runs recorded: they stay done
    assert mixture_config_hash(data, 2) != expected
    assert mixture_config_hash({**data, "n_general": 301}, 1) != expected


def test_the_pipeline_records_the_mixture_config_hash() -> None:
    from safemix.config import validate_config
    from safemix.pipeline import _data_hash

    experiment = validate_config({"name": "t", "seed": 3, "data": {"general": "alpaca-cleaned", "safety": "paper-safety", "n_general": 10, "n_safety": [0, 5]}}, "test")
    assert _data_hash(experiment, 3) == mixture_config_hash(experiment.data.model_dump(mode="json"), 3)


def test_the_report_names_the_mixtures_of_a_run_that_sweeps_formats(tmp_path: Path) -> None:
    run = build_fake_run(tmp_path / "run", suites={"xstest": {"harmful": 2, "safe": 2}}, ks=(0, 5),
                         scorers=("refusal-strmatch",), formats=("instruction", "question"), n_general=120)
    assert not (run / "data" / "manifest.json").exists()
    text = " ".join(overview_section(load_runs([run])).paragraphs)
    assert "Each adapter was trained on 120 general instruction examples plus K safety examples." in text
    assert "The safety examples were in one of 2 formats: instruction, question." in text
