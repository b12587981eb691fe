"""Experiment configuration: one YAML file per experiment, validated completely before any heavy import.

``--set a.b=v`` overrides are applied to the raw YAML mapping and go through the same schema. Errors carry
dotted paths (``data.n_safety.1: Input should be greater than or equal to 0``).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from safemix.capability.config import CapabilityConfig
from safemix.checks import distinct
from safemix.data.catalog import get_source
from safemix.data.mixture import SafetyFormat
from safemix.data.sources import SourceSpec
from safemix.errors import InputError, input_error, validation_problems
from safemix.executor import ExecutorConfig
from safemix.files import canonical_json, sha256_text, write_text_atomic
from safemix.generate.config import GenerateConfig, load_presets
from safemix.prompts import TemplateName
from safemix.scoring.config import ScoringConfig
from safemix.train.config import TrainConfig
from safemix.winrate.config import WinrateConfig

CONFIG_HASH_CHARS = 12
DEFAULT_FORMATS: tuple[SafetyFormat, ...] = ("instruction",)


class DataConfig(BaseModel):
    """How to build the training mixtures."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    general: SourceSpec = Field(description="general instruction data: catalog name, path or hf:id")
    safety: SourceSpec = Field(description="safety data: catalog name, path or hf:id")
    n_general: int = Field(ge=0, description="general examples in every mixture")
    n_safety: list[int] = Field(min_length=1, description="safety examples per mixture, one mixture per value")
    val_size: int = Field(default=0, ge=0, description="validation examples drawn from the general pool")
    safety_questions: SourceSpec | None = Field(
        default=None, description="the safety set in question form, paired by position ('safemix data rewrite')")
    formats: list[SafetyFormat] = Field(default_factory=lambda: list(DEFAULT_FORMATS), min_length=1,
                                        description="forms of the safety examples, one mixture set per value (a sweep axis)")

    @field_validator("general", "safety", "safety_questions")
    @classmethod
    def _holds_instructions(cls, spec: SourceSpec | None) -> SourceSpec | None:
        if spec is not None and spec.name is not None and get_source(spec.name).kind != "instructions":
            raise ValueError(f"source {spec.name!r} holds {get_source(spec.name).kind}, not instruction examples")
        return spec

    @field_validator("n_safety")
    @classmethod
    def _distinct_non_negative(cls, values: list[int]) -> list[int]:
        if any(value < 0 for value in values):
            raise ValueError("every value must be >= 0")
        return list(distinct(values))

    @field_validator("formats")
    @classmethod
    def _distinct_formats(cls, values: list[SafetyFormat]) -> list[SafetyFormat]:
        return list(distinct(values))

    @model_validator(mode="after")
    def _questions_for_question_formats(self) -> DataConfig:
        needing = [name for name in self.formats if name != "instruction"]
        if needing and self.safety_questions is None:
            raise ValueError(f"formats: {needing[0]!r} needs safety_questions (the safety set in question form; "
                             "'safemix data rewrite --to question' makes one)")
        return self


class SweepConfig(BaseModel):
    """The axes ``safemix run`` sweeps besides K (``data.n_safety``): every combination becomes models to train
    and evaluate. An axis left unset takes its one value from the ``train`` / ``generate`` section."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_models: list[str] | None = Field(default=None, min_length=1, description="default: [train.base_model]")
    templates: list[TemplateName] | None = Field(default=None, min_length=1, description="default: [train.template]")
    presets: list[str] | None = Field(default=None, min_length=1, description="decoding presets; default: [generate.preset]")
    seeds: list[int] | None = Field(
        default=None, min_length=1,
        description="seeds of the mixture sampling and the training, one adapter per (seed, K); default: [seed]")
    include_base_model: bool = Field(default=True, description="also evaluate each untuned base model")

    @field_validator("base_models", "templates", "presets", "seeds")
    @classmethod
    def _distinct(cls, values: list[Any] | None) -> list[Any] | None:
        return None if values is None else list(distinct(values))

    @field_validator("presets")
    @classmethod
    def _known_presets(cls, values: list[str] | None) -> list[str] | None:
        unknown = [name for name in values or [] if name not in load_presets()]
        if unknown:
            raise ValueError(f"unknown preset {unknown[0]!r}; known presets: {', '.join(load_presets())}")
        return values


class ExperimentConfig(BaseModel):
    """One experiment."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(default="experiment", min_length=1)
    seed: int = 0
    data_dir: Path | None = Field(default=None, description="local data mirror; default $SAFEMIX_DATA_DIR or ../shared/data")
    data: DataConfig
    train: TrainConfig | None = Field(default=None, description="LoRA fine-tuning settings (safemix train)")
    generate: GenerateConfig | None = Field(default=None, description="answering evaluation suites (safemix generate)")
    scoring: ScoringConfig | None = Field(default=None, description="judging generations (safemix score)")
    sweep: SweepConfig = Field(default_factory=SweepConfig, description="axes of 'safemix run' besides K")
    capability: CapabilityConfig | None = Field(default=None, description="lm-eval capability benchmarks (safemix capability)")
    winrate: WinrateConfig | None = Field(default=None, description="pairwise win rate against a reference model (safemix winrate)")
    executor: ExecutorConfig = Field(default_factory=ExecutorConfig,
                                     description="where 'safemix run' executes its tasks: here, or on a Ray cluster")


