"""Turn ``safemix generate`` flags, an optional experiment YAML and ``--set`` overrides into a validated config."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from safemix.config import ConfigError, command_line_config, format_validation_error, validate_config
from safemix.data.suites import looks_like_path
from safemix.errors import InputError
from safemix.generate.config import GenerateConfig


class GenerateCommand(BaseModel):
    """What ``safemix generate`` reads when no experiment file is given: the ``generate`` section and a data dir."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    data_dir: Path | None = None
    generate: GenerateConfig


def suite_entries(suites: Sequence[str], category: str | None, columns: str | None) -> list[Any]:
    """Config entries for ``--suite`` values: names stay strings; files get ``--suite-category``/``--suite-columns``."""
    mapping = parse_columns(columns) if columns else {}
    return [text if not looks_like_path(text) else {"path": text, "category": category, "columns": mapping}
            for text in suites]


def parse_columns(text: str) -> dict[str, str]:
    """Parse ``--suite-columns prompt=question,id=qid`` into a mapping."""
    mapping = {}
    for part in text.split(","):
        field, sep, column = part.partition("=")
        if not sep or not field.strip() or not column.strip():
            raise InputError(f"--suite-columns {text!r}: expected FIELD=COLUMN pairs, e.g. prompt=question,id=qid")
        mapping[field.strip()] = column.strip()
    return mapping


def load_generate_command(config: Path | None, flags: dict[str, Any], overrides: Sequence[str]) -> GenerateCommand:
    """Validate the generate settings: the experiment file's ``generate`` section (if given), then flags, then ``--set``.

    Args:
        config: an experiment YAML (validated whole), or None.
        flags: dotted key -> value for every flag the user gave (None values are skipped).
        overrides: ``--set key=value`` strings, applied last.

    Raises:
        ConfigError: a setting fails validation (the message names its dotted path).
    """
    raw = command_line_config(config, flags, overrides)
    if config is not None:
        experiment = validate_config(raw, str(config))
        if experiment.generate is None:
            raise ConfigError(str(config), ["generate: the experiment has no generate section"])
        return GenerateCommand(data_dir=experiment.data_dir, generate=experiment.generate)
    raw.setdefault("generate", {})
    try:
        return GenerateCommand.model_validate(raw)
    except ValidationError as err:
        raise ConfigError("command line", format_validation_error(err)) from None
