"""`safemix train --sharded-loading`: two processes over gloo on the CPU, each holding half of the base model
(FSDP2), train (with and without gradient checkpointing; in bfloat16 where the CPU has it), checkpoint, resume after kill -9 and write one PEFT
adapter."""

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

from safemix.models.dtypes import native_bfloat16
from tests.conftest import REPO_ROOT
from tests.integration.train_cli import run_main, train_args

pytestmark = pytest.mark.slow

STEPS = ("--max-steps", "6", "--eval-steps", "3")


def launch(tiny_model_dir: Path, tiny_mixture: tuple[Path, Path], out: Path, *extra: str) -> subprocess.Popen:
    """``accelerate launch`` of a 2-process training run (CPU: torchrun's launcher, gloo)."""
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent))
    assert accelerate is not None
    command = [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "safemix",
               *train_args(tiny_model_dir, tiny_mixture, out, *STEPS, *extra)]
    return subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen) -> None:
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr[-3000:]


def kill_every_process_of(out: Path) -> None:
    """SIGKILL every process whose command line names ``out``: the launcher and the workers (torchrun starts
    these in sessions of their own, so killing the launcher's group leaves them running)."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if str(out).encode() in cmdline.read_bytes().split(b"\0"):
                os.kill(int(cmdline.parent.name), signal.SIGKILL)
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue  # ended meanwhile


def read_log(out_dir: Path) -> dict:
    return json.loads((out_dir / "train_log.json").read_text(encoding="utf-8"))


def test_sharded_loading_trains_resumes_after_kill_and_writes_the_adapter(
    tiny_model_dir: Path, tiny_mixture: tuple[Path, Path], tmp_path: Path
) -> None:
    finish(launch(tiny_model_dir, tiny_mixture, tmp_path / "ddp"))
    finish(launch(tiny_model_dir, tiny_mixture, tmp_path / "whole", "--sharded-loading"))
    sharded, ddp = read_log(tmp_path / "whole"), read_log(tmp_path / "ddp")
    assert sharded["n_processes"] == 2
    # Step 0 is the base model (LoRA B is zero): the shards hold exactly the base model's weights.
    assert sharded["val_loss"][0]["loss"] == pytest.approx(ddp["val_loss"][0]["loss"], abs=1e-5)
    assert sharded["val_loss"][-1]["loss"] < sharded["val_loss"][0]["loss"]
    adapter = load_file(tmp_path / "whole" / "adapter" / "adapter_model.safetensors")
    reference = load_file(tmp_path / "ddp" / "adapter" / "adapter_model.safetensors")
    assert {name: value.shape for name, value in adapter.items()} == {name: value.shape for name, value in reference.items()}
    # Recomputing the activations in the backward pass changes nothing.
    finish(launch(tiny_model_dir, tiny_mixture, tmp_path / "recomputed", "--sharded-loading", "--gradient-checkpointing"))
    for got, want in zip(read_log(tmp_path / "recomputed")["train_loss"], sharded["train_loss"], strict=True):
        assert got["loss"] == pytest.approx(want["loss"], abs=1e-5)

    killed = tmp_path / "killed"
    process = launch(tiny_model_dir, tiny_mixture, killed, "--sharded-loading")
    deadline = time.monotonic() + 240
    while not (killed / "checkpoints" / "step-3" / "trainer_state.json").exists():
        assert process.poll() is None and time.monotonic() < deadline, "the run ended before its first checkpoint"
        time.sleep(0.01)
    kill_every_process_of(killed)
    process.wait()
    assert not (killed / "train_log.json").exists()

    finish(launch(tiny_model_dir, tiny_mixture, killed, "--sharded-loading"))
    resumed = read_log(killed)
    assert resumed["resumed_at_steps"] and resumed["resumed_at_steps"][0] >= 3
    for got, want in zip(resumed["train_loss"], sharded["train_loss"], strict=True):
        assert got["loss"] == pytest.approx(want["loss"], abs=1e-6)
    adapter_after_kill = load_file(killed / "adapter" / "adapter_model.safetensors")
    for name, value in adapter.items():
        torch.testing.assert_close(adapter_after_kill[name], value, rtol=0, atol=1e-6)


@pytest.mark.skipif(not native_bfloat16("cpu"), reason="this CPU has no native bfloat16 (AVX512-BF16 or AMX)")
def test_sharded_loading_trains_in_bfloat16(tiny_model_dir: Path, tiny_mixture: tuple[Path, Path], tmp_path: Path) -> None:
    finish(launch(tiny_model_dir, tiny_mixture, tmp_path / "bf16", "--sharded-loading", "--dtype", "bfloat16"))
    log = read_log(tmp_path / "bf16")
    assert log["val_loss"][-1]["loss"] < log["val_loss"][0]["loss"]
    adapter = load_file(tmp_path / "bf16" / "adapter" / "adapter_model.safetensors")
    assert {value.dtype for value in adapter.values()} == {torch.float32}  # the LoRA weights train in float32


def test_sharded_loading_in_one_process_is_refused(
    tiny_model_dir: Path, tiny_mixture: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_main(*train_args(tiny_model_dir, tiny_mixture, tmp_path / "one", "--sharded-loading")) == 2
    assert "train.sharded_loading needs 2 or more processes" in capsys.readouterr().err
    assert not (tmp_path / "one").exists()
