"""The catalog of named public data sources, and where each one is found or fetched.

A source shipped inside the safemix package (the starter data, ``origin: {package: ...}``) is read from there.
Any other source is read from, in order: the data directory (``--data-dir``, ``SAFEMIX_DATA_DIR``, or
``../shared/data`` when it exists), laid out like that mirror; then the download cache
(``SAFEMIX_CACHE_DIR``, default ``~/.cache/safemix/data``). ``fetch`` downloads a missing source into the
cache from its public origin. Every file with a recorded sha256 is checked against it; a mismatch is an error.
"""

from __future__ import annotations

import logging
import os
import urllib.error
import urllib.request
from difflib import get_close_matches
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from safemix.errors import InputError
from safemix.files import atomic_writer, sha256_file
from safemix.records import PromptCategory

log = logging.getLogger(__name__)

SourceKind = Literal["instructions", "prompts", "labelled-completions", "multiple-choice", "reference"]
SourceFormat = Literal["alpaca", "eval-json", "xstest-csv", "csv", "jsonl", "json"]
_DOWNLOAD_TIMEOUT_S = 60
_DOWNLOAD_CHUNK_BYTES = 1 << 16


class Origin(BaseModel):
    """Where a source comes from: a raw URL at a pinned commit, a Hugging Face dataset file, or a file shipped in
    the safemix package (``package``: its path inside the package)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str | None = None
    hf_dataset: str | None = None
    revision: str | None = None
    file: str | None = None
    package: str | None = None

    @model_validator(mode="after")
    def _one_origin(self) -> Origin:
        if sum(value is not None for value in (self.url, self.hf_dataset, self.package)) != 1:
            raise ValueError("give exactly one of 'url', 'hf_dataset' or 'package'")
        if self.hf_dataset is not None and not (self.revision and self.file):
            raise ValueError("'hf_dataset' needs 'revision' and 'file'")
        return self

    @property
    def download_url(self) -> str:
        """The URL that serves the file's bytes (for a packaged file: where it sits in the package)."""
        if self.package is not None:
            return f"package:safemix/{self.package}"
        if self.url is not None:
            return self.url
        return f"https://huggingface.co/datasets/{self.hf_dataset}/resolve/{self.revision}/{self.file}"


class CatalogSource(BaseModel):
    """One named source of the built-in catalog."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = ""
    description: str
    kind: SourceKind
    format: SourceFormat
    columns: dict[str, str] = Field(default_factory=dict)
    category: PromptCategory | None = None
    mirror_path: str
    origin: Origin
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    license: str
    rows: int = Field(ge=1)


class Catalog(BaseModel):
    """The catalog file: a version and the sources by name."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal[1]
    sources: dict[str, CatalogSource]


@cache
def load_catalog() -> dict[str, CatalogSource]:
    """Return the built-in catalog, name -> source, in file order."""
    text = resources.files("safemix.data").joinpath("catalog.yaml").read_text(encoding="utf-8")
    catalog = Catalog.model_validate(yaml.safe_load(text))
    return {name: source.model_copy(update={"name": name}) for name, source in catalog.sources.items()}


def get_source(name: str) -> CatalogSource:
    """Look up a catalog source by name; an unknown name is an input error with close matches."""
    catalog = load_catalog()
    if name in catalog:
        return catalog[name]
    close = get_close_matches(name, catalog, n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else "; 'safemix data ls' lists them"
    raise InputError(f"unknown catalog source {name!r}{hint}")


def default_data_dir(explicit: str | Path | None = None) -> Path | None:
    """Return the data directory: ``explicit``, else ``$SAFEMIX_DATA_DIR``, else ``../shared/data`` if present."""
    if explicit is not None:
        path = Path(explicit)
        if not path.is_dir():
            raise InputError(f"{path}: data directory does not exist")
        return path
    from_env = os.environ.get("SAFEMIX_DATA_DIR")
    if from_env:
        path = Path(from_env)
        if not path.is_dir():
            raise InputError(f"{path}: SAFEMIX_DATA_DIR does not exist")
        return path
    sibling = Path("..", "shared", "data")
    return sibling if sibling.is_dir() else None


def cache_dir() -> Path:
    """Return the download cache: ``$SAFEMIX_CACHE_DIR`` or ``~/.cache/safemix/data``."""
    return Path(os.environ.get("SAFEMIX_CACHE_DIR") or Path.home() / ".cache" / "safemix" / "data")


def offline() -> bool:
    """True when the environment forbids downloads (``SAFEMIX_OFFLINE`` or ``HF_HUB_OFFLINE``/``HF_DATASETS_OFFLINE``)."""
    return any(os.environ.get(var, "") not in ("", "0") for var in ("SAFEMIX_OFFLINE", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def _verified(source: CatalogSource, path: Path) -> Path:
    if source.sha256 is not None:
        actual = sha256_file(path)
        if actual != source.sha256:
            raise InputError(f"{path}: sha256 mismatch for source {source.name!r}: expected {source.sha256}, got {actual}")
    return path


def local_path(source: CatalogSource, data_dir: Path | None) -> Path | None:
    """Return the verified local copy of ``source`` (packaged file; else data directory, then cache), or None."""
    if source.origin.package is not None:
        return _verified(source, Path(str(resources.files("safemix").joinpath(source.origin.package))))
    for root in (data_dir, cache_dir()):
        if root is not None and (root / source.mirror_path).is_file():
            return _verified(source, root / source.mirror_path)
    return None


def locate(name: str, data_dir: Path | None, *, download: bool = True) -> Path:
    """Return the local file of catalog source ``name``, fetching it into the cache if missing and allowed.

    Raises:
        InputError: unknown name, checksum mismatch, or the file is absent and cannot be downloaded.
    """
    source = get_source(name)
    found = local_path(source, data_dir)
    if found is not None:
        return found
    if not download or offline():
        where = f"data directory {data_dir} or cache {cache_dir()}" if data_dir else f"cache {cache_dir()} (no data directory set)"
        raise InputError(f"source {name!r} is not in the {where}, and downloads are off; run 'safemix data fetch {name}' online")
    return fetch(source)


def fetch(source: CatalogSource) -> Path:
    """Download ``source`` from its origin into the cache, verifying its sha256; return the cached file."""
    target = cache_dir() / source.mirror_path
    url = source.origin.download_url
    log.info("downloading %s from %s", source.name, url)
    try:
        with urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT_S) as response, atomic_writer(target, "wb") as handle:
            while chunk := response.read(_DOWNLOAD_CHUNK_BYTES):
                handle.write(chunk)
    except (urllib.error.URLError, TimeoutError, OSError) as err:
        raise InputError(f"{url}: download of source {source.name!r} failed: {err}") from None
    try:
        _verified(source, target)
    except InputError:
        target.unlink(missing_ok=True)
        raise
    if source.sha256 is None:
        log.warning("source %s has no pinned sha256; downloaded file hashes to %s", source.name, sha256_file(target))
    return target
