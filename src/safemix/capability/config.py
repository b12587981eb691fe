"""The ``capability`` section of an experiment config (no torch): which lm-eval tasks, how many items, where from."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from safemix.checks import distinct
from safemix.data.catalog import cache_dir, offline

CapabilityTask = Literal["piqa", "boolq", "openbookqa", "arc_easy", "arc_challenge", "winogrande"]
TaskSource = Literal["local", "harness"]

# Each task's catalog source: the LLM Foundry JSONL file the local task reads (capability-benchmarks/ in the data dir).
TASK_SOURCES: dict[str, str] = {
    "piqa": "piqa",
    "boolq": "boolq",
    "openbookqa": "openbookqa",
    "arc_easy": "arc-easy",
    "arc_challenge": "arc-challenge",
    "winogrande": "winogrande",
}
PAPER_TASKS: list[CapabilityTask] = ["piqa", "boolq", "openbookqa"]
LOCAL_DATA_FOLDER = "capability-benchmarks"


class CapabilityConfig(BaseModel):
    """How ``safemix capability`` (and the capability stage of ``safemix run``) runs lm-evaluation-harness."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tasks: list[CapabilityTask] = Field(default_factory=lambda: list(PAPER_TASKS), min_length=1,
                                        description="lm-eval tasks, in this order (the paper: piqa, boolq, openbookqa)")
    num_fewshot: int = Field(default=0, ge=0, description="examples shown before each item (the paper: zero-shot)")
    limit: int | None = Field(default=None, ge=1, description="the first N items of each task; None: all of them")
    batch_size: int = Field(default=8, ge=1, description="requests per forward pass")
    device: str = Field(default="cpu", min_length=1, description="cpu, cuda or cuda:N")
    source: TaskSource | None = Field(
        default=None, description="local: safemix's task YAMLs over the data dir's JSONL files (offline); harness: "
                                  "lm-eval's built-in tasks (downloads from the Hugging Face Hub); None: local when "
                                  "capability-benchmarks/ is present or downloads are off, else harness")
    cache_dir: Path | None = Field(default=None, description="lm-eval response cache; default $SAFEMIX_LM_EVAL_CACHE "
                                                             "or ~/.cache/safemix/lm-eval")

    @field_validator("tasks")
    @classmethod
    def _distinct(cls, values: list[str]) -> list[str]:
        return list(distinct(values))


def resolve_source(config: CapabilityConfig, data_dir: Path | None) -> TaskSource:
    """The configured source, or for ``None``: ``local`` when a local copy of the benchmark files exists (data dir or
    download cache) or downloads are off, else ``harness``."""
    if config.source is not None:
        return config.source
    roots = [root for root in (data_dir, cache_dir()) if root is not None]
    if offline() or any((root / LOCAL_DATA_FOLDER).is_dir() for root in roots):
        return "local"
    return "harness"


def default_cache_dir(config: CapabilityConfig) -> Path:
    """``config.cache_dir``, else ``$SAFEMIX_LM_EVAL_CACHE``, else ``~/.cache/safemix/lm-eval``."""
    if config.cache_dir is not None:
        return config.cache_dir
    return Path(os.environ.get("SAFEMIX_LM_EVAL_CACHE") or Path.home() / ".cache" / "safemix" / "lm-eval")
