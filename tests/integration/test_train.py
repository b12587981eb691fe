"""The LoRA recipe on the tiny model: what changes, the loss, best-checkpoint selection, reruns, export."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from safemix.errors import InputError
from safemix.models import load_model_and_tokenizer, read_adapter_info
from safemix.train.config import TrainConfig
from safemix.train.recipe import evaluate, train

# Answer-only loss at a high learning rate on the synthetic mixture: the validation loss falls for the first
# steps and then rises (the model learns to answer 'zz'), so the best step is not the last one.
SETTINGS: dict[str, Any] = {
    "batch_size": 8,
    "micro_batch_size": 4,
    "max_steps": 16,
    "eval_steps": 2,
    "warmup_steps": 0,
    "learning_rate": 3e-2,
    "train_on_inputs": False,
}


def make_config(tiny_model_dir: Path, tiny_mixture: tuple[Path, Path], **changes: Any) -> TrainConfig:
    train_file, val_file = tiny_mixture
    return TrainConfig(
        base_model=str(tiny_model_dir), train_file=train_file, val_file=val_file, **{**SETTINGS, **changes}
    )


@pytest.fixture(scope="module")
def trained(tiny_model_dir: Path, tiny_mixture: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out_dir = tmp_path_factory.mktemp("train") / "run"
    train(make_config(tiny_model_dir, tiny_mixture), out_dir)
    return out_dir


def read_log(out_dir: Path) -> dict[str, Any]:
    return json.loads((out_dir / "train_log.json").read_text(encoding="utf-8"))


def test_run_writes_adapter_log_plot_and_config(trained: Path) -> None:
    assert {p.name for p in (trained / "adapter").iterdir()} >= {
        "adapter_config.json", "adapter_model.safetensors", "safemix_adapter.json"
    }
    assert (trained / "loss.png").read_bytes().startswith(b"\x89PNG")
    assert "learning_rate: 0.03" in (trained / "train_config.yaml").read_text(encoding="utf-8")
    manifest = json.loads((trained / "manifest.json").read_text(encoding="utf-8"))
    assert len(manifest["inputs"]["train_file"]["sha256"]) == 64
    assert not (trained / "checkpoints").exists()  # removed once the run is complete
    info = read_adapter_info(trained / "adapter")
    assert (info.template, info.train_on_inputs, info.cutoff_len) == ("alpaca", False, 256)


def test_only_lora_weights_train_and_the_merged_model_differs_only_in_adapted_modules(
    trained: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    adapter_keys = load_file(trained / "adapter" / "adapter_model.safetensors").keys()
    assert adapter_keys and all("lora_A" in key or "lora_B" in key for key in adapter_keys)

    from safemix.train.export import export_merged

    merged = load_file(export_merged(str(tiny_model_dir), trained, tmp_path / "merged") / "model.safetensors")
    base = load_file(tiny_model_dir / "model.safetensors")
    assert merged.keys() == base.keys()
    changed = {name for name in base if not torch.equal(base[name], merged[name])}
    adapted = {name for name in base if name.endswith(("q_proj.weight", "v_proj.weight"))}
    assert changed == adapted


def test_loss_falls(trained: Path) -> None:
    log = read_log(trained)
    train_losses = [row["loss"] for row in log["train_loss"]]
    assert sum(train_losses[-4:]) / 4 < sum(train_losses[:4]) / 4 - 0.2
    assert log["best_val_loss"] < log["val_loss"][0]["loss"]


def test_best_checkpoint_is_the_lowest_recorded_validation_loss(
    trained: Path, tiny_model_dir: Path, tiny_mixture: tuple[Path, Path]
) -> None:
    log = read_log(trained)
    recorded = {row["step"]: row["loss"] for row in log["val_loss"]}
    assert sorted(recorded) == list(range(0, 17, 2))
    lowest = min((step for step in recorded if step > 0), key=recorded.__getitem__)
    assert log["best_step"] == lowest
    assert lowest < 16, "the synthetic mixture should make the validation loss rise again before the end"
    assert read_adapter_info(trained / "adapter").step == lowest

    # The adapter written is that step's: its validation loss, measured again, is the recorded one.
    from accelerate import Accelerator

    from safemix.prompts import get_template
    from safemix.train.data import encode_example, read_examples

    model, tokenizer = load_model_and_tokenizer(str(tiny_model_dir), trained)
    template = get_template("alpaca")
    val_set = [encode_example(e, template, tokenizer, 256, False) for e in read_examples(tiny_mixture[1])]
    measured = evaluate(model, Accelerator(cpu=True), val_set, 4, tokenizer.pad_token_id)
    assert measured == pytest.approx(recorded[lowest], abs=1e-5)


def test_rerunning_a_finished_run_returns_it_without_training(
    trained: Path, tiny_model_dir: Path, tiny_mixture: tuple[Path, Path]
) -> None:
    before = (trained / "adapter" / "adapter_model.safetensors").stat().st_mtime_ns
    result = train(make_config(tiny_model_dir, tiny_mixture), trained)
    assert result.log["best_step"] == read_log(trained)["best_step"]
    assert (trained / "adapter" / "adapter_model.safetensors").stat().st_mtime_ns == before


def test_an_out_dir_holding_another_run_is_refused(
    trained: Path, tiny_model_dir: Path, tiny_mixture: tuple[Path, Path]
) -> None:
    with pytest.raises(InputError, match=r"run: holds a run with other settings or inputs .*use another --out"):
        train(make_config(tiny_model_dir, tiny_mixture, learning_rate=1e-3), trained)


def test_exported_model_loads_without_peft_and_matches_base_plus_adapter(
    trained: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    from transformers import AutoModelForCausalLM, LlamaForCausalLM

    from safemix.train.export import export_merged

    merged_dir = export_merged(str(tiny_model_dir), trained / "adapter", tmp_path / "merged")
    merged = AutoModelForCausalLM.from_pretrained(merged_dir)
    assert type(merged) is LlamaForCausalLM
    assert not any("lora" in name for name, _ in merged.named_parameters())
    peft_model, tokenizer = load_model_and_tokenizer(str(tiny_model_dir), trained)
    ids = tokenizer(["Repeat: the cat sat"], return_tensors="pt")
    with torch.no_grad():
        assert torch.allclose(merged(**ids).logits, peft_model(**ids).logits, atol=1e-5)


def test_collate_pads_right_to_a_multiple_and_masks_the_padding() -> None:
    from safemix.train.data import IGNORE_INDEX, Encoded, collate

    batch = collate([Encoded([5, 6, 7], [IGNORE_INDEX, 6, 7]), Encoded([8], [8])], pad_token_id=0, pad_to_multiple_of=4)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 0], [8, 0, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0], [1, 0, 0, 0]]
    assert batch["labels"].tolist() == [[IGNORE_INDEX, 6, 7, IGNORE_INDEX], [8, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX]]
