"""The index of a ``safemix run`` directory (``RUN_DIR/run.json``): which models answered which suites, and where.

The pipeline writes it when it plans a run; the report, the capability and win-rate stages and the annotation
tool read it. Paths in it are relative to the run directory. No torch here.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from safemix.errors import input_error
from safemix.files import write_json_atomic

RUN_INDEX = "run.json"


class ModelEntry(BaseModel):
    """One model of the sweep: the untuned base model (``k`` None) or an adapter trained with ``k`` safety examples.

    Attributes:
        label: unique within the run; the ``model`` field of its score lines and metric rows (``base``, ``k300``;
            with several base models, templates, formats, seeds or presets, those axes are spelled out, e.g.
            ``smollm2-135m-instruct/chat/seed1/k300``).
        model: the base model's name plus each swept axis that varies in the run except the seed, e.g.
            ``tiny [template=chat]``; the ``model`` column of ``summary.csv``. Adapters that differ only in their
            seed share it, so the report can aggregate over seeds.
        slug: the label made safe as one directory name; every per-model directory is named by it.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    label: str
    model: str
    slug: str
    base_model: str
    template: str
    preset: str
    k: int | None = Field(default=None, description="safety examples in the training mixture; None: untuned base")
    format: str | None = Field(default=None, description="the safety examples' training format, when swept")
    seed: int | None = Field(default=None, description="mixture sampling and training seed; None: untuned base")
    train_dir: str | None = Field(default=None, description="safemix train output (adapter/, train_log.json)")
    generations_dir: str = Field(description="<suite>.jsonl per suite and manifest.json")
    scores_dir: str = Field(description="<scorer>.jsonl and <scorer>.manifest.json per scorer")


class SuiteEntry(BaseModel):
    """One evaluation suite of the run."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    n_prompts: int
    categories: dict[str, int]


class RunIndex(BaseModel):
    """``RUN_DIR/run.json``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    config_hash: str
    suites: list[SuiteEntry]
    scorers: list[str] = Field(description="scorer names, in config order")
    models: list[ModelEntry]

    def model_by_label(self, label: str) -> ModelEntry:
        """The model entry with this label (KeyError when there is none)."""
        for entry in self.models:
            if entry.label == label:
                return entry
        raise KeyError(label)


def write_run_index(run_dir: Path, index: RunIndex) -> None:
    """Write ``run.json`` atomically."""
    write_json_atomic(Path(run_dir) / RUN_INDEX, index.model_dump(mode="json"))


def read_run_index(run_dir: Path) -> RunIndex:
    """Read ``RUN_DIR/run.json``.

    Raises:
        InputError: the directory holds no run index, or it does not validate.
    """
    path = Path(run_dir) / RUN_INDEX
    if not path.is_file():
        raise input_error(run_dir, f"not a safemix run directory (no {RUN_INDEX}; 'safemix run CONFIG' makes one)")
    try:
        return RunIndex.model_validate_json(path.read_text(encoding="utf-8"))
    except ValidationError as err:
        problem = err.errors()[0]
        where = ".".join(str(part) for part in problem["loc"])
        raise input_error(path, f"{where}: {problem['msg']}") from None
