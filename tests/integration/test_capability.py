"""Capability benchmarks end to end through lm-eval on the tiny model, offline: local tasks from the data dir, a
LoRA adapter applied with ``peft=``, per-sample logs, resume, and the pipeline stage with its metric rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from safemix.capability.config import CapabilityConfig
from safemix.capability.run import evaluate_capability
from safemix.capability.stage import run_capability_stage
from safemix.report.capability import capability_section
from safemix.run_files import ModelEntry, RunIndex, write_run_index
from tests.integration.conftest import build_tiny_adapter

pytest.importorskip("lm_eval")

LIMIT = 8


@pytest.fixture(scope="module")
def adapter_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_adapter(tiny_model_dir, tmp_path_factory.mktemp("train") / "adapter", template="alpaca")


@pytest.fixture
def config(tmp_path: Path) -> CapabilityConfig:
    return CapabilityConfig(tasks=["piqa", "winogrande"], limit=LIMIT, batch_size=4, source="local",
                            cache_dir=tmp_path / "lm-eval-cache")


def read_samples(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_local_tasks_run_through_lm_eval_with_an_adapter(tiny_model_dir: Path, adapter_dir: Path, data_dir: Path,
                                                         config: CapabilityConfig, tmp_path: Path) -> None:
    tuned = evaluate_capability(config, str(tiny_model_dir), adapter_dir, tmp_path / "tuned", data_dir)
    base = evaluate_capability(config, str(tiny_model_dir), None, tmp_path / "base", data_dir)

    assert [(row["task"], row["metric"], row["n"]) for row in tuned["results"]] == [
        ("piqa", "acc", LIMIT), ("piqa", "acc_norm", LIMIT), ("winogrande", "acc", LIMIT)]
    assert tuned["model"]["adapter"]["path"] == str(adapter_dir.resolve()) and base["model"]["adapter"] is None
    assert json.loads((tmp_path / "tuned" / "results.json").read_text()) == tuned
    samples = read_samples(tmp_path / "tuned" / "samples_piqa.jsonl")
    assert [sample["doc_id"] for sample in samples] == list(range(LIMIT))
    # acc is the share of items whose gold choice has the highest log-likelihood, as the samples record it
    picked = [max(range(2), key=lambda i: s["filtered_resps"][i][0]) for s in samples]
    correct = sum(choice == s["target"] for choice, s in zip(picked, samples, strict=True))
    assert tuned["results"][0]["value"] == correct / LIMIT and tuned["results"][0]["n_correct"] == correct
    # the adapter was applied: every log-likelihood differs from the base model's
    base_samples = read_samples(tmp_path / "base" / "samples_piqa.jsonl")
    assert all(t["filtered_resps"] != b["filtered_resps"] for t, b in zip(samples, base_samples, strict=True))
    assert samples[0]["arguments"][0][0].endswith("\nAnswer:")


def test_finished_tasks_are_not_rerun(tiny_model_dir: Path, data_dir: Path, config: CapabilityConfig, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import safemix.capability.run as run

    out = tmp_path / "out"
    first = evaluate_capability(config, str(tiny_model_dir), None, out, data_dir)
    first_bytes = (out / "samples_winogrande.jsonl").read_bytes()

    def no_model(*args: object) -> None:
        raise AssertionError("the model was loaded although every task was done")

    monkeypatch.setattr(run, "load_lm", no_model)
    assert evaluate_capability(config, str(tiny_model_dir), None, out, data_dir) == first
    monkeypatch.undo()

    (out / "samples_piqa.jsonl").unlink()  # as if killed before piqa was written: only piqa runs again
    again = evaluate_capability(config, str(tiny_model_dir), None, out, data_dir)
    assert again["results"] == first["results"] and (out / "samples_winogrande.jsonl").read_bytes() == first_bytes
    assert again["tasks"]["winogrande"]["wall_s"] == first["tasks"]["winogrande"]["wall_s"]

    fewer = config.model_copy(update={"limit": 4})  # other settings: rerun, from lm-eval's response cache
    rerun = evaluate_capability(fewer, str(tiny_model_dir), None, out, data_dir)
    assert [row["n"] for row in rerun["results"]] == [4, 4, 4]


def test_the_stage_evaluates_every_model_of_a_run(tiny_model_dir: Path, adapter_dir: Path, data_dir: Path,
                                                  tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    (run_dir / "train" / "k100").mkdir(parents=True)
    (run_dir / "train" / "k100" / "adapter").symlink_to(adapter_dir, target_is_directory=True)
    entries = [ModelEntry(label=label, model="tiny", slug=label, base_model=str(tiny_model_dir), template="alpaca",
                          preset="greedy", k=k, train_dir=train_dir, generations_dir=f"generations/{label}",
                          scores_dir=f"scores/{label}")
               for label, k, train_dir in (("base", None, None), ("k100", 100, "train/k100"))]
    write_run_index(run_dir, RunIndex(name="cap", config_hash="abc", suites=[], scorers=[], models=entries))
    config = CapabilityConfig(tasks=["openbookqa"], limit=4, source="local", cache_dir=tmp_path / "cache")

    rows = run_capability_stage(config, run_dir, data_dir)

    assert [(r.model, r.suite, r.category, r.scorer, r.metric, r.n_scored, r.n_unscored) for r in rows] == [
        (label, "openbookqa", "capability", "lm-eval", metric, 4, 0) for label in ("base", "k100")
        for metric in ("acc", "acc_norm")]
    assert all(r.ci_low <= r.estimate <= r.ci_high for r in rows)
    assert len(json.loads((run_dir / "capability" / "metrics.json").read_text())) == 4
    assert (run_dir / "capability" / "k100" / "samples_openbookqa.jsonl").is_file()
    section = capability_section([run_dir])
    assert section is not None and section.figures
