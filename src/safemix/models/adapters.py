"""Adapter metadata: ``safemix_adapter.json`` (:class:`AdapterInfo`) next to a LoRA adapter, finding the adapter
directory inside a training output, and checking that an adapter belongs to a base model."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from safemix.errors import first_problem, input_error
from safemix.files import write_json_atomic
from safemix.models.resolve import model_fingerprint
from safemix.prompts import TemplateName

ADAPTER_INFO_FILE = "safemix_adapter.json"


class AdapterInfo(BaseModel):
    """What generation needs to know about an adapter: ``DIR/adapter/safemix_adapter.json``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_model: str = Field(description="the base model as given to training (id, directory or built-in name)")
    base_model_fingerprint: str = Field(description="see safemix.models.resolve.model_fingerprint()")
    template: TemplateName
    train_on_inputs: bool
    cutoff_len: int = Field(gt=0, description="longest training sequence in tokens")
    step: int | None = Field(default=None, description="optimizer step of this checkpoint")
    val_loss: float | None = Field(default=None, description="validation loss at that step")
    safemix_version: str | None = None


def read_adapter_info(adapter_dir: Path) -> AdapterInfo:
    """Read ``safemix_adapter.json`` from an adapter directory (or from a training output dir's ``adapter/``).

    Raises:
        InputError: the directory holds no adapter written by safemix, or its metadata is invalid.
    """
    path = find_adapter_dir(adapter_dir) / ADAPTER_INFO_FILE
    try:
        return AdapterInfo.model_validate_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise input_error(path, "missing: not an adapter written by 'safemix train'") from None
    except ValidationError as err:
        raise input_error(path, first_problem(err)) from None


def write_adapter_info(adapter_dir: Path, info: AdapterInfo) -> None:
    """Write ``safemix_adapter.json`` into ``adapter_dir`` atomically."""
    write_json_atomic(adapter_dir / ADAPTER_INFO_FILE, info.model_dump(mode="json"))


def find_adapter_dir(path: Path) -> Path:
    """Accept an adapter directory or a training output directory that holds ``adapter/``."""
    path = Path(path)
    if not (path / "adapter_config.json").is_file() and (path / "adapter" / "adapter_config.json").is_file():
        return path / "adapter"
    return path


def check_adapter_base(adapter_dir: Path, base_model: str, resolved: Path | str) -> AdapterInfo:
    """Check that the adapter was trained on this base model.

    Raises:
        InputError: the fingerprints differ (the adapter was trained on another base).
    """
    info = read_adapter_info(adapter_dir)
    fingerprint = model_fingerprint(resolved)
    if info.base_model_fingerprint != fingerprint:
        raise input_error(
            find_adapter_dir(adapter_dir),
            f"adapter was trained on base model {info.base_model!r}, not on {base_model!r} (fingerprints differ)",
        )
    return info
