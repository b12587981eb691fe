"""Dtypes and device options: the ``Dtype`` and ``DtypeSetting`` types, native bfloat16 and ``auto``, rejecting
options a device cannot run, and the bitsandbytes quantisation config.

torch and transformers are imported inside functions only.
"""

from __future__ import annotations

from typing import Any, Literal

from safemix.errors import InputError

Dtype = Literal["float32", "bfloat16", "float16"]
#: a dtype as configured: ``auto`` is bfloat16 where the device computes it natively, else float32
DtypeSetting = Literal["auto", "float32", "bfloat16", "float16"]


def native_bfloat16(device: str) -> bool:
    """True when ``device`` computes in bfloat16 natively: a CUDA GPU that supports it, or a CPU with AVX512-BF16 or
    AMX (there bfloat16 matmuls run several times faster than float32 ones)."""
    import torch

    if device.startswith("cuda"):
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def resolve_dtype(dtype: DtypeSetting, device: str) -> Dtype:
    """The dtype to run in: ``auto`` becomes bfloat16 where ``device`` computes it natively, else float32."""
    if dtype != "auto":
        return dtype
    return "bfloat16" if native_bfloat16(device) else "float32"


def check_device_options(device: str, dtype: Dtype, load_in_4bit: bool, load_in_8bit: bool) -> None:
    """Reject options the device cannot run: a CUDA device that is not there, 4/8-bit or float16 on a CPU, and
    bfloat16 on a CPU without native bfloat16 arithmetic.

    Raises:
        InputError: naming the option, e.g. ``--dtype float16 needs a CUDA device``.
    """
    import torch

    if load_in_4bit and load_in_8bit:
        raise InputError("--load-in-4bit and --load-in-8bit: choose one")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {device}: no CUDA device is available")
    if device.startswith("cuda"):
        return
    if dtype == "bfloat16" and not native_bfloat16(device):
        raise InputError("--dtype bfloat16: this CPU has no native bfloat16 (AVX512-BF16 or AMX); "
                         "use --dtype float32 (or auto)")
    for option, asked in ((f"--dtype {dtype}", dtype == "float16"), ("--load-in-4bit", load_in_4bit),
                          ("--load-in-8bit", load_in_8bit)):
        if asked:
            raise InputError(f"{option} needs a CUDA device (running on {device}); use --dtype float32 on CPU")


def quantization_config(load_in_4bit: bool, load_in_8bit: bool, compute_dtype: Dtype) -> Any:
    """A ``BitsAndBytesConfig`` for 4-bit (QLoRA: NF4, double quantisation) or 8-bit loading, else None.

    Raises:
        InputError: bitsandbytes is not installed.
    """
    if not (load_in_4bit or load_in_8bit):
        return None
    import torch
    from transformers import BitsAndBytesConfig

    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise InputError("--load-in-4bit/--load-in-8bit: needs bitsandbytes; run: pip install bitsandbytes") from None
    if load_in_8bit:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=getattr(torch, compute_dtype),
    )
