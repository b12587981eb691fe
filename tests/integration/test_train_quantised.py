"""Training on a 4-bit (QLoRA) or 8-bit base on the CPU, as `safemix train --load-in-4bit` / `--load-in-8bit` runs.

Skipped, with the reason, where the installed bitsandbytes cannot train on a CPU (not installed, or a release
without CPU kernels). The CUDA paths are in tests/gpu/test_train_gpu.py.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

from safemix.models import bitsandbytes_cpu_problem, load_model_and_tokenizer
from safemix.models import dtypes as model_dtypes
from tests.integration.train_cli import run_main, train_args

BITS = [pytest.param(4, id="4bit"), pytest.param(8, id="8bit")]


def needs_bitsandbytes_on_cpu(bits: int) -> None:
    problem = bitsandbytes_cpu_problem(bits)
    if problem is not None:
        pytest.skip(problem)


@pytest.fixture(scope="module", params=BITS)
def quantised_run(
    request: pytest.FixtureRequest, tiny_model_dir: Path, tiny_mixture: tuple[Path, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[int, Path]:
    """``(bits, out_dir)`` of 6 optimizer steps on the tiny model loaded in 4 or 8 bits, validated every 3 steps."""
    bits: int = request.param
    needs_bitsandbytes_on_cpu(bits)
    out = tmp_path_factory.mktemp(f"train-{bits}bit")
    extra = (f"--load-in-{bits}bit", "--max-steps", "6", "--eval-steps", "3")
    assert run_main(*train_args(tiny_model_dir, tiny_mixture, out, *extra)) == 0
    return bits, out


def test_training_on_a_quantised_base_lowers_the_loss(quantised_run: tuple[int, Path]) -> None:
    _, out = quantised_run
    log = json.loads((out / "train_log.json").read_text(encoding="utf-8"))
    train_losses = [record["loss"] for record in log["train_loss"]]
    val_losses = [record["loss"] for record in log["val_loss"]]
    assert len(train_losses) == 6 and all(math.isfinite(loss) for loss in train_losses + val_losses)
    assert train_losses[-1] < train_losses[0]
    # Each validation pass must see an adapter that moved: a base whose 4-bit weights bitsandbytes had repacked
    # for inference at step 0 passed no gradient, and the loss at step 3 equalled the step-0 loss to 5 digits.
    assert val_losses[0] > val_losses[1] > val_losses[2]
    assert (out / "adapter" / "adapter_model.safetensors").is_file()


@pytest.mark.parametrize("quantise_for_generation", [False, True], ids=["float-base", "quantised-base"])
def test_the_adapter_generates_on_the_float_and_on_the_quantised_base(
    quantise_for_generation: bool, quantised_run: tuple[int, Path], tiny_model_dir: Path
) -> None:
    bits, out = quantised_run
    load_in = {f"load_in_{bits}bit": quantise_for_generation}
    base, tokenizer = load_model_and_tokenizer(str(tiny_model_dir), **load_in)
    tuned, _ = load_model_and_tokenizer(str(tiny_model_dir), out, **load_in)
    inputs = tokenizer(["Repeat: the cat sat"], return_tensors="pt")
    with torch.no_grad():
        tuned_logits = tuned(**inputs).logits
        base_logits = base(**inputs).logits
        answer = tuned.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert torch.isfinite(tuned_logits).all()
    assert not torch.allclose(tuned_logits, base_logits, atol=1e-3)  # the trained adapter is on
    assert answer.shape == (1, inputs["input_ids"].shape[1] + 4)


@pytest.mark.parametrize("bits", BITS)
def test_the_cpu_probe_accepts_this_bitsandbytes_with_the_4bit_packing_turned_off(bits: int) -> None:
    needs_bitsandbytes_on_cpu(bits)
    assert bitsandbytes_cpu_problem.__wrapped__(bits) is None


@pytest.mark.filterwarnings("ignore:.*gemv_4bit")  # torch notes the missing backward
def test_the_cpu_probe_catches_4bit_weights_packed_for_inference(monkeypatch: pytest.MonkeyPatch) -> None:
    needs_bitsandbytes_on_cpu(4)
    import bitsandbytes

    if not bitsandbytes.nn.Linear4bit(8, 8).support_avx512bf16_for_cpu:
        pytest.skip("bitsandbytes packs 4-bit weights for inference only on CPUs with AVX512-BF16")
    monkeypatch.setattr(model_dtypes, "keep_4bit_layers_trainable", lambda model: None)
    problem = bitsandbytes_cpu_problem.__wrapped__(4)
    assert problem is not None and "gives wrong gradients through 4-bit layers on a CPU" in problem


def test_without_bitsandbytes_the_probe_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # makes `import bitsandbytes` raise ImportError
    assert bitsandbytes_cpu_problem.__wrapped__(8) == "bitsandbytes is not installed"
