"""Source references (a catalog name, a file path, or a Hugging Face id) and loading them into records."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from safemix.data import readers
from safemix.data.catalog import get_source, load_catalog, locate
from safemix.errors import InputError
from safemix.files import sha256_file
from safemix.records import Instruction, Prompt

_HF_PREFIX = "hf:"


class SourceSpec(BaseModel):
    """A data source: exactly one of a catalog ``name``, a file ``path`` or a Hugging Face dataset ``hf`` id.

    In a config file a plain string is accepted: a catalog name, ``hf:owner/name[@revision]``, or a path.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = None
    path: Path | None = None
    hf: str | None = None
    revision: str | None = None
    split: str = "train"
    format: readers.Format = "auto"
    columns: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: object) -> object:
        return _ref_fields(value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _exactly_one(self) -> SourceSpec:
        if sum(x is not None for x in (self.name, self.path, self.hf)) != 1:
            raise ValueError("give exactly one of 'name' (catalog), 'path' or 'hf'")
        if self.name is not None:
            try:
                get_source(self.name)
            except InputError as err:  # re-raised as ValueError so the error carries its dotted path
                raise ValueError(str(err)) from None
        return self

    @property
    def label(self) -> str:
        """The name recorded as each example's ``source``: catalog name, file stem, or HF id."""
        if self.name is not None:
            return self.name
        if self.path is not None:
            return self.path.stem
        return str(self.hf)


def _ref_fields(text: str) -> dict[str, object]:
    if text.startswith(_HF_PREFIX):
        dataset_id, _, revision = text[len(_HF_PREFIX) :].partition("@")
        return {"hf": dataset_id, "revision": revision or None}
    as_path = Path(text)
    if "/" in text or "\\" in text or as_path.suffix or as_path.exists():
        return {"path": as_path}
    return {"name": text}


@dataclass(frozen=True)
class LoadedSource:
    """Records read from one source, with what identifies the exact input."""

    label: str
    records: list[Instruction]
    file: str | None
    sha256: str | None


def load_instructions(spec: SourceSpec, data_dir: Path | None) -> LoadedSource:
    """Read a source of instruction examples (catalog kind ``instructions``, a file, or an HF dataset)."""
    if spec.hf is not None:
        records = readers.read_hf_instructions(spec.hf, spec.revision, spec.split, spec.columns)
        return LoadedSource(spec.label, records, f"hf:{spec.hf}@{spec.revision or 'default'}:{spec.split}", None)
    if spec.name is not None:
        source = get_source(spec.name)
        if source.kind != "instructions":
            raise InputError(f"source {spec.name!r} holds {source.kind}, not instruction examples")
        path = locate(spec.name, data_dir)
        records = readers.read_instructions(path, source.format, source.columns or None)
        return LoadedSource(spec.label, records, source.mirror_path, sha256_file(path))
    assert spec.path is not None
    records = readers.read_instructions(spec.path, spec.format, spec.columns or None)
    return LoadedSource(spec.label, records, str(spec.path), sha256_file(spec.path))


def load_catalog_prompts(name: str, data_dir: Path | None, *, download: bool = True) -> list[Prompt]:
    """Read a catalog prompt suite (kind ``prompts``) into prompts with ids ``<name>-<index or id>``."""
    source = get_source(name)
    if source.kind != "prompts":
        raise InputError(f"source {name!r} holds {source.kind}, not prompts")
    path = locate(name, data_dir, download=download)
    if source.format == "eval-json":
        return readers.read_eval_json(path, name, source.category)
    if source.format == "xstest-csv":
        return readers.read_xstest_csv(path, name)
    return readers.read_prompt_rows(path, name, source.columns, source.format, source.category)


def evaluation_suite_names() -> list[str]:
    """Names of every catalog source of kind ``prompts`` (the contamination guard checks them all)."""
    return [name for name, source in load_catalog().items() if source.kind == "prompts"]
