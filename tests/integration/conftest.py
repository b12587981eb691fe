"""Integration fixtures: the tiny random Llama (built offline once per session) and a small synthetic mixture."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

WORDS = ["the", "cat", "sat", "on", "a", "mat", "and", "the", "dog", "ran", "to", "the", "park", "where", "children", "play", "with", "a", "red", "ball"]


@pytest.fixture(scope="session", autouse=True)
def _one_cpu_thread() -> None:
    """Run the tiny models on one thread, here and in subprocesses.

    They gain nothing from intra-op threads, and on a shared 2-core machine OpenMP spin-waits made a 12-step
    tiny run take 39 s instead of 0.6 s (measured with cProfile).
    """
    import torch

    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random LlamaForCausalLM with a BPE tokenizer and a chat template (see ``build_tiny_model``)."""
    from safemix.models import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny", seed=0)


def build_tiny_adapter(base_dir: Path, out: Path, template: str) -> Path:
    """Write a LoRA adapter on the tiny model with random non-zero weights (so it changes every output), plus
    ``safemix_adapter.json`` as ``safemix train`` writes it, into ``out``."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from safemix.models import AdapterInfo, model_fingerprint, write_adapter_info

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(base_dir)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=64, target_modules=["q_proj", "v_proj"],
                                                  init_lora_weights=False))
    peft_model.save_pretrained(out)
    fingerprint = model_fingerprint(base_dir)
    write_adapter_info(out, AdapterInfo(base_model=str(base_dir), base_model_fingerprint=fingerprint, template=template,
                                        train_on_inputs=True, cutoff_len=64))
    return out


def _rows(prefix: str, n: int, answer: str) -> list[dict[str, str]]:
    rows = []
    for i in range(n):
        start = (3 * i) % len(WORDS)
        instruction = "Repeat: " + " ".join(WORDS[start : start + 3 + i % 7])
        output = answer * (2 + i % 9) if answer else " ".join(WORDS[i : i + 6])
        rows.append({"id": f"{prefix}-{i}", "source": prefix, "category": "general", "instruction": instruction,
                     "input": "", "output": output.strip()})
    return rows


@pytest.fixture(scope="session")
def tiny_mixture(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """``(train.jsonl, val.jsonl)`` in the mixture format: 48 examples answering 'zz zz ...' and 8 validation
    examples answering with ordinary words, so that training first lowers and then raises the validation loss.
    """
    folder = tmp_path_factory.mktemp("mixture")
    files = (folder / "mixture-0.jsonl", folder / "val.jsonl")
    for path, rows in zip(files, (_rows("general", 48, "zz "), _rows("val", 8, "")), strict=True):
        path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return files
