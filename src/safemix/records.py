"""Validated records that flow between stages as JSONL files."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

ExampleCategory = Literal["general", "safety"]
PromptCategory = Literal["harmful", "safe", "general"]
FinishReason = Literal["stop", "length"]


class Instruction(BaseModel):
    """One instruction-following example as read from a source, before it joins a mixture."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    instruction: str = Field(min_length=1)
    input: str = ""
    output: str = Field(min_length=1)


class Example(BaseModel):
    """One line of a training mixture (``mixture-K.jsonl``) or of its validation split."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(description="stable id: '<source>-<index of the record in the source file>'")
    source: str
    category: ExampleCategory
    instruction: str = Field(min_length=1)
    input: str = ""
    output: str = Field(min_length=1)


class Prompt(BaseModel):
    """One prompt of an evaluation suite."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    suite: str
    category: PromptCategory | None = None
    prompt: str = Field(min_length=1)
    input: str = ""
    meta: dict[str, str] = Field(default_factory=dict)


class Generation(BaseModel):
    """One model answer to one suite prompt: a line of ``<out>/<suite>.jsonl``.

    ``prompt`` is the suite's prompt text (not the templated model input); ``finish_reason`` is ``stop`` when the
    model ended its answer (EOS or a server stop) and ``length`` when it hit ``max_new_tokens``;
    ``n_new_tokens`` counts the answer's tokens, without the EOS.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    suite: str
    category: PromptCategory
    prompt: str = Field(min_length=1)
    response: str
    finish_reason: FinishReason
    n_new_tokens: int = Field(ge=0)


class Score(BaseModel):
    """One line of a scores file: a scorer's judgement of one response.

    ``value`` is None exactly when the item could not be scored, and then ``unscored_reason`` says why.
    Scorer-specific fields (``flagged``, ``categories``, ``probabilities``, ...) and the grouping fields copied
    from the generations (``suite``, ``category``, ``model``) are kept as extra keys.
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    id: str
    scorer: str
    value: float | None
    label: str | None = None
    unscored_reason: str | None = None

    @model_validator(mode="after")
    def _reason_iff_unscored(self) -> Score:
        if (self.value is None) != (self.unscored_reason is not None):
            raise ValueError("unscored_reason must be given exactly when value is null")
        return self
