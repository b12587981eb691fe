"""Naming a base model: :func:`resolve_model` turns a built-in name, local directory or Hugging Face id into what
``from_pretrained`` loads, and :func:`base_model_fingerprint` identifies its weights cheaply."""

from __future__ import annotations

import hashlib
from pathlib import Path

from safemix.errors import input_error
from safemix.files import canonical_json
from safemix.models.builtin import BUILTIN_MODELS, prepare_smollm2

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")
FINGERPRINT_SAMPLE_BYTES = 1 << 20


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


def base_model_fingerprint(resolved: Path | str) -> str:
    """Identify a base model's weights cheaply, to check that an adapter belongs to it.

    For a local directory: sha256 over ``config.json`` and, for each weight file in name order, its name, size
    and first and last MiB (a safetensors file starts with its tensor index; the samples also tell apart two
    models of one architecture with different weights, without reading gigabytes). For a Hugging Face id:
    ``hf:<id>@<commit>`` when the HF cache knows the commit, else ``hf:<id>``.
    """
    if isinstance(resolved, Path):
        digest = hashlib.sha256((resolved / "config.json").read_bytes())
        for file in sorted(resolved.iterdir()):
            if file.name.endswith(WEIGHT_SUFFIXES):
                size = file.stat().st_size
                digest.update(canonical_json([file.name, size]).encode())
                with open(file, "rb") as handle:
                    digest.update(handle.read(FINGERPRINT_SAMPLE_BYTES))
                    handle.seek(max(0, size - FINGERPRINT_SAMPLE_BYTES))
                    digest.update(handle.read(FINGERPRINT_SAMPLE_BYTES))
        return "sha256:" + digest.hexdigest()
    return f"hf:{resolved}" + (f"@{commit}" if (commit := _cached_commit(resolved)) else "")


def _cached_commit(repo_id: str) -> str | None:
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(repo_id, "config.json")
    return Path(cached).parent.name if isinstance(cached, str) else None
