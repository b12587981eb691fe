"""The HF backend on the tiny random Llama: batching, EOS, agreement with plain transformers, adapters, resume."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from safemix.cli import main
from safemix.generate.config import DecodingConfig
from safemix.generate.hf_backend import HFGenerator
from safemix.models import model_fingerprint
from safemix.records import Prompt
from tests.conftest import REPO_ROOT
from tests.integration.conftest import build_tiny_adapter

WORDS = ["tell", "me", "how", "to", "bake", "bread", "with", "flour", "water", "salt", "and", "yeast", "in", "a", "hot", "oven", "today"]


def make_prompts(n: int, suite: str = "mine") -> list[Prompt]:
    """Prompts of many different lengths, so batches need padding."""
    return [Prompt(id=f"{suite}-{index}", suite=suite, category="general",
                   prompt=f"{index}: " + " ".join(WORDS[: 1 + (index * 7) % len(WORDS)]),
                   input="with butter" if index % 4 == 0 else "")
            for index in range(n)]


def write_prompt_file(path: Path, n: int) -> Path:
    path.write_text("".join(json.dumps({"prompt": prompt.prompt}) + "\n" for prompt in make_prompts(n)))
    return path


@pytest.fixture(scope="module")
def tiny_generator(tiny_model_dir: Path) -> HFGenerator:
    return HFGenerator.load(str(tiny_model_dir), None, "alpaca", DecodingConfig(max_new_tokens=12), batch_size=1)


@pytest.mark.parametrize("template", ["alpaca", "chat"])
def test_greedy_batched_output_equals_unbatched(tiny_model_dir: Path, template: str) -> None:
    generator = HFGenerator.load(str(tiny_model_dir), None, template, DecodingConfig(max_new_tokens=16), batch_size=1)
    prompts = make_prompts(14)
    one_by_one = generator.generate(prompts)
    generator.batch_size = 5
    batched = generator.generate(prompts)
    assert batched == one_by_one
    assert len({len(generator.tokenizer(generator.template.prompt(p.prompt, p.input))["input_ids"]) for p in prompts}) > 5


def test_stops_at_eos_in_a_batch_as_alone(tiny_generator: HFGenerator) -> None:
    prompts = make_prompts(8)
    free_running = tiny_generator.generate(prompts)
    # Declare a token the model emits mid-answer to be an EOS: answers must stop there, batched or not.
    answer_ids = tiny_generator.tokenizer(free_running[0].response, add_special_tokens=False)["input_ids"]
    stop_token = answer_ids[len(answer_ids) // 2]
    original = set(tiny_generator.eos_token_ids)
    tiny_generator.eos_token_ids = original | {stop_token}
    tiny_generator.generation_config.eos_token_id = sorted(tiny_generator.eos_token_ids)
    try:
        tiny_generator.batch_size = 1
        alone = tiny_generator.generate(prompts)
        tiny_generator.batch_size = 4
        batched = tiny_generator.generate(prompts)
    finally:
        tiny_generator.eos_token_ids = original
        tiny_generator.generation_config.eos_token_id = sorted(original)
        tiny_generator.batch_size = 1
    assert batched == alone
    assert alone[0].finish_reason == "stop" and alone[0].n_new_tokens < 12
    assert free_running[0].response.startswith(alone[0].response)
    assert all(r.finish_reason == "length" and r.n_new_tokens == 12 for r in free_running)


def test_matches_a_plain_transformers_generate_loop(tiny_generator: HFGenerator) -> None:
    import torch

    model, tokenizer = tiny_generator.model, tiny_generator.tokenizer
    for prompt, record in zip(make_prompts(3), tiny_generator.generate(make_prompts(3)), strict=True):
        inputs = tokenizer(tiny_generator.template.prompt(prompt.prompt, prompt.input), return_tensors="pt")
        with torch.no_grad():
            output = model.generate(**inputs, max_new_tokens=12, do_sample=False, num_beams=1,
                                    pad_token_id=tokenizer.pad_token_id)
        new_tokens = output[0, inputs["input_ids"].shape[1]:]
        assert record.response == tokenizer.decode(new_tokens, skip_special_tokens=True).strip()
        assert record.n_new_tokens == len(new_tokens) == 12


def test_beam_search_runs_batched(tiny_model_dir: Path) -> None:
    generator = HFGenerator.load(str(tiny_model_dir), None, "alpaca", DecodingConfig(max_new_tokens=8, num_beams=4),
                                 batch_size=3)
    records = generator.generate(make_prompts(5))
    assert [r.id for r in records] == [f"mine-{index}" for index in range(5)]
    assert all(r.n_new_tokens <= 8 for r in records)


@pytest.fixture(scope="module")
def adapter_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA adapter on the tiny model with non-zero weights (so it changes answers), trained with 'chat'."""
    return build_tiny_adapter(tiny_model_dir, tmp_path_factory.mktemp("run") / "adapter", template="chat")


