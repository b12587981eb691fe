"""``safemix run`` end to end on the tiny model: the run-directory contract, skipping, and resuming after kill -9."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from safemix.run_files import read_run_index
from safemix.scoring.judge import shipped_head
from tests.conftest import REPO_ROOT, run_cli

SUITES = {"starter-harmful": 60, "starter-safe": 60}
LABELS = ["base", "k0", "k16"]


def write_config(folder: Path, base_model: Path) -> Path:
    """A small sweep: K in {0, 16} on the starter data, two suites, two scorers."""
    config = {
        "name": "tiny-sweep",
        "seed": 0,
        "data": {"general": "starter-general", "safety": "starter-safety", "n_general": 24, "n_safety": [0, 16],
                 "val_size": 8},
        "train": {"base_model": str(base_model), "template": "chat", "batch_size": 8, "micro_batch_size": 4,
                  "max_steps": 4, "eval_steps": 2, "warmup_steps": 1},
        # Batches of 2 and 24 new tokens make generation long enough to be killed in the middle.
        "generate": {"suites": list(SUITES), "batch_size": 2, "decoding": {"max_new_tokens": 24}},
        "scoring": {"scorers": [{"name": "refusal-strmatch"}, {"name": "refusal-judge"}]},
    }
    path = folder / "tiny-sweep.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def finished_run(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """``(config, run_dir)`` of one uninterrupted run."""
    folder = tmp_path_factory.mktemp("pipeline")
    config = write_config(folder, tiny_model_dir)
    result = run_cli("run", str(config), "--out", str(folder / "run"), "--quiet")
    assert result.returncode == 0, result.stderr
    return config, folder / "run"


def test_a_run_writes_every_file_of_the_run_directory_contract(finished_run: tuple[Path, Path]) -> None:
    _, run_dir = finished_run
    index = read_run_index(run_dir)
    assert [entry.label for entry in index.models] == LABELS
    assert [entry.k for entry in index.models] == [None, 0, 16]
    assert index.scorers == ["refusal-strmatch", "refusal-judge"]
    assert (run_dir / "config.yaml").read_text().startswith(f"# resolved safemix config, hash {index.config_hash}")
    for name, rows in (("mixture-0.jsonl", 24), ("mixture-16.jsonl", 40), ("val.jsonl", 8)):
        assert (run_dir / "data" / name).read_text().count("\n") == rows
    for entry in index.models:
        if entry.train_dir is not None:
            train_dir = run_dir / entry.train_dir
            assert (train_dir / "adapter" / "adapter_model.safetensors").is_file()
            assert json.loads((train_dir / "adapter" / "safemix_adapter.json").read_text())["template"] == "chat"
            assert json.loads((train_dir / "train_log.json").read_text())["steps"] == 4
        for suite, n_prompts in SUITES.items():
            answers = (run_dir / entry.generations_dir / f"{suite}.jsonl").read_text().splitlines()
            assert len(answers) == n_prompts
            for scorer in index.scorers:
                scores = [json.loads(line) for line in (run_dir / entry.scores_dir / f"{scorer}.jsonl").read_text().splitlines()]
                assert len(scores) == sum(SUITES.values())
                assert {score["model"] for score in scores} == {entry.label}
    metrics = json.loads((run_dir / "metrics.json").read_text())
    cells = {(row["model"], row["suite"], row["scorer"]): row for row in metrics}
    assert len(cells) == len(LABELS) * len(SUITES) * 2
    assert cells[("k16", "starter-harmful", "refusal-judge")]["metric"] == "harmful_compliance_rate"
    assert cells[("base", "starter-safe", "refusal-strmatch")]["n_scored"] + \
        cells[("base", "starter-safe", "refusal-strmatch")]["n_unscored"] == 60
    summary = (run_dir / "summary.csv").read_text().splitlines()
    assert summary[0] == "model,k,seed,suite,category,scorer,metric,value,ci_low,ci_high,n,n_unscored"
    assert len(summary) == 1 + len(metrics)
    assert "data:image/png;base64," in (run_dir / "report.html").read_text()
    assert (run_dir / "report.md").read_text().startswith("# ")


def test_a_rerun_finds_every_stage_done(finished_run: tuple[Path, Path]) -> None:
    config, run_dir = finished_run
    result = run_cli("run", str(config), "--out", str(run_dir), "--dry-run")
    assert result.returncode == 0, result.stderr
    statuses = {" ".join(line.split()[:-1]): line.split()[-1] for line in result.stdout.splitlines()[1:]}
    assert statuses.pop("metrics all models") == "pending"  # metrics and report are always recomputed
    assert statuses.pop("report all models") == "pending"
    assert set(statuses.values()) == {"done"}, statuses
    assert len(statuses) == 1 + 2 + 3 + 3 * 2


def test_a_copied_and_renamed_run_directory_is_the_same_run(finished_run: tuple[Path, Path], tmp_path: Path) -> None:
    config, run_dir = finished_run
    moved = tmp_path / "elsewhere" / "renamed-run"
    shutil.copytree(run_dir, moved)
    result = run_cli("run", str(config), "--out", str(moved), "--dry-run")
    assert result.returncode == 0, result.stderr
    statuses = {" ".join(line.split()[:-1]): line.split()[-1] for line in result.stdout.splitlines()[1:]}
    statuses.pop("metrics all models"), statuses.pop("report all models")
    assert {task for task, status in statuses.items() if status != "done"} == set()
    # and the run itself rewrites none of the adapters, answers or judgements (the answers' manifests may record
    # the adapters' new location)
    kept = {path: path.stat().st_mtime_ns for folder in ("train", "generations", "scores")
            for path in (moved / folder).rglob("*")
            if path.is_file() and not (folder == "generations" and path.name == "manifest.json")}
    result = run_cli("run", str(config), "--out", str(moved), "--quiet")
    assert result.returncode == 0, result.stderr
    assert {path: path.stat().st_mtime_ns for path in kept} == kept


def test_changing_one_scorer_rescores_without_regenerating(finished_run: tuple[Path, Path]) -> None:
    config, run_dir = finished_run
    head = shipped_head()
    result = run_cli("run", str(config), "--out", str(run_dir), "--dry-run",
                     "--set", f"scoring.scorers=[{{name: refusal-strmatch}}, {{name: refusal-judge, settings: {{head: {head}}}}}]")
    assert result.returncode == 0, result.stderr
    redo = [tuple(line.split()[:3]) for line in result.stdout.splitlines()[1:] if line.split()[-1] != "done"]
    assert sorted(redo) == sorted([("score", label, "refusal-judge") for label in LABELS]
                                  + [("metrics", "all", "models"), ("report", "all", "models")])


def test_a_run_killed_mid_generation_resumes_with_every_answer_exactly_once(
    finished_run: tuple[Path, Path], tmp_path: Path
) -> None:
    config, whole = finished_run
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "safemix", "run", str(config), "--out", str(out), "--quiet"]
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    partial = out / "generations" / "k0" / "starter-harmful.jsonl"
    deadline = time.monotonic() + 300
    while not (partial.exists() and partial.read_text().count("\n") >= 4) and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    written = partial.read_text().count("\n")
    assert 4 <= written < SUITES["starter-harmful"], "the run finished before it could be killed; make it longer"
    assert not (out / "metrics.json").exists()

    resumed = run_cli("run", str(config), "--out", str(out), "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    for label in LABELS:
        for suite, n_prompts in SUITES.items():
            lines = (out / "generations" / label / f"{suite}.jsonl").read_text().splitlines()
            ids = [json.loads(line)["id"] for line in lines]
            assert sorted(ids) == sorted(set(ids)) and len(ids) == n_prompts
            assert lines == (whole / "generations" / label / f"{suite}.jsonl").read_text().splitlines()
    for name in ("metrics.csv", "summary.csv"):
        assert (out / name).read_bytes() == (whole / name).read_bytes()


def test_a_format_sweep_trains_one_adapter_per_safety_format(tiny_model_dir: Path, tmp_path: Path) -> None:
    starter = REPO_ROOT / "src" / "safemix" / "starter" / "safety.jsonl"
    questions = tmp_path / "safety-questions.jsonl"
    with questions.open("w", encoding="utf-8") as handle:
        for line in starter.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            record["instruction"] = "Could you tell me: " + record["instruction"].rstrip(".?!") + "?"
            handle.write(json.dumps(record) + "\n")
    config = {
        "name": "format-sweep",
        "data": {"general": "starter-general", "safety": "starter-safety", "safety_questions": str(questions),
                 "formats": ["instruction", "question", "mixed"], "n_general": 16, "n_safety": [8], "val_size": 8},
        "train": {"base_model": str(tiny_model_dir), "template": "chat", "batch_size": 8, "micro_batch_size": 8,
                  "max_steps": 2, "eval_steps": 2, "warmup_steps": 1},
        "generate": {"suites": ["starter-harmful"], "decoding": {"max_new_tokens": 4}},
        "scoring": {"scorers": [{"name": "refusal-strmatch"}]},
    }
    path = tmp_path / "formats.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    result = run_cli("run", str(path), "--out", str(tmp_path / "run"), "--quiet")
    assert result.returncode == 0, result.stderr

    run_dir = tmp_path / "run"
    index = read_run_index(run_dir)
    assert [(entry.label, entry.format) for entry in index.models] == [
        ("base", None), ("instruction/k8", "instruction"), ("question/k8", "question"), ("mixed/k8", "mixed")]
    safety_lines = {}
    for safety_format in ("instruction", "question", "mixed"):
        rows = [json.loads(line) for line in (run_dir / "data" / safety_format / "mixture-8.jsonl").read_text().splitlines()]
        safety_lines[safety_format] = sorted(row["instruction"] for row in rows if row["category"] == "safety")
        assert (run_dir / "train" / f"{safety_format}__k8" / "adapter" / "adapter_model.safetensors").is_file()
    asked = [sum(text.startswith("Could you tell me: ") for text in lines) for lines in safety_lines.values()]
    assert asked == [0, 8, 4]
    assert "format" in (run_dir / "report.md").read_text().lower()


def test_seeds_added_to_a_finished_run_train_only_the_new_seeds_each_on_its_own_mixture(
        tiny_model_dir: Path, tmp_path: Path) -> None:
    config = {
        "name": "seed-sweep",
        "data": {"general": "starter-general", "safety": "starter-safety", "n_general": 16, "n_safety": [8],
                 "val_size": 8},
        "train": {"base_model": str(tiny_model_dir), "template": "chat", "batch_size": 8, "micro_batch_size": 8,
                  "max_steps": 2, "eval_steps": 2, "warmup_steps": 1},
        "generate": {"suites": ["starter-harmful"], "decoding": {"max_new_tokens": 4}},
        "scoring": {"scorers": [{"name": "refusal-strmatch"}]},
    }
    path, run_dir = tmp_path / "seeds.yaml", tmp_path / "run"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    assert run_cli("run", str(path), "--out", str(run_dir), "--quiet").returncode == 0
    path.write_text(yaml.safe_dump({**config, "sweep": {"seeds": [0, 1]}}), encoding="utf-8")
    plan = run_cli("run", str(path), "--out", str(run_dir), "--dry-run")
    assert re.search(r"train\s+k8\s+done", plan.stdout) and re.search(r"train\s+seed1/k8\s+pending", plan.stdout)
    result = run_cli("run", str(path), "--out", str(run_dir), "--quiet")
    assert result.returncode == 0, result.stderr

    index = read_run_index(run_dir)
    # the experiment's own seed keeps the plain label and directories, so its adapter was reused
    assert [(entry.label, entry.seed) for entry in index.models] == [("base", None), ("k8", 0), ("seed1/k8", 1)]
    assert len({entry.model for entry in index.models}) == 1  # one name: the report aggregates the seeds
    mixtures = [(run_dir / "data" / part / "mixture-8.jsonl").read_text() for part in ("", "seed-1")]
    assert mixtures[0] != mixtures[1]
    manifests = [json.loads((run_dir / "train" / slug / "manifest.json").read_text()) for slug in ("k8", "seed1__k8")]
    assert [manifest["settings"]["seed"] for manifest in manifests] == [0, 1]
    with (run_dir / "summary.csv").open(encoding="utf-8") as handle:
        assert {row["seed"] for row in csv.DictReader(handle)} == {"", "0", "1"}
