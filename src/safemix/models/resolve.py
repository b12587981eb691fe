"""Naming a model: :func:`resolve_model` turns a built-in name, local directory or Hugging Face id into what
``from_pretrained`` loads, and :func:`model_fingerprint` identifies a model's weights cheaply."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

from safemix.errors import input_error
from safemix.files import canonical_json, sha256_file, sha256_text
from safemix.models.builtin import BUILTIN_MODELS, prepare_smollm2

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")
FINGERPRINT_SAMPLE_BYTES = 1 << 20
#: How a fingerprint is computed; see :func:`model_fingerprint`.
FingerprintScheme = Literal["sampled", "listing", "weights-sha256"]


def resolve_model(name_or_path: str) -> Path | str:
    """Turn a model name into something ``from_pretrained`` loads.

    Args:
        name_or_path: a built-in name (``smollm2-135m-instruct``, prepared on first use), a local directory, or a
            Hugging Face id (``owner/name``).

    Returns:
        A local directory, or the Hugging Face id unchanged.

    Raises:
        InputError: a path that does not exist or is not a model directory.
    """
    if name_or_path in BUILTIN_MODELS:
        return prepare_smollm2()
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise input_error(path, "not a model directory (no config.json)")
        return path
    looks_like_hub_id = name_or_path.count("/") == 1 and not name_or_path.startswith((".", "/", "~"))
    if path.exists() or not looks_like_hub_id:
        builtin = ", ".join(BUILTIN_MODELS)
        raise input_error(name_or_path, f"model not found: not a directory, a Hugging Face id or a built-in name ({builtin})")
    return name_or_path


def model_fingerprint(model: Path | str, scheme: FingerprintScheme = "sampled", revision: str | None = None) -> str:
    """Identify a model's weights cheaply, without loading them.

    Fingerprints are stored (adapter metadata, generation and score manifests, score caches, the shipped refusal
    judge's card) and compared on later runs, so each use keeps the scheme it was first recorded with:

    - ``sampled`` (base models: training, adapters, generation, capability, tool models): for a local directory,
      sha256 over ``config.json`` and, for each weight file in name order, its name, size and first and last MiB
      (a safetensors file starts with its tensor index; the samples also tell apart two models of one
      architecture with different weights, without reading gigabytes); ``sha256:<hex>``. For a Hugging Face id:
      ``hf:<id>@<commit>`` when the HF cache knows the commit, else ``hf:<id>``.
    - ``listing`` (scorer models: ``harmfulness-rm``, ``llm-judge``): for a local directory, sha256 over the text
      of ``config.json`` and the names and sizes of its ``.safetensors`` / ``.bin`` files; for a Hugging Face id,
      ``<id>@<revision>`` (``default`` without one).
    - ``weights-sha256`` (the refusal judge's sentence encoder, whose card records it): sha256 of
      ``model.safetensors``.

    Args:
        model: a local model directory, or a Hugging Face id.
        scheme: how to compute it (above).
        revision: the Hugging Face revision asked for (``listing`` only).

    Raises:
        InputError: ``weights-sha256`` and the directory holds no ``model.safetensors``.
    """
    path = Path(model)
    if scheme == "weights-sha256":
        weights = path / "model.safetensors"
        if not weights.is_file():
            raise input_error(path, "no model.safetensors in the model directory")
        return sha256_file(weights)
    if scheme == "listing":
        return _listing_fingerprint(path) if path.is_dir() else f"{model}@{revision or 'default'}"
    if path.is_dir():
        return _sampled_fingerprint(path)
    return f"hf:{model}" + (f"@{commit}" if (commit := _cached_commit(str(model))) else "")


def _sampled_fingerprint(model_dir: Path) -> str:
    digest = hashlib.sha256((model_dir / "config.json").read_bytes())
    for file in sorted(model_dir.iterdir()):
        if file.name.endswith(WEIGHT_SUFFIXES):
            size = file.stat().st_size
            digest.update(canonical_json([file.name, size]).encode())
            with open(file, "rb") as handle:
                digest.update(handle.read(FINGERPRINT_SAMPLE_BYTES))
                handle.seek(max(0, size - FINGERPRINT_SAMPLE_BYTES))
                digest.update(handle.read(FINGERPRINT_SAMPLE_BYTES))
    return "sha256:" + digest.hexdigest()


def _listing_fingerprint(model_dir: Path) -> str:
    weights = sorted(file for file in model_dir.iterdir() if file.suffix in (".safetensors", ".bin"))
    config_file = model_dir / "config.json"
    config = config_file.read_text(encoding="utf-8") if config_file.is_file() else ""
    return sha256_text(config + json.dumps([(file.name, file.stat().st_size) for file in weights]))


def _cached_commit(repo_id: str) -> str | None:
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(repo_id, "config.json")
    return Path(cached).parent.name if isinstance(cached, str) else None
