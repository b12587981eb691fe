"""The vllm backend against a stand-in vLLM server (``tests/fake_vllm_server.py``): what safemix sends, what it
records, one server per base model in a run, and no server left behind. The real server's test is
``tests/vllm/test_vllm_cpu.py`` (``make test-vllm``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from safemix.generate.config import GenerateConfig
from safemix.generate.runner import generate_suites
from safemix.generate.vllm_backend import TemplateEncoder
from safemix.records import Prompt
from tests.conftest import run_cli
from tests.fake_vllm_server import fake_vllm_python
from tests.integration.conftest import build_tiny_adapter

SUITE = "starter-harmful"


@pytest.fixture()
def fake_vllm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point safemix at the stand-in server; return the file its requests are appended to."""
    requests = tmp_path / "requests.jsonl"
    monkeypatch.setenv("SAFEMIX_VLLM_PYTHON", str(fake_vllm_python(tmp_path)))
    monkeypatch.setenv("FAKE_VLLM_REQUESTS", str(requests))
    return requests


def _fake_servers_running() -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"fake_vllm_server.py" in command:
                pids.append(int(entry.name))
    return pids


def test_answers_come_from_the_token_ids_of_safemixs_template_through_the_adapter(
        fake_vllm: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    adapter = build_tiny_adapter(tiny_model_dir, tmp_path / "adapter", "chat")
    config = GenerateConfig(backend="vllm", base_model=str(tiny_model_dir), adapter=adapter, suites=[SUITE],
                            preset="paper", vllm={"concurrency": 4})
    manifest = generate_suites(config, tmp_path / "out", data_dir=None)
    requests = [json.loads(line) for line in fake_vllm.read_text().splitlines()]
    answers = [json.loads(line) for line in (tmp_path / "out" / f"{SUITE}.jsonl").read_text().splitlines()]
    assert len(requests) == len(answers) == manifest["suites"][SUITE]["n_prompts"]
    encoder = TemplateEncoder(tiny_model_dir, "chat")
    first = answers[0]
    sent = next(request for request in requests
                if request["prompt"] == encoder.encode(Prompt(id=first["id"], suite=SUITE, prompt=first["prompt"])))
    assert (sent["model"], sent["use_beam_search"], sent["n"], sent["temperature"], sent["max_tokens"]) == \
        ("adapter", True, 4, 0.0, 128)
    assert sent["return_token_ids"] is True and sent["stop_token_ids"] == sorted(encoder.stop_token_ids)
    assert first["response"] == encoder.decode(sent["prompt"][-3:]) and first["n_new_tokens"] == 3
    assert manifest["settings"]["backend"] == "vllm" and manifest["settings"]["adapter"]["sha256"]
    assert (tmp_path / "out" / "vllm-server.log").is_file()
    assert not _fake_servers_running()


def test_a_run_serves_every_adapter_of_a_base_model_from_one_server_and_stops_it(
        fake_vllm: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    config = {
        "name": "vllm-sweep", "seed": 0,
        "data": {"general": "starter-general", "safety": "starter-safety", "n_general": 24, "n_safety": [0, 16],
                 "val_size": 8},
        "train": {"base_model": str(tiny_model_dir), "template": "chat", "batch_size": 8, "micro_batch_size": 4,
                  "max_steps": 2, "eval_steps": 2, "warmup_steps": 1},
        "generate": {"backend": "vllm", "suites": [SUITE], "decoding": {"max_new_tokens": 8}},
        "scoring": {"scorers": [{"name": "refusal-strmatch"}]},
    }
    path = tmp_path / "vllm-sweep.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    result = run_cli("run", str(path), "--out", str(tmp_path / "run"), "--quiet")  # the fixture's environment
    assert result.returncode == 0, result.stderr
    logs = sorted((tmp_path / "run" / "logs").iterdir())
    assert [log.name for log in logs] == ["vllm-server-1.log"]
    assert "adapters ['train-k0=" in logs[0].read_text() and "train-k16=" in logs[0].read_text()
    models = [json.loads(line)["model"] for line in fake_vllm.read_text().splitlines()]
    assert sorted(set(models)) == ["base", "train-k0", "train-k16"]
    assert models.count("train-k16") == 60
    assert not _fake_servers_running()
    again = run_cli("run", str(path), "--out", str(tmp_path / "run"), "--quiet")
    assert again.returncode == 0, again.stderr
    assert len(fake_vllm.read_text().splitlines()) == len(models)  # nothing left to answer: no server started
