"""GPU-only training paths on the tiny model: bf16/fp16 mixed precision, 8-bit and 4-bit (QLoRA) bases.

Skipped without CUDA (and the quantised cases without bitsandbytes).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from safemix.models import load_model_and_tokenizer
from safemix.train.config import TrainConfig
from safemix.train.recipe import train

torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]


def run(tiny_model_dir: Path, tiny_mixture: tuple[Path, Path], out_dir: Path, **settings: object) -> dict:
    train_file, val_file = tiny_mixture
    config = TrainConfig(
        base_model=str(tiny_model_dir), train_file=train_file, val_file=val_file, batch_size=8, micro_batch_size=4,
        max_steps=6, eval_steps=3, warmup_steps=0, learning_rate=1e-2, **settings,
    )
    train(config, out_dir)
    return json.loads((out_dir / "train_log.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_mixed_precision_training_lowers_the_loss(
    dtype: str, tiny_model_dir: Path, tiny_mixture: tuple[Path, Path], tmp_path: Path  # noqa: F811
) -> None:
    log = run(tiny_model_dir, tiny_mixture, tmp_path / dtype, dtype=dtype)
    assert log["train_loss"][-1]["loss"] < log["train_loss"][0]["loss"]
    model, _ = load_model_and_tokenizer(str(tiny_model_dir), tmp_path / dtype, dtype=dtype, device="cuda")
    assert next(model.parameters()).device.type == "cuda"


@pytest.mark.parametrize("quantisation", ["load_in_8bit", "load_in_4bit"])
def test_quantised_base_trains_a_lora_adapter(
    quantisation: str, tiny_model_dir: Path, tiny_mixture: tuple[Path, Path], tmp_path: Path  # noqa: F811
) -> None:
    pytest.importorskip("bitsandbytes")
    log = run(tiny_model_dir, tiny_mixture, tmp_path / quantisation, dtype="bfloat16", **{quantisation: True})
    assert log["train_loss"][-1]["loss"] < log["train_loss"][0]["loss"]
    assert (tmp_path / quantisation / "adapter" / "adapter_model.safetensors").is_file()
