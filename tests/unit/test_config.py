"""Experiment config: schema, dotted-path errors, --set overrides, hashing."""

from __future__ import annotations

from pathlib import Path

import pytest

from safemix.capability.config import CapabilityConfig
from safemix.config import (
    ConfigError,
    apply_overrides,
    config_hash,
    load_command_settings,
    load_config,
    validate_config,
    write_resolved_config,
)
from safemix.errors import InputError
from safemix.generate.config import GenerateConfig

VALID = {"name": "x", "data": {"general": "llamafactory-alpaca-en-demo", "safety": "paper-safety", "n_general": 10, "n_safety": [0, 5]}}


def test_source_strings_become_specs(tmp_path: Path) -> None:
    config = validate_config({**VALID, "data": {**VALID["data"], "general": "hf:yahma/alpaca-cleaned@abc", "safety": "local/safety.jsonl"}})
    assert (config.data.general.hf, config.data.general.revision) == ("yahma/alpaca-cleaned", "abc")
    assert config.data.safety.path == Path("local/safety.jsonl")


def test_every_error_has_a_dotted_path() -> None:
    raw = {"name": "x", "colour": "red", "data": {"general": "alpaca-cleand", "safety": {"name": "paper-safety", "path": "x.json"},
                                                  "n_general": -1, "n_safety": [0, -5, 0]}}
    with pytest.raises(ConfigError) as caught:
        validate_config(raw, "exp.yaml")
    assert caught.value.problems == [
        "data.general: unknown catalog source 'alpaca-cleand'; did you mean alpaca-cleaned, alpaca-eval?",
        "data.safety: give exactly one of 'name' (catalog), 'path' or 'hf'",
        "data.n_general: Input should be greater than or equal to 0",
        "data.n_safety: every value must be >= 0",
        "colour: Extra inputs are not permitted",
    ]
    assert str(caught.value) == (
        "exp.yaml: data.general: unknown catalog source 'alpaca-cleand'; did you mean alpaca-cleaned, alpaca-eval? "
        "(and 4 more; run 'safemix validate')"
    )


def test_training_sources_must_hold_instructions() -> None:
    with pytest.raises(ConfigError) as caught:
        validate_config({**VALID, "data": {**VALID["data"], "safety": "xstest"}})
    assert caught.value.problems == ["data.safety: source 'xstest' holds prompts, not instruction examples"]


def test_overrides_go_through_the_schema() -> None:
    raw = apply_overrides(VALID, ["data.n_general=7", "data.n_safety=[1, 2]", "seed=3"])
    config = validate_config(raw)
    assert (config.data.n_general, config.data.n_safety, config.seed) == (7, [1, 2], 3)
    assert VALID["data"]["n_general"] == 10  # the input mapping is not changed
    with pytest.raises(ConfigError, match="data.n_general: Input should be a valid integer"):
        validate_config(apply_overrides(VALID, ["data.n_general=many"]))
    with pytest.raises(ConfigError, match="data.typo: Extra inputs are not permitted"):
        validate_config(apply_overrides(VALID, ["data.typo=1"]))


@pytest.mark.parametrize("bad", ["nokey", "=3", "name.x=1"])
def test_malformed_overrides(bad: str) -> None:
    with pytest.raises(InputError):
        apply_overrides(VALID, [bad])


def test_yaml_errors_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("name: x\ndata:\n  n_general: [1, 2\n")
    with pytest.raises(InputError, match=rf"^{path}: line 4: invalid YAML"):
        load_config(path)
    path.write_text("")
    with pytest.raises(InputError, match="config file is empty"):
        load_config(path)
    path.write_text("- a\n- b\n")
    with pytest.raises(InputError, match="must be a YAML mapping at the top level"):
        load_config(path)


def test_hash_is_stable_and_follows_settings(tmp_path: Path) -> None:
    config = validate_config(VALID)
    assert config_hash(config) == config_hash(validate_config(dict(VALID)))
    assert config_hash(config) != config_hash(validate_config(apply_overrides(VALID, ["seed=1"])))
    digest = write_resolved_config(config, tmp_path)
    text = (tmp_path / "config.yaml").read_text()
    assert text.startswith(f"# resolved safemix config, hash {digest}\n")
    assert "val_size: 0" in text  # defaults are written out
    reloaded = load_config(tmp_path / "config.yaml")
    assert config_hash(reloaded) == digest


def test_a_command_reads_its_section_from_flags_and_set_as_dotted_keys() -> None:
    flags = {"generate.base_model": "m", "generate.suites": ["starter-harmful"], "generate.batch_size": None,
             "data_dir": "mirror"}
    settings = load_command_settings("generate", GenerateConfig, None, flags,
                                     ["generate.decoding.num_beams=4", "seed=3"])
    assert (settings.section.base_model, settings.section.decoding.num_beams) == ("m", 4)
    assert (settings.data_dir, settings.seed) == (Path("mirror"), 3)


def test_a_command_without_a_file_names_a_key_of_another_section_and_its_own_bad_keys() -> None:
    with pytest.raises(ConfigError) as caught:
        load_command_settings("capability", CapabilityConfig, None, {}, ["train.lora.r=4", "capability.limit=0"])
    assert caught.value.problems == ["train: not a setting of this command"]
    with pytest.raises(ConfigError, match=r"^command line: capability.limit: Input should be greater than or equal to 1$"):
        load_command_settings("capability", CapabilityConfig, None, {}, ["capability.limit=0"])


def test_a_command_takes_its_section_from_an_experiment_file_or_its_default(tmp_path: Path) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text("data: {general: llamafactory-alpaca-en-demo, safety: paper-safety, n_general: 10, "
                    "n_safety: [0]}\n", encoding="utf-8")
    settings = load_command_settings("capability", CapabilityConfig, path, {"capability.limit": 5}, [],
                                     default=CapabilityConfig())
    assert settings.section.limit == 5
    assert load_command_settings("capability", CapabilityConfig, path, {}, [], default=CapabilityConfig()).section \
        == CapabilityConfig()
    with pytest.raises(ConfigError, match=r"exp.yaml: generate: the experiment has no generate section$"):
        load_command_settings("generate", GenerateConfig, path, {}, [])
