"""`safemix train` / `safemix export` as a user runs them: resume after kill -9, bad input, accelerate launch."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from safemix.models import dtypes as model_dtypes
from tests.conftest import REPO_ROOT
from tests.integration.train_cli import SHORT_RUN, run_main, train_args


def read_log(out_dir: Path) -> dict:
    return json.loads((out_dir / "train_log.json").read_text(encoding="utf-8"))


def test_resume_after_kill_gives_the_uninterrupted_adapter(
    tiny_model_dir: Path, tiny_mixture: tuple[Path, Path], tmp_path: Path
) -> None:
    steps = ("--max-steps", "30", "--eval-steps", "4")
    assert run_main(*train_args(tiny_model_dir, tiny_mixture, tmp_path / "whole", *steps)) == 0

    killed_dir = tmp_path / "killed"
    process = subprocess.Popen(
        [sys.executable, "-m", "safemix", *train_args(tiny_model_dir, tiny_mixture, killed_dir, *steps)],
        cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while not (killed_dir / "checkpoints" / "step-4" / "trainer_state.json").exists():
        assert process.poll() is None and time.monotonic() < deadline, "the run ended before its first checkpoint"
        time.sleep(0.005)
    os.kill(process.pid, signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL
    assert not (killed_dir / "train_log.json").exists()

    assert run_main(*train_args(tiny_model_dir, tiny_mixture, killed_dir, *steps)) == 0
    log, reference = read_log(killed_dir), read_log(tmp_path / "whole")
    assert log["resumed_at_steps"] and log["resumed_at_steps"][0] >= 4
    assert [r["step"] for r in log["train_loss"]] == list(range(1, 31))
    for got, want in zip(log["train_loss"], reference["train_loss"], strict=True):
        assert got["loss"] == pytest.approx(want["loss"], abs=1e-6)
    assert log["best_step"] == reference["best_step"]
    adapter = load_file(killed_dir / "adapter" / "adapter_model.safetensors")
    expected = load_file(tmp_path / "whole" / "adapter" / "adapter_model.safetensors")
    assert adapter.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(adapter[name], expected[name], rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("missing-model", "no-such-model: model not found: not a directory, a Hugging Face id or a built-in name"),
        ("not-a-mixture", "line 1: not a mixture record: id: Field required"),
        ("empty-val", "val.jsonl: file is empty"),
        ("fp16-on-cpu", "--dtype float16 needs a CUDA device (running on cpu)"),
        ("4bit-without-bitsandbytes", "--load-in-4bit on cpu: bitsandbytes is not installed; install safemix[gpu]"),
        ("bad-batch", "train.batch_size 10 must be a multiple of train.micro_batch_size 4 x 1 process(es)"),
    ],
)
def test_bad_input_exits_2_with_one_line(
    case: str, expected: str, tiny_model_dir: Path, tiny_mixture: tuple[Path, Path], tmp_path: Path,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    train_file, val_file = tiny_mixture
    base, extra = str(tiny_model_dir), []
    if case == "missing-model":
        base = "no-such-model"
    elif case == "not-a-mixture":
        train_file = tmp_path / "alpaca.jsonl"
        train_file.write_text(json.dumps({"instruction": "Hi", "input": "", "output": "Hello"}) + "\n")
    elif case == "empty-val":
        val_file = tmp_path / "val.jsonl"
        val_file.write_text("")
    elif case == "fp16-on-cpu":
        extra = ["--dtype", "float16"]
    elif case == "4bit-without-bitsandbytes":
        monkeypatch.setattr(model_dtypes, "bitsandbytes_cpu_problem", lambda bits: "bitsandbytes is not installed")
        extra = ["--load-in-4bit"]
    elif case == "bad-batch":
        extra = ["--batch-size", "10"]
    code = run_main("train", "--base-model", base, "--train", str(train_file), "--val", str(val_file),
                       "--out", str(tmp_path / "out"), "--max-steps", "2", *SHORT_RUN, *extra)
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(lines) == 1 and lines[0].startswith("safemix: error: ") and expected in lines[0], lines


def test_adapter_trained_on_another_base_is_refused(
    tiny_model_dir: Path, tiny_mixture: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from safemix.models import build_tiny_model

    assert run_main(*train_args(tiny_model_dir, tiny_mixture, tmp_path / "run", "--max-steps", "1", "--eval-steps", "1")) == 0
    other_base = build_tiny_model(tmp_path / "other", seed=1)  # same architecture, other weights
    capsys.readouterr()
    code = run_main("export", "--base-model", str(other_base), "--adapter", str(tmp_path / "run"), "--out", str(tmp_path / "m"))
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1
    assert f"adapter was trained on base model '{tiny_model_dir}', not on '{other_base}'" in lines[0]


def test_two_processes_under_accelerate_launch_write_one_adapter(
    tiny_model_dir: Path, tiny_mixture: tuple[Path, Path], tmp_path: Path
) -> None:
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent))
    assert accelerate is not None
    out = tmp_path / "ddp"
    # Without CUDA, --multi_gpu only selects torchrun's launcher; the processes join over gloo on the CPU.
    command = [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "safemix",
               *train_args(tiny_model_dir, tiny_mixture, out, "--max-steps", "6", "--eval-steps", "3")]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    log = read_log(out)
    assert log["n_processes"] == 2
    assert sorted(p.name for p in out.iterdir()) == ["adapter", "loss.png", "manifest.json", "train_config.yaml", "train_log.json"]
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    assert log["val_loss"][-1]["loss"] < log["val_loss"][0]["loss"]
    assert log["train_loss"][-1]["loss"] < log["train_loss"][0]["loss"]


@pytest.mark.skipif(not (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()),
                    reason="this CPU has no native bfloat16")
def test_bfloat16_autocast_on_a_cpu_trains_and_records_the_dtype(
    tiny_model_dir: Path, tiny_mixture: tuple[Path, Path], tmp_path: Path
) -> None:
    assert run_main(*train_args(tiny_model_dir, tiny_mixture, tmp_path / "bf16", "--max-steps", "4", "--dtype", "auto")) == 0
    log = read_log(tmp_path / "bf16")
    assert log["dtype"] == "bfloat16"
    assert log["val_loss"][-1]["loss"] < log["val_loss"][0]["loss"]
    weights = load_file(tmp_path / "bf16" / "adapter" / "adapter_model.safetensors")
    assert {tensor.dtype for tensor in weights.values()} == {torch.float32}  # LoRA weights stay float32