class ConfigError(InputError):
    """A config that fails validation; ``problems`` holds every ``dotted.path: message``."""

    def __init__(self, source: str, problems: list[str], lister: str = "safemix validate"):
        self.source = source
        self.problems = problems
        more = f" (and {len(problems) - 1} more; run '{lister}')" if len(problems) > 1 else ""
        super().__init__(f"{source}: {problems[0]}{more}")


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``a.b.c=value``; the value is read as YAML (``3``, ``[0, 100]``, ``true``, ``text``)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise InputError(f"--set {text!r}: expected KEY=VALUE with a dotted key, e.g. data.n_general=900")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise InputError(f"--set {text!r}: value is not valid YAML ({err})") from None
    return key.strip().split("."), value


def apply_overrides(raw: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Return a copy of ``raw`` with each ``a.b=v`` override applied (missing levels are created)."""
    result = copy.deepcopy(raw)
    for text in overrides:
        keys, value = parse_override(text)
        set_key(result, keys, value)
    return result


def set_key(raw: dict[str, Any], keys: Sequence[str], value: Any) -> None:
    """Set ``raw[k1][k2]...[kn] = value`` in place, creating missing mappings."""
    node = raw
    for depth, key in enumerate(keys[:-1]):
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise InputError(f"config key {'.'.join(keys[: depth + 1])} is not a mapping, cannot set {'.'.join(keys)}")
        node = child
    node[keys[-1]] = value


def command_line_config(
    config_file: str | Path | None, flags: Mapping[str, Any], overrides: Sequence[str]
) -> dict[str, Any]:
    """The raw config a command works from: the YAML file (if any), then its flags, then ``--set`` overrides.

    Args:
        config_file: an experiment YAML, or None.
        flags: dotted key -> value for each command-line flag; None values (flags not given) are skipped.
        overrides: ``--set key=value`` strings, applied last.
    """
    raw: dict[str, Any] = read_config_file(config_file) if config_file else {}
    for dotted, value in flags.items():
        if value is not None:
            set_key(raw, dotted.split("."), value)
    return apply_overrides(raw, overrides)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file into a mapping; syntax errors name the line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise input_error(path, "config file not found") from None
    except UnicodeDecodeError as err:
        raise input_error(path, f"not valid UTF-8 (offset {err.start})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else None
        raise input_error(path, f"invalid YAML: {getattr(err, 'problem', err)}", where) from None
    if raw is None:
        raise input_error(path, "config file is empty")
    if not isinstance(raw, dict):
        raise input_error(path, "a config must be a YAML mapping at the top level")
    return raw


def validate_config(raw: dict[str, Any], source: str = "config") -> ExperimentConfig:
    """Validate a raw mapping; raises :class:`ConfigError` listing every problem with its dotted path."""
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(source, validation_problems(err)) from None
    except InputError as err:  # raised inside a validator, e.g. an unknown catalog name
        raise ConfigError(source, [str(err)]) from None


SectionT = TypeVar("SectionT", bound=BaseModel)
COMMAND_LINE = "command line"
COMMAND_TOP_LEVEL_KEYS = ("seed", "data_dir")


@dataclass(frozen=True)
class CommandSettings(Generic[SectionT]):
    """What a single-stage command (``safemix train``, ``generate``, ``capability``) works from: its section of
    the config and the experiment-level settings it reads."""

    section: SectionT
    data_dir: Path | None
    seed: int


def load_command_settings(
    name: str, schema: type[SectionT], config_file: Path | None, flags: Mapping[str, Any], overrides: Sequence[str],
    *, default: SectionT | None = None,
) -> CommandSettings[SectionT]:
    """Validate one command's section: the experiment file (if given), then its flags, then ``--set``.

    Flags and ``--set`` both name dotted config keys (``train.lora.r``, ``generate.decoding.num_beams``,
    ``data_dir``), so a setting is spelled the same on the command line and in a file. With a file the whole
    experiment is validated; without one only ``name``'s section, ``seed`` and ``data_dir`` may be set.

    Args:
        name: the section (``train``, ``generate``, ``capability``).
        schema: the section's pydantic model.
        config_file: an experiment YAML, or None.
        flags: dotted key -> value for every flag; None values (flags not given) are skipped.
        overrides: ``--set key=value`` strings, applied last.
        default: the section when neither the file nor the command line sets any of it; None: it is required.

    Raises:
        ConfigError: a setting fails validation, or is not one of this command's (every problem with its path).
    """
    raw = command_line_config(config_file, flags, overrides)
    source = str(config_file) if config_file is not None else COMMAND_LINE
    if config_file is not None:
        experiment = validate_config(raw, source)
        section = getattr(experiment, name) or default
        if section is None:
            raise ConfigError(source, [f"{name}: the experiment has no {name} section"])
        return CommandSettings(section, experiment.data_dir, experiment.seed)
    unknown = [key for key in raw if key not in (name, *COMMAND_TOP_LEVEL_KEYS)]
    if unknown:
        raise ConfigError(source, [f"{key}: not a setting of this command" for key in unknown])
    if name not in raw and default is not None:
        section = default
    else:
        try:
            section = schema.model_validate(raw.get(name) or {})
        except ValidationError as err:
            raise ConfigError(source, validation_problems(err, within=name)) from None
    try:
        top = _CommandTopLevel.model_validate({key: raw[key] for key in COMMAND_TOP_LEVEL_KEYS if key in raw})
    except ValidationError as err:
        raise ConfigError(source, validation_problems(err)) from None
    return CommandSettings(section, top.data_dir, top.seed)


class _CommandTopLevel(BaseModel):
    """The experiment-level keys a command without a file may set."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = 0
    data_dir: Path | None = None


def load_train_settings(config_file: Path | None, flags: Mapping[str, Any], overrides: Sequence[str] = ()) -> \
        TrainConfig:
    """``safemix train``'s settings (see :func:`load_command_settings`); ``train.seed`` defaults to the
    experiment's ``seed``.

    Raises:
        ConfigError: the settings do not validate, or the experiment has no ``train`` section.
        InputError: no train or validation file is given.
    """
    settings = load_command_settings("train", TrainConfig, config_file, flags, overrides)
    train = settings.section
    if "seed" not in train.model_fields_set:
        train = train.model_copy(update={"seed": settings.seed})
    source = str(config_file) if config_file is not None else COMMAND_LINE
    for key, flag in (("train_file", "--train"), ("val_file", "--val")):
        if getattr(train, key) is None:
            raise InputError(f"{source}: train.{key} is not set (give {flag} FILE)")
    return train


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Read, override and validate an experiment config file."""
    return validate_config(apply_overrides(read_config_file(path), overrides), str(path))


def resolved_config(config: ExperimentConfig) -> dict[str, Any]:
    """The config with every default filled in, as plain JSON-compatible data."""
    return config.model_dump(mode="json")


def config_hash(config: ExperimentConfig) -> str:
    """A short, stable hash of the resolved config (names run directories; recorded in manifests). The
    ``executor`` section is left out: it decides where a run is computed, not what, so the same experiment run
    here or on a cluster is the same run."""
    settings = {key: value for key, value in resolved_config(config).items() if key != "executor"}
    return sha256_text(canonical_json(settings))[:CONFIG_HASH_CHARS]


def write_resolved_config(config: ExperimentConfig, out_dir: Path) -> str:
    """Write ``config.yaml`` (resolved, with its hash) into ``out_dir``; return the hash."""
    digest = config_hash(config)
    text = f"# resolved safemix config, hash {digest}\n" + yaml.safe_dump(resolved_config(config), sort_keys=False)
    write_text_atomic(out_dir / "config.yaml", text)
    return digest
