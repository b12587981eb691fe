"""The ``winrate`` section of an experiment config (no torch): the judge, the reference model and the suites."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from safemix.checks import distinct
from safemix.data.suites import canonical_suite_name
from safemix.errors import InputError
from safemix.generate.texts import ToolModelConfig


class JudgeConfig(ToolModelConfig):
    """The pairwise judge: a local HF model, an OpenAI-compatible endpoint, or the model-free ``fake`` judge."""

    max_new_tokens: int = Field(default=16, ge=1, description="the verdict is one word; a little room for wrappers")


class WinrateConfig(BaseModel):
    """How ``safemix run`` measures pairwise win rates: each model against ``reference`` on ``suites``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    judge: JudgeConfig
    reference: str = Field(default="base", min_length=1, description="label of the run's model every other is compared with")
    suites: list[str] = Field(default_factory=lambda: ["i-alpaca"], min_length=1,
                              description="general suites the models answered (their generations file names)")
    seed: int = Field(default=0, description="seed of the answer order (which answer the judge sees first)")
    cache_dir: Path | None = Field(default=None,
                                   description="judgement cache; default $SAFEMIX_SCORE_CACHE or ~/.cache/safemix/scores")

    @field_validator("suites")
    @classmethod
    def _canonical_distinct(cls, values: list[str]) -> list[str]:
        return list(distinct([_canonical(value) for value in values]))


def _canonical(name: str) -> str:
    """A built-in suite's canonical name (``I-Alpaca`` -> ``i-alpaca``), the file name its generations get; a file
    suite's name as it is."""
    try:
        return canonical_suite_name(name)
    except InputError:
        return name
