"""Models: the tiny model factory, resolving names, fingerprints, and loading base + adapter."""

from __future__ import annotations

from pathlib import Path

import pytest

from safemix.errors import InputError
from safemix.models import build_tiny_model, load_model_and_tokenizer, model_fingerprint, resolve_model
from safemix.models import dtypes as model_dtypes
from safemix.prompts import get_template


def file_bytes(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def test_tiny_model_is_deterministic_for_a_seed(tiny_model_dir: Path, tmp_path: Path) -> None:
    again = build_tiny_model(tmp_path / "again", seed=0)
    assert file_bytes(again) == file_bytes(tiny_model_dir)
    other = file_bytes(build_tiny_model(tmp_path / "other", seed=1))
    assert other["tokenizer.json"] == file_bytes(tiny_model_dir)["tokenizer.json"]
    assert other["model.safetensors"] != file_bytes(tiny_model_dir)["model.safetensors"]


def test_fingerprint_tells_apart_weights_of_one_architecture(tiny_model_dir: Path, tmp_path: Path) -> None:
    other = build_tiny_model(tmp_path / "other", seed=1)
    assert model_fingerprint(tiny_model_dir) == model_fingerprint(resolve_model(str(tiny_model_dir)))
    assert model_fingerprint(tiny_model_dir) != model_fingerprint(other)


def test_loaded_tiny_model_is_ready_to_generate(tiny_model_dir: Path) -> None:
    model, tokenizer = load_model_and_tokenizer(str(tiny_model_dir))
    assert not model.training and model.config.use_cache is True
    assert tokenizer.padding_side == "left" and tokenizer.pad_token == "<pad>" and tokenizer.eos_token == "</s>"
    text = "Ünïcode, digits 123 and emoji 🙂 all encode"
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text
    prompt = get_template("chat", tokenizer).prompt("Say hi", "to Bob")
    assert prompt == "<|im_start|>user\nSay hi\n\nto Bob<|im_end|>\n<|im_start|>assistant\n"
    assert 4 * len(text) > len(tokenizer(text)["input_ids"])  # BPE merges, not one token per byte


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("./no/such/dir", "./no/such/dir: model not found"),
        ("no-such-model", "no-such-model: model not found: not a directory, a Hugging Face id or a built-in name"),
    ],
)
def test_unknown_model_names(name: str, message: str) -> None:
    with pytest.raises(InputError, match="^" + message):
        resolve_model(name)


def test_directory_without_config_is_not_a_model(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"not a model directory \(no config.json\)"):
        resolve_model(str(tmp_path))


def test_hub_id_offline_and_not_cached_is_one_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(InputError, match="^nobody/no-such-model: cannot load the tokenizer"):
        load_model_and_tokenizer("nobody/no-such-model")


def test_options_the_cpu_cannot_run_name_the_option_and_the_fix(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(InputError, match="^--dtype float16 needs a CUDA device"):
        load_model_and_tokenizer(str(tiny_model_dir), dtype="float16")
    monkeypatch.setattr(model_dtypes, "bitsandbytes_cpu_problem", lambda bits: "bitsandbytes 0.1 cannot run it")
    with pytest.raises(InputError, match=r"^--load-in-8bit on cpu: bitsandbytes 0.1 cannot run it; install safemix\[gpu\]"):
        load_model_and_tokenizer(str(tiny_model_dir), load_in_8bit=True)


def test_bfloat16_on_a_cpu_needs_native_support(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from safemix.models import resolve_dtype

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert resolve_dtype("auto", "cpu") == "float32"
    with pytest.raises(InputError, match="^--dtype bfloat16: this CPU has no native bfloat16"):
        load_model_and_tokenizer(str(tiny_model_dir), dtype="bfloat16")
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    assert resolve_dtype("auto", "cpu") == "bfloat16"
    model, _ = load_model_and_tokenizer(str(tiny_model_dir), dtype="bfloat16")
    assert next(model.parameters()).dtype == torch.bfloat16

