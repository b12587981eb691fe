"""Sharded loading (meta device + FSDP2) on the tiny model, in 2 gloo processes on the CPU: each process holds
half of every weight, in units of one frozen weight matrix, and two training steps give the single process's
losses, with separate or tied embeddings, and close to them when storing and computing in bfloat16."""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.distributed.fsdp import FSDPModule

from safemix.models.loading import load_base_model
from safemix.models.sharded import SafetensorsRows, checkpoint_name, load_sharded_lora_model, seeded_lora_model
from safemix.train.global_steps import global_mean_steps

SEED = 0
STEPS = 2
WORLD_SIZE = 2


def lora_config() -> Any:
    from peft import LoraConfig

    return LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")


def whole_batch() -> dict[str, torch.Tensor]:
    input_ids = torch.randint(3, 600, (4, 24), generator=torch.Generator().manual_seed(SEED))
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": input_ids}


def train_losses(model: Any, batch: dict[str, torch.Tensor], world_size: int) -> list[float]:
    """Losses of ``STEPS`` AdamW steps, each the mean over every process's label tokens."""
    total_tokens = 4 * 23  # every token but the last of each sequence predicts the next
    return global_mean_steps(model, batch, total_tokens=total_tokens, world_size=world_size, steps=STEPS,
                             learning_rate=1e-2)


def sharded_worker(rank: int, model_dir: Path, port: int, compute_dtype: str, results: Any) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD_SIZE)
    try:
        model = load_sharded_lora_model(model_dir, lora_config(), seed=SEED, compute_dtype=compute_dtype)
        held = {name: (tuple(param.to_local().shape), param.dtype) for name, param in model.named_parameters()}
        units = {name for name, module in model.named_modules() if isinstance(module, FSDPModule)}
        batch = {key: rows[rank::WORLD_SIZE] for key, rows in whole_batch().items()}
        losses = train_losses(model, batch, WORLD_SIZE)
        computed_in = model(input_ids=batch["input_ids"]).logits.dtype
        results.put((rank, held, units, losses, computed_in))
    finally:
        dist.destroy_process_group()


def tied_copy(model_dir: Path, out: Path) -> Path:
    """A copy of ``model_dir`` whose output embedding is its input embedding (``tie_word_embeddings``)."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(model_dir, out)
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    (out / "config.json").write_text(json.dumps({**config, "tie_word_embeddings": True}), encoding="utf-8")
    weights = load_file(str(out / "model.safetensors"))
    del weights["lm_head.weight"]
    save_file(weights, str(out / "model.safetensors"), metadata={"format": "pt"})
    return out


@pytest.mark.slow
@pytest.mark.parametrize(("tied", "compute_dtype"), [(False, "float32"), (True, "float32"), (False, "bfloat16")],
                         ids=["untied", "tied", "bfloat16"])
def test_two_sharded_processes_hold_half_and_match_one_process(
    tiny_model_dir: Path, tmp_path: Path, tied: bool, compute_dtype: str
) -> None:
    model_dir = tied_copy(tiny_model_dir, tmp_path / "tied") if tied else tiny_model_dir
    model = seeded_lora_model(load_base_model(model_dir), lora_config(), SEED)
    full_shapes = {name: tuple(param.shape) for name, param in model.named_parameters()}
    expected = train_losses(model, whole_batch(), world_size=1)

    results = mp.get_context("spawn").SimpleQueue()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.start_processes(sharded_worker, args=(model_dir, port, compute_dtype, results), nprocs=WORLD_SIZE,
                       start_method="spawn")
    for _ in range(WORLD_SIZE):
        rank, held, units, losses, computed_in = results.get()
        assert computed_in == getattr(torch, compute_dtype)
        # bfloat16 keeps 8 bits of mantissa: losses near 6.5 agree to a few hundredths
        assert losses == pytest.approx(expected, abs=1e-3 if compute_dtype == "float32" else 5e-2)
        layer = "base_model.model.model.layers.1"
        weights = {f"{layer}.self_attn.q_proj.base_layer", f"{layer}.mlp.down_proj", "base_model.model.lm_head"}
        assert {"", layer, *weights} <= units
        assert held.keys() == full_shapes.keys()
        for name, shape in full_shapes.items():  # dim 0 split in two torch.chunk pieces
            # the base weights are stored in the compute dtype, the LoRA weights the optimizer steps in float32
            dtype = torch.float32 if ".lora_" in name else getattr(torch, compute_dtype)
            assert held[name] == ((-(-shape[0] // WORLD_SIZE) if rank == 0 else shape[0] // WORLD_SIZE, *shape[1:]),
                                  dtype)


def test_safetensors_rows_reads_a_row_range(tiny_model_dir: Path) -> None:
    from safetensors.torch import load_file

    name = "model.layers.1.self_attn.q_proj.weight"
    full = load_file(str(tiny_model_dir / "model.safetensors"))[name]
    assert torch.equal(SafetensorsRows(tiny_model_dir).read_rows(name, 10, 30), full[10:30])
    assert checkpoint_name(f"base_model.model.{name.replace('q_proj.', 'q_proj.base_layer.')}") == name
