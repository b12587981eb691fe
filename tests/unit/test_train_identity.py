"""The identity of a training run: which settings count."""

from __future__ import annotations

from pathlib import Path

from safemix.train.config import TrainConfig
from safemix.train.recipe import _run_hash

#: The run hash safemix gave this run before ``train.sharded_loading`` existed (measured with commit 5b830fa).
HASH_BEFORE_SHARDED_LOADING = "cd5c69efec09cb7f"


def test_sharded_loading_counts_only_when_on(tmp_path: Path) -> None:
    train_file, val_file = tmp_path / "mixture-0.jsonl", tmp_path / "val.jsonl"
    train_file.write_text("{}\n", encoding="utf-8")
    val_file.write_text("{}\n", encoding="utf-8")
    plain = TrainConfig(base_model="m")
    # Off, a run keeps the identity it had before the setting existed: its adapters are not trained again.
    assert _run_hash(plain, train_file, val_file, "fingerprint") == HASH_BEFORE_SHARDED_LOADING
    assert _run_hash(plain.model_copy(update={"sharded_loading": True}), train_file, val_file,
                     "fingerprint") != HASH_BEFORE_SHARDED_LOADING
