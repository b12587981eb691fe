"""The shipped accelerate configs load with accelerate's own reader and say what they claim."""

from __future__ import annotations

from pathlib import Path

import pytest

ACCELERATE_CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "accelerate"
EXPECTED = {
    "cpu-2proc.yaml": ("MULTI_GPU", None),
    "ddp.yaml": ("MULTI_GPU", None),
    "deepspeed-zero2.yaml": ("DEEPSPEED", 2),
    "deepspeed-zero3.yaml": ("DEEPSPEED", 3),
    "fsdp.yaml": ("FSDP", None),
}


def test_every_accelerate_config_is_listed() -> None:
    assert sorted(p.name for p in ACCELERATE_CONFIGS.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_accelerate_config_loads(name: str) -> None:
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(ACCELERATE_CONFIGS / name))
    distributed_type, zero_stage = EXPECTED[name]
    assert str(config.distributed_type).rsplit(".", 1)[-1] == distributed_type
    if zero_stage is not None:
        assert config.deepspeed_config["zero_stage"] == zero_stage
    if distributed_type == "FSDP":
        assert config.fsdp_config["fsdp_use_orig_params"] is True  # PEFT mixes frozen and trainable weights