def generate_args(model: Path, out: Path, *extra: str) -> list[str]:
    return ["generate", "--base-model", str(model), "--max-new-tokens", "6", "--out", str(out), *extra]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the command line in this process (loading torch once for all tests), capturing its output."""
    import contextlib
    import io

    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr), pytest.raises(SystemExit) as exit:
        main(list(args))
    return subprocess.CompletedProcess(list(args), int(exit.value.code or 0), stdout.getvalue(), stderr.getvalue())


def test_an_adapter_is_applied_with_its_template(tiny_model_dir: Path, adapter_dir: Path, tmp_path: Path) -> None:
    prompts = write_prompt_file(tmp_path / "mine.jsonl", 6)
    suite = ["--suite", str(prompts), "--suite-category", "general", "--quiet"]
    base = run_cli(*generate_args(tiny_model_dir, tmp_path / "base", *suite, "--template", "chat"))
    tuned = run_cli(*generate_args(tiny_model_dir, tmp_path / "tuned", *suite, "--adapter", str(adapter_dir)))
    assert base.returncode == 0 and tuned.returncode == 0, base.stderr + tuned.stderr
    settings = json.loads((tmp_path / "tuned" / "manifest.json").read_text())["settings"]
    assert settings["template"] == "chat" and len(settings["adapter"]["sha256"]) == 64
    assert settings["model"]["fingerprint"] == model_fingerprint(tiny_model_dir)
    assert (tmp_path / "base" / "mine.jsonl").read_text() != (tmp_path / "tuned" / "mine.jsonl").read_text()


def test_adapter_template_mismatch_and_foreign_base_exit_2(tiny_model_dir: Path, adapter_dir: Path,
                                                           tmp_path: Path) -> None:
    prompts = write_prompt_file(tmp_path / "mine.jsonl", 2)
    suite = ["--suite", str(prompts), "--suite-category", "general", "--adapter", str(adapter_dir)]
    mismatch = run_cli(*generate_args(tiny_model_dir, tmp_path / "a", *suite, "--template", "alpaca"))
    assert mismatch.returncode == 2
    assert mismatch.stderr.strip() == (f"safemix: error: {adapter_dir}: adapter was trained with the 'chat' template, "
                                       "not 'alpaca'; drop --template to use the adapter's")
    other_base = tmp_path / "other-base"
    shutil.copytree(tiny_model_dir, other_base)
    config = json.loads((other_base / "config.json").read_text())
    (other_base / "config.json").write_text(json.dumps({**config, "rms_norm_eps": 1e-5}))
    foreign = run_cli(*generate_args(other_base, tmp_path / "b", *suite))
    assert foreign.returncode == 2
    assert foreign.stderr.strip() == (f"safemix: error: {adapter_dir}: adapter was trained on base model "
                                      f"'{tiny_model_dir}', not on '{other_base}' (fingerprints differ)")
    assert not (tmp_path / "b").exists()


def test_batch_size_does_not_change_the_answer_files(tiny_model_dir: Path, tmp_path: Path) -> None:
    prompts = write_prompt_file(tmp_path / "mine.jsonl", 8)
    common = ["--suite", str(prompts), "--suite-category", "general", "--max-new-tokens", "16", "--dtype", "float32",
              "--quiet"]
    manifests = {}
    for batch_size in ("1", "4"):
        out = tmp_path / f"batch-{batch_size}"
        result = run_cli("generate", "--base-model", str(tiny_model_dir), "--out", str(out), "--batch-size",
                         batch_size, *common)
        assert result.returncode == 0, result.stderr
        manifests[batch_size] = json.loads((out / "manifest.json").read_text())
    assert (tmp_path / "batch-1" / "mine.jsonl").read_bytes() == (tmp_path / "batch-4" / "mine.jsonl").read_bytes()
    assert manifests["1"].pop("batch_size") == 1 and manifests["4"].pop("batch_size") == 4
    assert manifests["1"] == manifests["4"]  # the same settings, and the same answer file hash
    texts = [json.loads(line)["prompt"] for line in prompts.read_text().splitlines()]
    assert len({len(text.split()) for text in texts}) == 8  # every batch of 4 pads some prompts


def test_resume_after_kill_9_equals_an_uninterrupted_run(tiny_model_dir: Path, tmp_path: Path) -> None:
    prompts = write_prompt_file(tmp_path / "mine.jsonl", 60)
    args = ["--suite", str(prompts), "--suite-category", "general", "--batch-size", "2", "--max-new-tokens", "24",
            "--quiet"]
    whole = run_cli("generate", "--base-model", str(tiny_model_dir), "--out", str(tmp_path / "whole"), *args)
    assert whole.returncode == 0, whole.stderr

    out = tmp_path / "killed"
    command = [sys.executable, "-m", "safemix", "generate", "--base-model", str(tiny_model_dir), "--out", str(out), *args]
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    partial = out / "mine.jsonl"
    deadline = time.monotonic() + 120
    while not (partial.exists() and partial.read_text().count("\n") >= 4) and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    written = partial.read_text().count("\n")
    assert 4 <= written < 60, "the run finished before it could be killed; make it longer"
    assert json.loads((out / "manifest.json").read_text())["suites"]["mine"]["complete"] is False

    resumed = run_cli("generate", "--base-model", str(tiny_model_dir), "--out", str(out), *args)
    assert resumed.returncode == 0, resumed.stderr
    ids = [json.loads(line)["id"] for line in partial.read_text().splitlines()]
    assert ids == [f"mine-{index}" for index in range(60)]
    for name in ("mine.jsonl", "manifest.json"):
        assert (out / name).read_bytes() == (tmp_path / "whole" / name).read_bytes()


def test_the_vllm_backend_without_its_environment_says_how_to_build_it(tiny_model_dir: Path, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAFEMIX_VLLM_PYTHON", str(tmp_path / "no-vllm" / "python"))
    prompts = write_prompt_file(tmp_path / "mine.jsonl", 2)
    result = run_cli(*generate_args(tiny_model_dir, tmp_path / "out", "--backend", "vllm", "--suite", str(prompts),
                                    "--suite-category", "general"))
    assert result.returncode == 2
    assert result.stderr.strip() == (f"safemix: error: generate.vllm.python: {tmp_path / 'no-vllm' / 'python'} does not "
                                     "exist; build the vLLM environment with 'make vllm-env', set SAFEMIX_VLLM_PYTHON "
                                     "or generate.vllm.python, or give a running server's generate.vllm.url")
    assert not (tmp_path / "out" / "manifest.json").exists()  # a run that cannot start leaves no manifest behind


def test_dtype_auto_is_recorded_as_the_dtype_that_ran(tiny_model_dir: Path, tmp_path: Path) -> None:
    from safemix.models import resolve_dtype

    prompts = write_prompt_file(tmp_path / "mine.jsonl", 4)
    out = tmp_path / "auto"
    result = run_cli("generate", "--base-model", str(tiny_model_dir), "--out", str(out), "--suite", str(prompts),
                     "--suite-category", "general", "--max-new-tokens", "4", "--dtype", "auto", "--quiet")
    assert result.returncode == 0, result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["settings"]["dtype"] == resolve_dtype("auto", "cpu") != "auto"
    assert (out / "mine.jsonl").read_text().count("\n") == 4


@pytest.mark.parametrize("num_beams", [1, 4])
def test_the_generation_cache_gives_the_default_caches_answers(tiny_model_dir: Path, num_beams: int) -> None:
    import torch

    from safemix.generate.kv_cache import generation_cache

    decoding = DecodingConfig(max_new_tokens=12, num_beams=num_beams)
    generator = HFGenerator.load(str(tiny_model_dir), None, "alpaca", decoding, batch_size=8)
    texts = [generator.template.prompt(f"Repeat the word number {n} " * (1 + n % 3)) for n in range(6)]
    batch = generator.tokenizer(texts, return_tensors="pt", padding=True)
    with torch.inference_mode():
        default = generator.model.generate(**batch, generation_config=generator.generation_config)
        cache = generation_cache(generator.model, batch["input_ids"], batch["attention_mask"], num_beams, 12)
        assert cache is not None
        ours = generator.model.generate(**batch, generation_config=generator.generation_config, cache=cache)
    assert torch.equal(default, ours)
