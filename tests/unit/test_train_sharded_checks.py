"""What ``train.sharded_loading`` refuses before any weight loads, each with a one-line reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from safemix.errors import InputError
from safemix.train.config import TrainConfig
from safemix.train.sharded import check_sharded_loading


def config(tmp_path: Path, **settings: object) -> TrainConfig:
    return TrainConfig(base_model=str(tmp_path), train_file=tmp_path / "t.jsonl", sharded_loading=True, **settings)


def test_two_cpu_or_gpu_processes_on_a_local_model_pass(tmp_path: Path) -> None:
    for distributed_type in ("MULTI_CPU", "MULTI_GPU"):
        for dtype in ("float32", "bfloat16"):
            check_sharded_loading(config(tmp_path), 2, tmp_path, dtype, distributed_type)


@pytest.mark.parametrize(
    ("processes", "distributed_type", "dtype", "settings", "message"),
    [
        (1, "NO", "float32", {}, "needs 2 or more processes"),
        (2, "FSDP", "bfloat16", {}, "not an accelerate FSDP config"),
        (2, "DEEPSPEED", "bfloat16", {}, "not an accelerate DEEPSPEED config"),
        (2, "MULTI_GPU", "bfloat16", {"load_in_4bit": True}, "does not load 4-bit or 8-bit bases"),
        (2, "MULTI_GPU", "float16", {}, "computes in float32 or bfloat16, not float16"),
    ],
    ids=["one-process", "accelerate-fsdp", "deepspeed", "4-bit", "float16"],
)
def test_what_sharded_loading_refuses(tmp_path: Path, processes: int, distributed_type: str, dtype: str,
                                      settings: dict[str, object], message: str) -> None:
    with pytest.raises(InputError, match=message):
        check_sharded_loading(config(tmp_path, **settings), processes, tmp_path, dtype, distributed_type)


def test_a_hub_name_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="reads safetensors files from a local directory"):
        check_sharded_loading(config(tmp_path), 2, "org/some-model", "float32", "MULTI_GPU")
