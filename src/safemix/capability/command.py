"""Turn ``safemix capability`` flags, an optional experiment YAML and ``--set`` overrides into a validated config."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from safemix.capability.config import CapabilityConfig
from safemix.config import ConfigError, command_line_config, format_validation_error, validate_config


class CapabilityCommand(BaseModel):
    """What ``safemix capability`` reads without an experiment file: the ``capability`` section and a data dir."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    data_dir: Path | None = None
    capability: CapabilityConfig = CapabilityConfig()


def load_capability_command(config: Path | None, flags: dict[str, Any], overrides: Sequence[str]) -> CapabilityCommand:
    """Validate the capability settings: the experiment file's ``capability`` section (defaults when it has none),
    then flags, then ``--set``.

    Raises:
        ConfigError: a setting fails validation (the message names its dotted path, e.g. an unknown task with the
            known ones).
    """
    raw = command_line_config(config, flags, overrides)
    if config is not None:
        experiment = validate_config(raw, str(config))
        return CapabilityCommand(data_dir=experiment.data_dir, capability=experiment.capability or CapabilityConfig())
    try:
        return CapabilityCommand.model_validate(raw)
    except ValidationError as err:
        raise ConfigError("command line", format_validation_error(err)) from None
