"""Peak memory per process of sharded loading (meta device + FSDP2) against every process loading the whole model.

A random Llama (default: hidden 2048, 24 layers, about 0.9B parameters, float32) with LoRA r=8 on q_proj and
v_proj trains two steps of one batch on the CPU, four ways, each in fresh processes:

(1) single: one process loads the whole model (``safemix.models.loading.load_base_model``), no sharding;
(2) whole:  2 processes over gloo, each loads the whole model, then ``fully_shard`` shards it (what FSDP does
    when every rank loads the checkpoint);
(3) sharded: 2 processes over gloo build the model on the meta device, shard it, and read only their shard of
    each weight (``safemix.models.sharded.load_sharded_lora_model``);
(4) sharded-bf16: as (3) with ``compute_dtype="bfloat16"``: the base weights' shards are stored in bfloat16.

All four start from the same LoRA weights (``lora_initial_values``), no dropout. It prints each process's RSS once
the model is loaded (for (1), whose weights are memory-mapped, only what has been read so far) and its peak RSS
(``VmHWM``), both steps' losses of each run and their largest difference
from (1) (target <= 1e-3 in float32; bfloat16 keeps about 3 significant digits), and last the ratio of the largest
float32 sharded peak to the largest whole-model peak (target <= 0.6):

    python benchmarks/sharded_memory.py [--hidden-size 2048] [--layers 24] [--seq-len 32] [--work DIR] [--safemix-train]

``--safemix-train`` also measures the real command on the same model, two ``safemix train`` steps in 2 processes
under ``accelerate launch`` (DDP, each process loads the whole model) and the same with ``--sharded-loading``: each
worker's peak RSS (``VmHWM``, read from ``/proc`` while it runs), both runs' losses, and ``train_rss_ratio=``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from safemix.models import build_random_llama
from safemix.models.loading import load_base_model
from safemix.models.sharded import load_sharded_lora_model, seeded_lora_model
from safemix.models.tiny import TINY_CORPUS
from safemix.train.global_steps import global_mean_steps

TARGET_RATIO = 0.6
LOSS_TOLERANCE = 1e-3
SEED = 0
STEPS = 2


def lora_config() -> Any:
    """The paper's LoRA shape, without dropout so that every run computes the same function."""
    from peft import LoraConfig

    return LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["q_proj", "v_proj"], bias="none",
                      task_type="CAUSAL_LM")


def batch_for(rank: int, world_size: int, batch_size: int, seq_len: int, vocab_size: int) -> dict[str, torch.Tensor]:
    """This process's rows of one fixed random batch (the loss covers every token)."""
    generator = torch.Generator().manual_seed(SEED)
    input_ids = torch.randint(0, vocab_size, (batch_size, seq_len), generator=generator)
    mine = input_ids[rank::world_size]
    return {"input_ids": mine, "attention_mask": torch.ones_like(mine), "labels": mine}


def load_model(mode: str, model_dir: Path) -> Any:
    """The LoRA model as ``mode`` loads it (see the module docstring)."""
    from torch.distributed.fsdp import fully_shard

    if mode.startswith("sharded"):
        compute_dtype = "bfloat16" if mode == "sharded-bf16" else "float32"
        return load_sharded_lora_model(model_dir, lora_config(), seed=SEED, compute_dtype=compute_dtype)
    model = seeded_lora_model(load_base_model(model_dir), lora_config(), SEED)
    if mode == "whole":
        for layer in model.get_base_model().model.layers:
            fully_shard(layer)
        fully_shard(model)
    return model


def worker(rank: int, mode: str, world_size: int, port: int, args: argparse.Namespace, results: Any) -> None:
    """One process of one run: join the group, load, train, report (RSS once loaded and peak RSS in GiB, losses)."""
    torch.set_num_threads(args.threads)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        torch.manual_seed(SEED)
        model = load_model(mode, args.work / "model")
        loaded_gib = rss_gib("VmRSS")
        # The step's tokens: every token predicts the next, except the last of each sequence.
        total_tokens = args.batch_size * (args.seq_len - 1)
        batch = batch_for(rank, world_size, args.batch_size, args.seq_len, model.config.vocab_size)
        losses = global_mean_steps(model, batch, total_tokens=total_tokens, world_size=world_size, steps=STEPS,
                                   learning_rate=1e-3)
        results.put((mode, rank, loaded_gib, rss_gib("VmHWM"), losses))
    finally:
        dist.destroy_process_group()


def rss_gib(field: str) -> float:
    """This process's resident set size now (``VmRSS``) or at its peak (``VmHWM``), in GiB.

    Not ``ru_maxrss`` for the peak: a spawned process starts with its parent's peak there (Linux copies it at ``exec``), so
    every run would read at least what the parent held, e.g. 4 GiB after it built the model.
    """
    for line in Path("/proc/self/status").read_text(encoding="utf-8").splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 2**20
    raise RuntimeError(f"no {field} in /proc/self/status")


def run(mode: str, world_size: int, args: argparse.Namespace) -> list[tuple[int, float, float, list[float]]]:
    """Start ``world_size`` fresh processes for ``mode``; return (rank, loaded RSS GiB, peak RSS GiB, losses) per
    process."""
    context = mp.get_context("spawn")
    results = context.SimpleQueue()
    mp.start_processes(worker, args=(mode, world_size, free_port(), args, results), nprocs=world_size,
                       start_method="spawn")
    return sorted(results.get()[1:] for _ in range(world_size))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def tiny_mixture(folder: Path) -> tuple[Path, Path]:
    """Eight training and four validation examples made of the corpus's words, in the mixture format."""
    words = " ".join(TINY_CORPUS).split()
    files = (folder / "mixture-0.jsonl", folder / "val.jsonl")
    folder.mkdir(parents=True, exist_ok=True)
    for path, count in zip(files, (8, 4), strict=True):
        rows = [{"id": f"{path.stem}-{i}", "source": "bench", "category": "general", "instruction": " ".join(words[i:i + 5]),
                 "input": "", "output": " ".join(words[i + 5:i + 20])} for i in range(count)]
        path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return files


