"""Checkpoints that make a killed run resumable, and the progress record they carry.

A checkpoint ``DIR/checkpoints/step-N/`` holds the LoRA adapter (``adapter/``, PEFT format), the optimizer,
scheduler and RNG states of every process (``accelerator.save_state``: it handles DDP, DeepSpeed and FSDP; under
``train.sharded_loading`` the adapter and optimizer go through ``safemix.train.sharded.ShardedTrainingState``), and
``trainer_state.json``. It is written under a temporary name and renamed when complete, so a ``kill -9`` leaves
either the whole checkpoint or none. Only the latest checkpoint and the best one by validation loss are kept.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from safemix.files import write_json_atomic, write_text_atomic
from safemix.models.adapters import AdapterInfo, write_adapter_info
from safemix.train.sharded import full_adapter_state

log = logging.getLogger(__name__)

CHECKPOINTS_DIR = "checkpoints"
STATE_FILE = "trainer_state.json"
ADAPTER_SUBDIR = "adapter"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"


@dataclass
class TrainerState:
    """Where a run stands: steps done, the loss history, the best validation step, and throughput counters."""

    run_hash: str
    step: int = 0
    train_history: list[dict[str, float]] = field(default_factory=list)
    val_history: list[dict[str, float]] = field(default_factory=list)
    best_step: int | None = None
    best_val_loss: float | None = None
    real_tokens: int = 0
    padded_tokens: int = 0
    train_seconds: float = 0.0
    resumed_at: list[int] = field(default_factory=list)

    def record_val_loss(self, step: int, loss: float) -> bool:
        """Record a validation loss; return True when it is the best so far.

        Step 0 (the untouched base model) is recorded for the curve but never selected: the adapter at step 0
        is the identity.
        """
        self.val_history.append({"step": step, "loss": loss})
        if step > 0 and (self.best_val_loss is None or loss < self.best_val_loss):
            self.best_step, self.best_val_loss = step, loss
            return True
        return False

    @classmethod
    def read(cls, path: Path) -> TrainerState:
        """Read a state written by :func:`save_checkpoint`."""
        return cls(**json.loads(path.read_text(encoding="utf-8")))


def checkpoint_dir(out_dir: Path, step: int) -> Path:
    """``DIR/checkpoints/step-N``."""
    return out_dir / CHECKPOINTS_DIR / f"step-{step}"


def latest_checkpoint(out_dir: Path) -> Path | None:
    """The complete checkpoint with the highest step, or None (temporary, half-written ones are ignored)."""
    root = out_dir / CHECKPOINTS_DIR
    complete = [path for path in root.glob("step-*") if (path / STATE_FILE).is_file()] if root.is_dir() else []
    return max(complete, key=lambda path: int(path.name.removeprefix("step-")), default=None)


def register_adapter_hooks(accelerator: Any) -> None:
    """Make ``save_state``/``load_state`` skip the frozen base weights and restore only the adapter.

    Without this, every checkpoint would hold a full copy of the base model (14 GB for a 7B model in bf16).
    DeepSpeed and FSDP save their own shards and never reach these hooks.
    """

    def skip_model_weights(models: list[Any], weights: list[dict[str, Any]], output_dir: str) -> None:
        weights.clear()  # the adapter is written separately by save_adapter

    def load_adapter_weights(models: list[Any], input_dir: str) -> None:
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        adapter_weights = load_file(Path(input_dir) / ADAPTER_SUBDIR / ADAPTER_WEIGHTS)
        for model in models:
            set_peft_model_state_dict(accelerator.unwrap_model(model), adapter_weights)
        models.clear()

    accelerator.register_save_state_pre_hook(skip_model_weights)
    accelerator.register_load_state_pre_hook(load_adapter_weights)


def save_adapter(accelerator: Any, model: Any, adapter_dir: Path, info: AdapterInfo, *, sharded: bool = False) -> None:
    """Write the LoRA adapter in PEFT format plus ``safemix_adapter.json`` (every process calls this).

    ``sharded``: the model was sharded by ``train.sharded_loading`` (FSDP2 outside accelerate).
    """
    # Both gather shards: accelerate's under DeepSpeed ZeRO-3 and its FSDP, full_adapter_state under sharded loading.
    state_dict = full_adapter_state(model) if sharded else accelerator.get_state_dict(model)
    if accelerator.is_main_process:
        accelerator.unwrap_model(model).save_pretrained(adapter_dir, state_dict=state_dict)
        sort_target_modules(adapter_dir)
        write_adapter_info(adapter_dir, info)


def sort_target_modules(adapter_dir: Path) -> None:
    """Rewrite ``adapter_config.json`` with its ``target_modules`` sorted.

    PEFT keeps them as a set and writes them in the interpreter's string-hash order, which changes from one
    process to the next: sorted, the same training writes the same bytes.
    """
    path = adapter_dir / ADAPTER_CONFIG
    config = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(config.get("target_modules"), list):
        config["target_modules"] = sorted(config["target_modules"])
        write_text_atomic(path, json.dumps(config, indent=2, sort_keys=True))


def save_checkpoint(accelerator: Any, model: Any, state: TrainerState, out_dir: Path, info: AdapterInfo, *,
                    sharded: bool = False) -> Path:
    """Write ``DIR/checkpoints/step-N`` atomically (every process calls this) and return it (``sharded``: as in
    :func:`save_adapter`)."""
    final = checkpoint_dir(out_dir, state.step)
    partial = final.with_name(f".{final.name}.partial")
    if accelerator.is_main_process:
        shutil.rmtree(partial, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(partial))
    save_adapter(accelerator, model, partial / ADAPTER_SUBDIR, info, sharded=sharded)
    if accelerator.is_main_process:
        write_json_atomic(partial / STATE_FILE, asdict(state))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(partial, final)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator: Any, path: Path) -> TrainerState:
    """Restore adapter, optimizer, scheduler and RNG states from a checkpoint; return its trainer state."""
    accelerator.load_state(str(path))
    return TrainerState.read(path / STATE_FILE)


def prune_checkpoints(accelerator: Any, out_dir: Path, keep_steps: set[int]) -> None:
    """Delete complete checkpoints whose step is not in ``keep_steps`` (main process only)."""
    if not accelerator.is_main_process:
        return
    for path in (out_dir / CHECKPOINTS_DIR).glob("step-*"):
        if int(path.name.removeprefix("step-")) not in keep_steps:
            shutil.rmtree(path)
