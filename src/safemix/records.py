"""Validated records that flow between stages as JSONL files."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

ExampleCategory = Literal["general", "safety"]
PromptCategory = Literal["harmful", "safe", "general"]


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
