"""The vllm backend against a real vLLM server (``make test-vllm``: vLLM's CPU build here, the CUDA build on a GPU).

SmolLM2-135M-Instruct and two LoRA adapters answer the quickstart's suites through one server, greedily, and
the same models answer them through the hf backend; the answers must mostly be the same text (float32 on both
sides; the kernels differ, so a near-tie between two tokens may go either way). The agreement is printed. The
paper's 4-beam preset runs through the server's beam search on a few prompts (short answers: vLLM's server
runs beam search a token per request, slowly on a CPU).

Skipped unless ``SAFEMIX_VLLM_PYTHON`` names the vLLM environment's python; when it does, a broken environment
fails the test instead of skipping it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from safemix.data.catalog import default_data_dir
from safemix.generate.config import GenerateConfig
from safemix.generate.runner import generate_suites
from safemix.generate.vllm_backend import VLLMServers
from safemix.models import SMOLLM2_NAME, AdapterInfo, model_fingerprint, resolve_model, write_adapter_info

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.skipif(not os.environ.get("SAFEMIX_VLLM_PYTHON"), reason="no vLLM environment (make test-vllm)"),
]

SUITES = ["starter-harmful", "starter-safe", "starter-general-prompts"]
MAX_NEW_TOKENS = 32
BEAM_NEW_TOKENS = 12
#: Share of answers that must be the same text through vLLM and through the hf backend.
MIN_AGREEMENT = 0.8


def random_adapter(out: Path, seed: int) -> Path:
    """A LoRA adapter on SmolLM2 with small random weights (it changes answers without wrecking them)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = resolve_model(SMOLLM2_NAME)
    torch.manual_seed(seed)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base),
                           LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_" in name:
                parameter.mul_(0.1)
    model.save_pretrained(out)
    write_adapter_info(out, AdapterInfo(base_model=SMOLLM2_NAME, base_model_fingerprint=model_fingerprint(base),
                                        template="chat", train_on_inputs=False, cutoff_len=256))
    return out


def answers(folder: Path) -> dict[str, str]:
    texts = {}
    for suite in SUITES:
        for line in (folder / f"{suite}.jsonl").read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            texts[record["id"]] = record["response"]
    return texts


def test_vllm_serves_smollm2_and_two_adapters_with_the_hf_backends_greedy_answers(tmp_path: Path) -> None:
    adapters = {"k-a": random_adapter(tmp_path / "adapter-a", 1), "k-b": random_adapter(tmp_path / "adapter-b", 2)}
    data_dir = default_data_dir(None)
    servers = VLLMServers({SMOLLM2_NAME: adapters}, tmp_path / "logs")
    agreement = {}
    try:
        for name, adapter in [("base", None), *adapters.items()]:
            settings = {"base_model": SMOLLM2_NAME, "adapter": adapter, "template": "chat", "suites": SUITES,
                        "decoding": {"max_new_tokens": MAX_NEW_TOKENS}}
            generate_suites(GenerateConfig(backend="vllm", **settings), tmp_path / "vllm" / name, data_dir=data_dir,
                            servers=servers)
            generate_suites(GenerateConfig(backend="hf", **settings), tmp_path / "hf" / name, data_dir=data_dir)
            served, local = answers(tmp_path / "vllm" / name), answers(tmp_path / "hf" / name)
            assert served.keys() == local.keys()
            agreement[name] = sum(served[i] == local[i] for i in local) / len(local)
        # vLLM's server runs beam search one token per request, so the beams stay short here.
        beams = GenerateConfig(backend="vllm", base_model=SMOLLM2_NAME, adapter=adapters["k-a"], template="chat",
                               suites=[{"name": "starter-harmful", "limit": 5}], preset="paper",
                               decoding={"max_new_tokens": BEAM_NEW_TOKENS})
        generate_suites(beams, tmp_path / "vllm-beams", data_dir=data_dir, servers=servers)
    finally:
        servers.close()
    print(f"vLLM vs hf, greedy, {MAX_NEW_TOKENS} new tokens: identical answers "
          + ", ".join(f"{name} {share:.1%}" for name, share in agreement.items()))
    assert len(list((tmp_path / "logs").iterdir())) == 1  # one server for the base model and both adapters
    assert all(share >= MIN_AGREEMENT for share in agreement.values()), agreement
    beam_answers = (tmp_path / "vllm-beams" / "starter-harmful.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(beam_answers) == 5 and all(json.loads(line)["response"] for line in beam_answers)
