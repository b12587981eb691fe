"""Dtypes and device options: the ``Dtype`` and ``DtypeSetting`` types, native bfloat16 and ``auto``, rejecting
options a device cannot run, whether the installed bitsandbytes runs 4/8-bit on a CPU, and the bitsandbytes
quantisation config.

torch, transformers and bitsandbytes are imported inside functions only.
"""

from __future__ import annotations

import functools
import logging
from typing import Any, Literal

from safemix.errors import InputError

#: what makes 4/8-bit loading available, in the error that says it is not
BITSANDBYTES_FIX = "install safemix[gpu] (bitsandbytes 0.50.2 runs on CUDA and on CPUs) or use a CUDA device"

# bitsandbytes 0.50.2 logs two warnings that are no news to a safemix user. Imported on a CPU with AVX512-BF16 (peft
# imports it whenever it is installed), it says it could not fetch a faster CPU inference kernel from the Hugging
# Face Hub (the `kernels` package, which safemix does not use; the CPU path works without it): a line in every
# command's output. And its 8-bit layers say on every forward pass that their inputs are cast to float16 (that is
# how LLM.int8() works): a line per layer per micro-batch.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
logging.getLogger("bitsandbytes.autograd._functions").setLevel(logging.ERROR)

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
    """Reject options the device cannot run: a CUDA device that is not there, float16 on a CPU, bfloat16 on a CPU
    without native bfloat16 arithmetic, and 4/8-bit on a CPU where the installed bitsandbytes cannot run it
    (see :func:`bitsandbytes_cpu_problem`).

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
    if dtype == "float16":
        raise InputError(f"--dtype float16 needs a CUDA device (running on {device}); use --dtype float32 on CPU")
    if load_in_4bit or load_in_8bit:
        bits: Literal[4, 8] = 4 if load_in_4bit else 8
        problem = bitsandbytes_cpu_problem(bits)
        if problem is not None:
            raise InputError(f"--load-in-{bits}bit on {device}: {problem}; {BITSANDBYTES_FIX}")


@functools.cache
def bitsandbytes_cpu_problem(bits: Literal[4, 8]) -> str | None:
    """Why the installed bitsandbytes cannot train LoRA on a ``bits``-bit base on the CPU; None when it can.

    Decided by doing it rather than by version: a 64 x 64 bitsandbytes linear layer (NF4 for 4-bit, LLM.int8() for
    8-bit) runs one validation-style pass (eval mode, no gradients) and then one training pass on the CPU, and the
    gradient it passes back must agree (cosine similarity above 0.9) with that of the float layer it was quantised
    from. It takes about 0.05 s once bitsandbytes is imported (3 s), once per process and bit width. bitsandbytes 0.50.2
    passes both (cosine 0.997 for 4-bit, 1.000 for 8-bit, with :func:`keep_4bit_layers_trainable`).
    """
    import torch

    try:
        import bitsandbytes
    except ImportError:
        return "bitsandbytes is not installed"
    try:
        with torch.random.fork_rng(devices=[]):  # the probe's random weights leave the caller's seed untouched
            torch.manual_seed(0)
            agreement = _quantised_gradient_agreement(bitsandbytes, bits)
    except Exception as err:  # a release without CPU kernels fails in its own way; each means "not here"
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return f"bitsandbytes {bitsandbytes.__version__} cannot run {bits}-bit layers on a CPU ({message})"
    if not agreement > 0.9:  # also catches NaN
        return (f"bitsandbytes {bitsandbytes.__version__} gives wrong gradients through {bits}-bit layers on a CPU "
                f"(cosine similarity {agreement:.2f} with the float layer's)")
    return None


def keep_4bit_layers_trainable(model: Any) -> None:
    """Stop bitsandbytes from repacking a model's CPU 4-bit weights for inference, which would silently stop training.

    On a CPU with AVX512-BF16, bitsandbytes 0.50.2 repacks a ``Linear4bit``'s weights for its fused bfloat16
    inference kernel the first time the layer runs in eval mode without gradients (as validation does) and keeps
    them packed; that kernel has no backward, so no gradient flows through the 4-bit layers after it. Measured on
    the tiny model: the LoRA weights got no gradient at all until a checkpoint save unpacked the weights. Layers
    without the packing (8-bit, float) are left as they are.
    """
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


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
        raise InputError(f"--load-in-4bit/--load-in-8bit: bitsandbytes is not installed; {BITSANDBYTES_FIX}") from None
    if load_in_8bit:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=getattr(torch, compute_dtype),
    )


def _quantised_gradient_agreement(bitsandbytes: Any, bits: Literal[4, 8]) -> float:
    """Cosine similarity between the input gradients of a ``bits``-bit bitsandbytes layer, after a validation-style
    pass, and of the float layer it was quantised from."""
    import torch

    reference = torch.nn.Linear(64, 64, bias=False)
    if bits == 4:
        layer = bitsandbytes.nn.Linear4bit(64, 64, bias=False, compute_dtype=torch.float32, quant_type="nf4")
    else:
        layer = bitsandbytes.nn.Linear8bitLt(64, 64, bias=False, has_fp16_weights=False)
    layer.load_state_dict(reference.state_dict())
    layer = layer.to("cpu")  # bitsandbytes quantises the weights when they are moved to a device
    keep_4bit_layers_trainable(layer)
    inputs = torch.randn(2, 64)
    layer.eval()
    with torch.no_grad():
        layer(inputs)
    layer.train()
    gradients = []
    for module in (layer, reference):
        leaf = inputs.clone().requires_grad_()
        module(leaf).sum().backward()
        gradients.append(leaf.grad if leaf.grad is not None else torch.zeros_like(leaf))
    return float(torch.nn.functional.cosine_similarity(gradients[0].flatten(), gradients[1].flatten(), dim=0))
