"""The ``scoring`` section of an experiment config (no torch): which scorers run, with which settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from safemix.errors import InputError, first_problem


class ScorerEntry(BaseModel):
    """One scorer and its settings (``safemix scorers`` lists the names; docs/scoring.md the settings)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    settings: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _known_with_valid_settings(self) -> ScorerEntry:
        from safemix.scoring import get_scorer_info

        try:
            cls = get_scorer_info(self.name).scorer_class()
        except InputError as err:  # re-raised as ValueError so the message carries its dotted path
            raise ValueError(str(err)) from None
        try:
            cls.settings_model.model_validate(self.settings)
        except ValidationError as err:
            raise ValueError(first_problem(err, within="settings")) from None
        return self


class ScoringConfig(BaseModel):
    """How ``safemix score`` judges generations in an experiment."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    scorers: list[ScorerEntry] = Field(min_length=1)
    cache_dir: Path | None = Field(default=None, description="score cache; default $SAFEMIX_SCORE_CACHE or ~/.cache/safemix/scores")

    def settings_for(self, name: str) -> dict[str, Any]:
        """The configured settings of scorer ``name`` (empty when the config does not list it)."""
        return next((dict(entry.settings) for entry in self.scorers if entry.name == name), {})
