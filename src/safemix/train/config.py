"""The ``train`` section of an experiment config (pydantic, no torch): the LoRA SFT recipe's settings.

Defaults are the paper's (Bianchi et al. 2024, following Alpaca-LoRA): LoRA r=8, alpha=16, dropout 0.05 on
q_proj and v_proj; learning rate 3e-4; an effective batch of 128 made of micro-batches of 4; cutoff 256 tokens;
3 epochs; the Alpaca template; loss on the whole text (``train_on_inputs``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from safemix.prompts import TemplateName


class LoraSettings(BaseModel):
    """LoRA adapter shape."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    r: int = Field(default=8, gt=0, description="rank of the update matrices")
    alpha: int = Field(default=16, gt=0, description="scaling numerator: the update is scaled by alpha / r")
    dropout: float = Field(default=0.05, ge=0.0, lt=1.0, description="dropout on the LoRA branch's input")
    target_modules: list[str] = Field(default=["q_proj", "v_proj"], min_length=1, description="module names to adapt")


class TrainConfig(BaseModel):
    """How to fine-tune a base model with LoRA on one mixture."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_model: str = Field(min_length=1, description="Hugging Face id, local directory or built-in name")
    train_file: Path | None = Field(default=None, description="a mixture-K.jsonl from 'safemix data build'")
    val_file: Path | None = Field(default=None, description="the val.jsonl from 'safemix data build'")
    template: TemplateName = Field(default="alpaca", description="'alpaca' (paper, base models) or 'chat'")
    train_on_inputs: bool = Field(default=True, description="loss on prompt and answer (paper); false: answer only")
    cutoff_len: int = Field(default=256, gt=1, description="longest sequence in tokens; longer ones are truncated")
    lora: LoraSettings = Field(default_factory=LoraSettings)
    learning_rate: float = Field(default=3e-4, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    warmup_steps: int = Field(default=100, ge=0, description="linear warm-up, then linear decay to 0")
    max_grad_norm: float | None = Field(default=1.0, gt=0, description="clip the gradient norm (None: no clipping)")
    batch_size: int = Field(default=128, gt=0, description="examples per optimizer step, over all processes")
    micro_batch_size: int = Field(default=4, gt=0, description="examples per forward pass on one process")
    epochs: float = Field(default=3, gt=0, description="passes over the mixture (ignored with max_steps)")
    max_steps: int | None = Field(default=None, gt=0, description="optimizer steps; overrides epochs")
    eval_steps: int = Field(default=200, gt=0, description="validate, and checkpoint, every N optimizer steps")
    length_grouping: bool = Field(
        default=True,
        description="put examples of similar length in the same micro-batch, then shuffle the micro-batches; "
        "false: random micro-batches padded to their longest (Alpaca-LoRA)",
    )
    pad_to_multiple_of: int | None = Field(
        default=None, gt=0, description="round each micro-batch's width up to a multiple (Alpaca-LoRA pads to 8)"
    )
    seed: int = 0
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        default="float32",
        description="float16: CUDA only; bfloat16: CUDA, or a CPU with native bfloat16 (autocast); "
        "auto: bfloat16 where native, else float32",
    )
    load_in_4bit: bool = Field(default=False, description="QLoRA: base in 4-bit NF4 (bitsandbytes; CUDA or CPU)")
    load_in_8bit: bool = Field(default=False, description="base in 8-bit (bitsandbytes; CUDA or CPU)")
    gradient_checkpointing: bool = Field(default=False, description="trade compute for activation memory")
    sharded_loading: bool = Field(
        default=False,
        description="2+ processes: build the model on the meta device, read only each process's shard of every "
        "weight and train it sharded with FSDP2, so no process holds the whole base (float32, or bfloat16 base weights "
        "and compute with float32 LoRA weights; docs/training.md)",
    )

    @model_validator(mode="after")
    def _one_quantisation(self) -> TrainConfig:
        if self.load_in_4bit and self.load_in_8bit:
            raise ValueError("load_in_4bit and load_in_8bit: choose one")
        return self
