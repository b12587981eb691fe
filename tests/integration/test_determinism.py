"""Repeatability on one machine: training and greedy answers on the tiny model give the same bytes twice, in float32
and in bfloat16, and the compute environment the manifests record never makes a finished run stale.

The second run is a fresh process (its own hash seed, allocator and thread pool), as a user's second run is.
What varies between machines is measured by ``benchmarks/determinism.py`` (docs/determinism.md).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from safemix.generate.config import GenerateConfig
from safemix.generate.runner import stale_reason
from safemix.train.config import TrainConfig
from safemix.train.recipe import train_status
from tests.conftest import REPO_ROOT
from tests.integration.train_cli import run_main, train_args

NATIVE_BF16 = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
DTYPES = [
    "float32",
    pytest.param("bfloat16", marks=pytest.mark.skipif(not NATIVE_BF16, reason="this CPU has no native bfloat16")),
]
PROMPTS = ["Repeat: the cat sat", "Tell me about the dog in the park", "Why do children play with a red ball?",
           "Name three things", "Say hello", "Where is the mat?"]
ANOTHER_MACHINE = {"cpu": "Some Other CPU @ 3.0GHz", "machine": "aarch64", "cpu_native_bfloat16": False,
                   "torch": "0.0.0", "torch_threads": 64, "device": "cpu", "gpu": None}


def write_prompts(path: Path) -> Path:
    """A small prompt file suite (category general)."""
    path.write_text("".join(json.dumps({"prompt": prompt}) + "\n" for prompt in PROMPTS), encoding="utf-8")
    return path


def train_command(tiny_model_dir: Path, tiny_mixture: tuple[Path, Path], run_dir: Path, dtype: str) -> list[str]:
    """``safemix train`` arguments for a 4-step run with two evaluations."""
    return train_args(tiny_model_dir, tiny_mixture, run_dir, "--max-steps", "4", "--eval-steps", "2", "--dtype", dtype)


def generate_command(tiny_model_dir: Path, run_dir: Path, prompts: Path, out: Path, dtype: str) -> list[str]:
    """``safemix generate`` arguments: greedy answers of 12 tokens from the run's adapter, in batches of 4."""
    return ["generate", "--base-model", str(tiny_model_dir), "--adapter", str(run_dir / "adapter"), "--suite",
            str(prompts), "--suite-category", "general", "--max-new-tokens", "12", "--batch-size", "4", "--dtype",
            dtype, "--out", str(out), "--quiet"]


def run_in_new_process(args: list[str]) -> None:
    """Run ``safemix ARGS`` in a fresh Python process; fail the test with its stderr if it fails."""
    result = subprocess.run([sys.executable, "-m", "safemix", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


def read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_second_run_gives_the_same_adapter_and_answers(
    dtype: str, tiny_model_dir: Path, tiny_mixture: tuple[Path, Path], tmp_path: Path
) -> None:
    prompts = write_prompts(tmp_path / "mine.jsonl")
    first, second = tmp_path / "first", tmp_path / "second"
    assert run_main(*train_command(tiny_model_dir, tiny_mixture, first, dtype)) == 0
    assert run_main(*generate_command(tiny_model_dir, first, prompts, first / "answers", dtype)) == 0
    run_in_new_process(train_command(tiny_model_dir, tiny_mixture, second, dtype))
    run_in_new_process(generate_command(tiny_model_dir, second, prompts, second / "answers", dtype))

    adapter_files = sorted(path.name for path in (first / "adapter").iterdir())
    assert "adapter_config.json" in adapter_files and "adapter_model.safetensors" in adapter_files
    for name in adapter_files:  # the config too: PEFT's set of target modules is written sorted
        assert (first / "adapter" / name).read_bytes() == (second / "adapter" / name).read_bytes(), name
    logs = read_json(first / "train_log.json"), read_json(second / "train_log.json")
    assert logs[0]["dtype"] == dtype and logs[0]["train_loss"] == logs[1]["train_loss"]
    assert logs[0]["val_loss"] == logs[1]["val_loss"]
    answers = (first / "answers" / "mine.jsonl").read_bytes()
    assert answers == (second / "answers" / "mine.jsonl").read_bytes()
    assert answers.count(b"\n") == len(PROMPTS) and b'"response": ""' not in answers

    for manifest in (read_json(first / "manifest.json"), read_json(first / "answers" / "manifest.json")):
        environment = manifest["environment"]
        assert environment["torch_threads"] == 1  # the integration fixtures run torch on one thread
        assert (environment["device"], environment["torch"]) == ("cpu", torch.__version__)
        assert environment["cpu_native_bfloat16"] is NATIVE_BF16


def test_a_run_copied_to_another_machine_is_not_redone(
    tiny_model_dir: Path, tiny_mixture: tuple[Path, Path], tmp_path: Path
) -> None:
    prompts = write_prompts(tmp_path / "mine.jsonl")
    run, answers = tmp_path / "run", tmp_path / "answers"
    assert run_main(*train_command(tiny_model_dir, tiny_mixture, run, "float32")) == 0
    assert run_main(*generate_command(tiny_model_dir, run, prompts, answers, "float32")) == 0
    for manifest_path in (run / "manifest.json", answers / "manifest.json"):
        manifest_path.write_text(json.dumps({**read_json(manifest_path), "environment": ANOTHER_MACHINE}))
    answer_bytes = (answers / "mine.jsonl").read_bytes()

    # What `safemix run` asks before each stage (pipeline.train_model, pipeline.generate_answers).
    train_config = TrainConfig.model_validate(yaml.safe_load((run / "train_config.yaml").read_text())["train"])
    assert train_status(train_config, run) == "finished"
    generate_config = GenerateConfig(base_model=str(tiny_model_dir), adapter=run / "adapter", batch_size=4,
                                     suites=[{"path": prompts, "category": "general"}],
                                     decoding={"max_new_tokens": 12}, dtype="float32")
    assert stale_reason(generate_config, answers, None) is None

    # Rerunning either command by hand finds the work done and keeps the other machine's record.
    assert run_main(*train_command(tiny_model_dir, tiny_mixture, run, "float32")) == 0
    assert run_main(*generate_command(tiny_model_dir, run, prompts, answers, "float32")) == 0
    assert (answers / "mine.jsonl").read_bytes() == answer_bytes
    assert read_json(run / "manifest.json")["environment"] == ANOTHER_MACHINE
    assert read_json(answers / "manifest.json")["environment"] == ANOTHER_MACHINE
