"""Sharded loading on two GPUs over NCCL: no GPU ever holds the whole base model.

A random Llama of about 0.1B parameters loads with ``load_sharded_lora_model`` on two GPUs in bfloat16; each GPU's
allocated memory once loaded stays under 0.6x the whole model's bytes (it fails if every rank gets the whole model),
and two training steps lower the loss. ``safemix train --sharded-loading`` then trains the tiny model on both GPUs.
Skipped without two CUDA devices.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from safemix.models import build_random_llama
from safemix.models.sharded import load_sharded_lora_model
from safemix.models.tiny import TINY_CORPUS
from safemix.train.global_steps import global_mean_steps
from tests.integration.test_sharded_loading import lora_config

torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA devices")]

WORLD_SIZE = 2
HOLD_AT_MOST = 0.6  # of the whole model's bytes, per GPU


def gpu_worker(rank: int, model_dir: Path, port: int, results: Any) -> None:
    import torch.distributed as dist

    torch.cuda.set_device(rank)
    dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD_SIZE)
    try:
        model = load_sharded_lora_model(model_dir, lora_config(), seed=0, device_type="cuda", compute_dtype="bfloat16")
        loaded_bytes = torch.cuda.memory_allocated()
        # the built tokenizer's vocabulary is smaller than the size asked for: draw ids the embedding holds
        input_ids = torch.randint(3, model.config.vocab_size, (2, 64), generator=torch.Generator().manual_seed(rank)).cuda()
        batch = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": input_ids}
        losses = global_mean_steps(model, batch, total_tokens=WORLD_SIZE * 2 * 63, world_size=WORLD_SIZE, steps=2,
                                   learning_rate=1e-2)
        results.put((rank, loaded_bytes, losses))
    finally:
        dist.destroy_process_group()


def test_each_gpu_holds_about_half_the_model(tmp_path: Path) -> None:
    import torch.multiprocessing as mp

    model_dir = tmp_path / "model"
    build_random_llama(model_dir, TINY_CORPUS, vocab_size=1024, hidden_size=1024, num_layers=12, seed=0)
    # the weights file is float32; loaded in bfloat16 the whole model takes half its bytes
    whole_bytes = (model_dir / "model.safetensors").stat().st_size / 2
    results = mp.get_context("spawn").SimpleQueue()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.start_processes(gpu_worker, args=(model_dir, port, results), nprocs=WORLD_SIZE, start_method="spawn")
    for _ in range(WORLD_SIZE):
        rank, loaded_bytes, losses = results.get()
        assert loaded_bytes <= HOLD_AT_MOST * whole_bytes, f"rank {rank} holds {loaded_bytes / whole_bytes:.2f} of the model"
        assert losses[1] < losses[0]


def test_safemix_train_sharded_on_two_gpus(tiny_model_dir: Path, tiny_mixture: tuple[Path, Path], tmp_path: Path) -> None:
    train_file, val_file = tiny_mixture
    out = tmp_path / "run"
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "bf16", "--dynamo_backend", "no", "-m", "safemix", "train",
               "--base-model", str(tiny_model_dir), "--train", str(train_file), "--val", str(val_file), "--out", str(out),
               "--batch-size", "8", "--micro-batch-size", "4", "--max-steps", "6", "--eval-steps", "3",
               "--warmup-steps", "0", "--learning-rate", "1e-2", "--dtype", "bfloat16", "--sharded-loading", "--quiet"]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert finished.returncode == 0, finished.stderr[-3000:]
    log = json.loads((out / "train_log.json").read_text(encoding="utf-8"))
    assert log["train_loss"][-1]["loss"] < log["train_loss"][0]["loss"]
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
