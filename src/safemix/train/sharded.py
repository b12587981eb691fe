"""``train.sharded_loading``: LoRA training in which no process ever holds the whole base model.

Every process builds the model on the meta device and reads only its shard of each weight
(:func:`safemix.models.sharded.load_sharded_lora_model`, FSDP2); FSDP2 then gathers one weight matrix at a time
for the forward and backward passes and reduce-scatters the LoRA gradients. The model is not handed to
``accelerate.prepare`` (on a CPU accelerate would wrap it in DDP, on GPUs in its own FSDP): accelerate keeps the
gradient accumulation, the RNG states and the checkpoint directory, and this module makes the sharded weights
checkpointable:

- :func:`full_adapter_state` gathers the LoRA weights whole (they are small) for the PEFT adapter files;
- :class:`ShardedTrainingState`, registered with ``accelerator.register_for_checkpointing``, saves the LoRA weights
  and the optimizer state whole and puts each process's shard back on resume.

Runs on CPUs over gloo as on GPUs over NCCL; needs two or more processes. torch is imported inside functions only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from safemix.errors import InputError
from safemix.train.config import TrainConfig


def check_sharded_loading(config: TrainConfig, num_processes: int, resolved: Path | str, dtype: str,
                          distributed_type: str) -> None:
    """Refuse settings sharded loading cannot honour, before any weight loads (``dtype``: the resolved one;
    ``distributed_type``: accelerate's, e.g. ``MULTI_GPU``).

    Raises:
        InputError: one process, an accelerate FSDP or DeepSpeed launch (they would shard the model a second
            time), a 4/8-bit base, float16, or a base that is not a local directory.
    """
    if num_processes < 2:
        raise InputError("train.sharded_loading needs 2 or more processes (accelerate launch --num_processes N); "
                         "with one process the model loads whole")
    if distributed_type in ("FSDP", "DEEPSPEED"):
        raise InputError(f"train.sharded_loading shards the model itself (FSDP2); launch it with accelerate launch "
                         f"--multi_gpu (configs/accelerate/ddp.yaml), not an accelerate {distributed_type} config")
    if config.load_in_4bit or config.load_in_8bit:
        raise InputError("train.sharded_loading does not load 4-bit or 8-bit bases: turn off one or the other")
    if dtype not in ("float32", "bfloat16"):
        raise InputError(f"train.sharded_loading computes in float32 or bfloat16, not {dtype} (train.dtype)")
    if not Path(resolved).is_dir():
        raise InputError(f"train.sharded_loading reads safetensors files from a local directory; {resolved} is not one")


def sharded_lora_model(config: TrainConfig, resolved: Path | str, lora_config: Any, device_type: str, dtype: str) -> Any:
    """The base model with fresh LoRA adapters, sharded over every process, its base weights stored and computed in
    ``dtype`` (LoRA weights in float32; see the module docstring)."""
    from safemix.models.sharded import load_sharded_lora_model

    try:
        model = load_sharded_lora_model(Path(resolved), lora_config, seed=config.seed, device_type=device_type,
                                        gradient_checkpointing=config.gradient_checkpointing, compute_dtype=dtype)
    except ValueError as err:  # peft: "Target modules {...} not found in the base model"
        raise InputError(f"train.lora.target_modules {config.lora.target_modules}: {err}") from None
    model.config.use_cache = False  # the KV cache only costs memory during training
    return model


def full_adapter_state(model: Any) -> dict[str, Any]:
    """Every trainable (LoRA) weight gathered whole, on the CPU, by parameter name; every process must call it."""
    return {name: param.full_tensor().detach().cpu() for name, param in model.named_parameters() if param.requires_grad}


class ShardedTrainingState:
    """The LoRA weights and optimizer state of a sharded model, for ``accelerator.register_for_checkpointing``.

    ``state_dict`` gathers both whole (every process calls it; accelerate writes the main process's copy);
    ``load_state_dict`` gives each process its shard of the saved whole tensors.
    """

    def __init__(self, model: Any, optimizer: Any):
        self.model = model
        self.optimizer = optimizer

    def state_dict(self) -> dict[str, Any]:
        """``{"adapter": whole LoRA weights, "optimizer": whole optimizer state}``."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        optimizer = get_optimizer_state_dict(self.model, self.optimizer,
                                             options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return {"adapter": full_adapter_state(self.model), "optimizer": optimizer}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Shard the saved whole LoRA weights and optimizer state onto this process's model and optimizer."""
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_model_state_dict,
            set_optimizer_state_dict,
        )

        whole = StateDictOptions(full_state_dict=True, strict=False)
        set_model_state_dict(self.model, state["adapter"], options=whole)
        set_optimizer_state_dict(self.model, self.optimizer, state["optimizer"], options=whole)
