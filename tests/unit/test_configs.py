"""Every shipped config validates; the experiment configs have what 'safemix run' needs."""

from __future__ import annotations

from pathlib import Path

import pytest

from safemix.config import load_config
from safemix.pipeline import check_runnable
from safemix.scoring import get_scorer_info
from tests.conftest import REPO_ROOT

CONFIGS = sorted((REPO_ROOT / "configs").glob("*.yaml"))
RUN_CONFIGS = ["quickstart.yaml", "paper-cpu.yaml", "paper-llama-7b.yaml"]


@pytest.mark.parametrize("path", CONFIGS, ids=[path.name for path in CONFIGS])
def test_every_config_validates(path: Path) -> None:
    load_config(path)


@pytest.mark.parametrize("name", RUN_CONFIGS)
def test_the_experiment_configs_can_run(name: str) -> None:
    check_runnable(load_config(REPO_ROOT / "configs" / name), name)


def test_the_quickstart_needs_no_network_and_no_data_directory() -> None:
    config = load_config(REPO_ROOT / "configs" / "quickstart.yaml")
    assert config.train is not None and config.generate is not None and config.scoring is not None
    assert config.train.base_model == "smollm2-135m-instruct"
    assert {config.data.general.name, config.data.safety.name} == {"starter-general", "starter-safety"}
    assert all(str(spec.name).startswith("starter-") for spec in config.generate.suites)
    assert {get_scorer_info(entry.name).network for entry in config.scoring.scorers} == {"offline"}
    assert len(config.data.n_safety) >= 3


def test_the_paper_config_has_the_papers_settings() -> None:
    config = load_config(REPO_ROOT / "configs" / "paper-llama-7b.yaml")
    assert config.train is not None and config.scoring is not None and config.generate is not None
    assert (config.data.n_general, config.data.n_safety) == (20000, [0, 100, 300, 500, 1000, 1500, 2000])
    lora = config.train.lora
    assert (lora.r, lora.alpha, lora.dropout, lora.target_modules) == (8, 16, 0.05, ["q_proj", "v_proj"])
    assert (config.train.learning_rate, config.train.batch_size, config.train.cutoff_len) == (3e-4, 128, 256)
    assert {entry.name for entry in config.scoring.scorers} >= {"harmfulness-rm", "moderation"}
    assert config.generate.preset == "paper"


def test_paper_cpu_answers_the_papers_suites_over_five_k_up_to_1000() -> None:
    config = load_config(REPO_ROOT / "configs" / "paper-cpu.yaml")
    assert config.generate is not None and config.capability is not None and config.train is not None
    assert {spec.label for spec in config.generate.suites} == {
        "i-malicious-instructions", "i-cona", "i-controversial", "o-controversial", "q-harm",
        "i-physical-safety-unsafe", "i-physical-safety-safe", "xstest", "i-alpaca"}
    ks = config.data.n_safety
    assert len(ks) >= 5 and min(ks) == 0 and max(ks) == 1000
    assert config.data.safety.name == "paper-safety"
    assert set(config.capability.tasks) == {"piqa", "boolq", "openbookqa"}
    assert (config.train.dtype, config.generate.dtype) == ("auto", "auto")  # bfloat16 where the CPU has it
