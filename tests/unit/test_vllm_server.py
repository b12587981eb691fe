"""The vLLM server's life, with a stand-in server: command line, readiness, failed starts, and no orphans."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from safemix.errors import InputError
from safemix.generate.vllm_server import (
    BASE_NAME,
    LoraModule,
    ServerSpec,
    VLLMServer,
    lora_module,
    served_models,
    vllm_lora_rank,
    vllm_python,
)
from tests.fake_vllm_server import fake_vllm_python


def _spec(tmp_path: Path) -> ServerSpec:
    loras = (LoraModule("k0", tmp_path / "a0", 8), LoraModule("k300", tmp_path / "a300", 16))
    return ServerSpec(fake_vllm_python(tmp_path), tmp_path / "model", loras)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat", encoding="utf-8") as stat:
        return stat.read().split()[2] != "Z"  # a zombie has exited


def _wait_dead(pid: int, timeout_s: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.1)
    return False


def test_the_command_serves_the_base_model_and_every_adapter_at_a_rank_vllm_accepts(tmp_path: Path) -> None:
    command = _spec(tmp_path).command(8123)
    assert command[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
    assert command[command.index("--port") + 1] == "8123"
    assert command[command.index("--served-model-name") + 1] == BASE_NAME
    assert command[command.index("--max-lora-rank") + 1] == "16"
    assert command[command.index("--max-loras") + 1] == "2"
    assert command[command.index("--lora-modules") + 1:][:2] == [f"k0={tmp_path / 'a0'}", f"k300={tmp_path / 'a300'}"]
    assert "--enable-lora" not in ServerSpec(Path("python"), Path("model")).command(1)
    assert [vllm_lora_rank(r) for r in (1, 4, 8, 12, 64, 300)] == [1, 8, 8, 16, 64, 320]
    with pytest.raises(InputError, match="vLLM serves ranks up to 512"):
        vllm_lora_rank(1024)


def test_an_adapters_rank_is_read_from_its_config(tmp_path: Path) -> None:
    (tmp_path / "adapter_config.json").write_text('{"r": 12}', encoding="utf-8")
    assert lora_module("k25", tmp_path) == LoraModule("k25", tmp_path.resolve(), 12)
    with pytest.raises(InputError, match=r"other/adapter_config.json: cannot read the adapter's LoRA rank"):
        lora_module("x", tmp_path / "other")


def test_a_missing_vllm_environment_says_how_to_build_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SAFEMIX_VLLM_PYTHON", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match=r"\.venv-vllm/bin/python does not exist; build the vLLM environment with "
                                         r"'make vllm-env'"):
        vllm_python(None)
    monkeypatch.setenv("SAFEMIX_VLLM_PYTHON", sys.executable)
    assert vllm_python(None) == Path(sys.executable)


def test_a_started_server_serves_every_adapter_and_stops_with_its_children(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    env = {**os.environ, "FAKE_VLLM_CHILD_PIDFILE": str(pidfile)}
    with VLLMServer.start(_spec(tmp_path), tmp_path / "server.log", startup_timeout_s=30, env=env) as server:
        assert served_models(server.base_url) == [BASE_NAME, "k0", "k300"]
        assert server.process is not None
        server_pid, child_pid = server.process.pid, int(pidfile.read_text())
    assert _wait_dead(server_pid) and _wait_dead(child_pid)
    assert "fake vLLM: model" in (tmp_path / "server.log").read_text()


def test_a_server_that_exits_while_starting_is_an_error_with_its_log(tmp_path: Path) -> None:
    env = {**os.environ, "FAKE_VLLM_FAIL": "1"}
    with pytest.raises(RuntimeError, match=r"(?s)exited with code 3 while starting; last lines of .*server.log:\n"
                                           r".*failing at start as asked"):
        VLLMServer.start(_spec(tmp_path), tmp_path / "server.log", startup_timeout_s=30, env=env)


def test_a_server_outlives_no_kill_9_of_safemix(tmp_path: Path) -> None:
    driver = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        sys.path.insert(0, {str(Path.cwd())!r})
        from safemix.generate.vllm_server import LoraModule, ServerSpec, VLLMServer
        from tests.fake_vllm_server import fake_vllm_python
        folder = Path({str(tmp_path)!r})
        server = VLLMServer.start(ServerSpec(fake_vllm_python(folder), folder / "model"), folder / "server.log",
                                  startup_timeout_s=30)
        print(server.process.pid, flush=True)
        time.sleep(600)
    """)
    process = subprocess.Popen([sys.executable, "-c", driver], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    server_pid = int(process.stdout.readline())
    assert _alive(server_pid)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert _wait_dead(server_pid), "the server outlived safemix's kill -9"
