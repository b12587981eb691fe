"""Merging a LoRA adapter into its base model: a standalone checkpoint that transformers loads without peft."""

from __future__ import annotations

import logging
from pathlib import Path

from safemix.files import write_dir_atomic
from safemix.models.loading import load_model_and_tokenizer, load_tokenizer
from safemix.models.resolve import resolve_model

log = logging.getLogger(__name__)


def export_merged(base_model: str, adapter: Path, out_dir: Path) -> Path:
    """Merge ``adapter`` into ``base_model`` and save model and tokenizer to ``out_dir`` (float32, safetensors).

    Args:
        base_model: the base the adapter was trained on (built-in name, directory or Hugging Face id).
        adapter: an adapter directory written by ``safemix train``, or that run's output directory.
        out_dir: where to write the merged checkpoint (replaced if it exists).

    Raises:
        InputError: a missing model or adapter, or an adapter trained on another base.
    """
    model, _ = load_model_and_tokenizer(base_model, adapter)
    merged = model.merge_and_unload()
    tokenizer = load_tokenizer(resolve_model(base_model))  # as the base ships it (generation pads on the left)

    def save(tmp: Path) -> None:
        merged.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    write_dir_atomic(out_dir, save)
    log.info("merged %s into %s: %s", adapter, base_model, out_dir)
    return out_dir