def safemix_train_peaks(model_dir: Path, out: Path, sharded: bool) -> tuple[list[float], dict[str, Any]]:
    """Two steps of ``safemix train`` in 2 processes (``--sharded-loading`` or not); each worker's peak RSS in GiB
    (polled from ``/proc`` until the run ends) and the run's train_log.json."""
    train_file, val_file = tiny_mixture(out.parent / "mixture")
    command = [str(Path(sys.executable).parent / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "safemix", "train",
               "--base-model", str(model_dir), "--train", str(train_file), "--val", str(val_file), "--out", str(out),
               "--batch-size", "4", "--micro-batch-size", "2", "--max-steps", "2", "--eval-steps", "2",
               "--warmup-steps", "0", "--quiet", *(["--sharded-loading"] if sharded else [])]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peaks: dict[str, int] = {}
    while process.poll() is None:
        for status in Path("/proc").glob("[0-9]*/status"):
            try:
                argv = (status.parent / "cmdline").read_bytes().split(b"\0")
                if str(out).encode() in argv and b"launch" not in argv:  # a worker, not the launcher
                    kib = next(int(line.split()[1]) for line in status.read_text().splitlines() if line.startswith("VmHWM:"))
                    peaks[status.parent.name] = max(peaks.get(status.parent.name, 0), kib)
            except (FileNotFoundError, ProcessLookupError, StopIteration):
                continue  # ended meanwhile
        time.sleep(0.2)
    if process.returncode != 0:
        raise RuntimeError(f"safemix train failed: {process.stderr.read()[-2000:] if process.stderr else ''}")
    return sorted(kib / 2**20 for kib in peaks.values()), json.loads((out / "train_log.json").read_text(encoding="utf-8"))


def report_safemix_train(model_dir: Path, work: Path) -> None:
    """Print ``safemix train``'s per-process peaks and losses with and without sharded loading, and their ratio."""
    peaks = {}
    for sharded in (False, True):
        out = work / ("train-sharded" if sharded else "train-ddp")
        shutil.rmtree(out, ignore_errors=True)
        gib, log = safemix_train_peaks(model_dir, out, sharded)
        peaks[sharded] = max(gib)
        losses = ", ".join(f"{entry['loss']:.6f}" for entry in log["val_loss"])
        print(f"safemix train{' --sharded-loading' if sharded else ''}: peak RSS per process "
              f"{' / '.join(f'{g:.2f}' for g in gib)} GiB; validation losses {losses}")
    print(f"train_rss_ratio={peaks[True] / peaks[False]:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden-size", type=int, default=2048)
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--batch-size", type=int, default=4, help="sequences per step, over all processes")
    parser.add_argument("--seq-len", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--work", type=Path, default=None, help="keep the model here (built once) instead of a temp dir")
    parser.add_argument("--safemix-train", action="store_true", help="also measure the safemix train command both ways")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        args.work = args.work or Path(tmp)
        model_dir = args.work / "model"
        if not (model_dir / "model.safetensors").is_file():
            build_random_llama(model_dir, TINY_CORPUS, vocab_size=1024, hidden_size=args.hidden_size,
                               num_layers=args.layers, seed=SEED)
        n_params = (model_dir / "model.safetensors").stat().st_size / 4e9
        print(f"random Llama hidden {args.hidden_size}, {args.layers} layers: {n_params:.2f}B parameters (float32)")
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
        # glibc keeps a freed block below its mmap threshold in its heap, and raises the threshold (up to 32 MiB) to
        # the size of each mapped block freed, so the gathered weights (16-34 MB a unit) and the activations of the
        # backward pass (0.5 MiB a tensor) would stay resident after use. A fixed threshold at glibc's initial
        # 128 KiB maps every larger block and unmaps it when freed (at 1 MiB the sharded peak was 2.65 GiB, not 2.38).
        os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", str(2**17))

        runs = {"single": run("single", 1, args), "whole": run("whole", 2, args), "sharded": run("sharded", 2, args),
                "sharded-bf16": run("sharded-bf16", 2, args)}
        reference = runs["single"][0][3]
        peaks = {}
        for mode, processes in runs.items():
            for rank, loaded_gib, peak_gib, losses in processes:
                diff = max(abs(a - b) for a, b in zip(losses, reference, strict=True))
                print(f"{mode:12s} rank {rank}: RSS loaded {loaded_gib:5.2f} GiB, peak {peak_gib:5.2f} GiB; losses "
                      f"{', '.join(f'{loss:.6f}' for loss in losses)}; max |diff| vs single {diff:.2e}")
            peaks[mode] = max(peak for _, _, peak, _ in processes)
        if args.safemix_train:
            report_safemix_train(model_dir, args.work)
        worst_diff = max(abs(a - b) for _, _, _, losses in runs["sharded"] for a, b in zip(losses, reference, strict=True))
        ratio = peaks["sharded"] / peaks["whole"]
        print(f"sharded loss matches single within {LOSS_TOLERANCE}: {worst_diff <= LOSS_TOLERANCE}; "
              f"peak RSS ratio target <= {TARGET_RATIO}: {ratio <= TARGET_RATIO}")
        print(f"rss_ratio={ratio:.2f}")


if __name__ == "__main__":
    main()
