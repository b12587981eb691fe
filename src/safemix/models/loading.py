"""Loading for generation: the tokenizer (with a pad token), the base model (dtype, device, optional bitsandbytes
quantisation) and :func:`load_model_and_tokenizer`, which puts a checked LoRA adapter on top.

torch, transformers and peft are imported inside functions only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from safemix.errors import input_error
from safemix.models.adapters import check_adapter_base, find_adapter_dir
from safemix.models.dtypes import Dtype, check_device_options, quantization_config
from safemix.models.resolve import resolve_model


def load_tokenizer(resolved: Path | str) -> Any:
    """Load a tokenizer and give it a pad token (the eos token when it has none).

    Raises:
        InputError: the model cannot be found (e.g. an HF id offline and not cached).
    """
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(resolved))
    except OSError as err:
        raise input_error(str(resolved), f"cannot load the tokenizer ({_first_line(err)})") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_base_model(
    resolved: Path | str, *, dtype: Dtype = "float32", device: str = "cpu", load_in_4bit: bool = False,
    load_in_8bit: bool = False,
) -> Any:
    """Load a causal LM with the given dtype, device and optional bitsandbytes quantisation.

    Raises:
        InputError: the model cannot be found, or an option is not available on ``device``.
    """
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as transformers_logging

    check_device_options(device, dtype, load_in_4bit, load_in_8bit)
    transformers_logging.disable_progress_bar()  # its per-file "Loading weights" bars would break safemix's own
    quantization = quantization_config(load_in_4bit, load_in_8bit, dtype)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(resolved),
            dtype=getattr(torch, dtype),
            quantization_config=quantization,
            device_map={"": device} if quantization is not None else None,
        )
    except OSError as err:
        raise input_error(str(resolved), f"cannot load the model ({_first_line(err)})") from None
    # transformers types PreTrainedModel.to for modules, not for a device string
    return model if quantization is not None else model.to(device)  # type: ignore[arg-type]


def load_model_and_tokenizer(
    base_model: str,
    adapter: Path | None = None,
    *,
    dtype: Dtype = "float32",
    device: str = "cpu",
    load_in_4bit: bool = False,
    load_in_8bit: bool = False,
) -> tuple[Any, Any]:
    """Load a base model, optionally with a LoRA adapter on top, ready for generation.

    The tokenizer has a pad token and pads on the left (what batched generation needs); the model is in eval
    mode with ``use_cache=True`` (training turns the cache off; generating without it is several times slower).

    Args:
        base_model: a built-in name, local directory or Hugging Face id.
        adapter: an adapter directory written by ``safemix train`` (or its output dir); checked against the base.
        dtype: ``float32`` (the only choice on CPU), ``bfloat16`` or ``float16``.
        device: ``cpu``, ``cuda`` or ``cuda:N``.
        load_in_4bit: load the base in 4-bit NF4 (bitsandbytes; on a CPU where it passes
            :func:`~safemix.models.dtypes.bitsandbytes_cpu_problem`).
        load_in_8bit: load the base in 8-bit (bitsandbytes; likewise).

    Returns:
        ``(model, tokenizer)``; the model is a ``PeftModel`` when an adapter is given.

    Raises:
        InputError: a missing model, an option not available on the device, or an adapter for another base.
    """
    check_device_options(device, dtype, load_in_4bit, load_in_8bit)
    resolved = resolve_model(base_model)
    if adapter is not None:
        check_adapter_base(adapter, base_model, resolved)
    tokenizer = load_tokenizer(resolved)
    tokenizer.padding_side = "left"
    model = load_base_model(resolved, dtype=dtype, device=device, load_in_4bit=load_in_4bit, load_in_8bit=load_in_8bit)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(find_adapter_dir(adapter)))
    model.config.use_cache = True
    model.eval()
    return model, tokenizer


def _first_line(err: BaseException) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
