"""A vLLM server in its own environment, started and stopped by safemix.

vLLM pins its own torch and transformers, so it cannot share safemix's environment: it runs as a separate process
from its own Python (``generate.vllm.python``, else ``$SAFEMIX_VLLM_PYTHON``, else ``.venv-vllm/bin/python``, which
``make vllm-env`` builds) and serves the OpenAI-compatible API on a free local port. One server holds one base model
and every LoRA adapter given to it, each served under its own name, so a sweep's adapters share one engine.

The server is safemix's child for its whole life: it starts in its own process group, its log goes to a file, and
:meth:`VLLMServer.stop` (called on success, on error and on Ctrl-C) ends the whole group, first with SIGTERM, then
SIGKILL. On Linux the server is also told to receive SIGTERM when safemix itself dies, even by ``kill -9``, so no
server outlives its run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from safemix.errors import InputError, input_error

log = logging.getLogger(__name__)

PYTHON_ENV = "SAFEMIX_VLLM_PYTHON"
DEFAULT_VENV = Path(".venv-vllm")
SERVER_MODULE = "vllm.entrypoints.openai.api_server"
BASE_NAME = "base"
#: LoRA ranks vLLM accepts for ``--max-lora-rank``.
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
_LOG_TAIL_LINES = 15
_STOP_GRACE_S = 30.0
_POLL_S = 1.0
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class LoraModule:
    """An adapter the server loads, under ``name``: a PEFT adapter directory and its LoRA rank."""

    name: str
    path: Path
    rank: int


@dataclass(frozen=True)
class ServerSpec:
    """What to serve and how: everything that goes on the server's command line.

    Attributes:
        python: the vLLM environment's interpreter.
        model: the base model: a local directory (safetensors and tokenizer), or a Hugging Face id.
        loras: the adapters to serve next to the base model.
        dtype: the weights' dtype (``float32``, ``bfloat16``, ``float16``).
        max_model_len: the longest prompt plus answer, in tokens.
        memory_share: ``--gpu-memory-utilization``: the share of GPU memory (on the CPU build, of RAM) that vLLM
            takes for weights and KV cache.
        tensor_parallel_size: GPUs the model is split over.
        extra_args: further ``vllm serve`` arguments, passed as given.
    """

    python: Path
    model: Path | str
    loras: tuple[LoraModule, ...] = ()
    dtype: str = "float32"
    max_model_len: int = 2048
    memory_share: float = 0.9
    tensor_parallel_size: int = 1
    extra_args: tuple[str, ...] = ()

    def command(self, port: int) -> list[str]:
        """The server's command line, listening on ``127.0.0.1:port``."""
        command = [str(self.python), "-m", SERVER_MODULE, "--model", str(self.model),
                   "--served-model-name", BASE_NAME, "--host", "127.0.0.1", "--port", str(port),
                   "--dtype", self.dtype, "--max-model-len", str(self.max_model_len),
                   "--gpu-memory-utilization", str(self.memory_share),
                   "--tensor-parallel-size", str(self.tensor_parallel_size)]
        if self.loras:
            command += ["--enable-lora", "--max-loras", str(len(self.loras)),
                        "--max-lora-rank", str(vllm_lora_rank(max(lora.rank for lora in self.loras))),
                        "--lora-modules", *(f"{lora.name}={lora.path}" for lora in self.loras)]
        return command + list(self.extra_args)


def vllm_lora_rank(rank: int) -> int:
    """The smallest rank vLLM accepts for ``--max-lora-rank`` that holds ``rank``.

    Raises:
        InputError: the rank is larger than vLLM serves.
    """
    fitting = [allowed for allowed in VLLM_LORA_RANKS if allowed >= rank]
    if not fitting:
        raise InputError(f"LoRA rank {rank}: vLLM serves ranks up to {VLLM_LORA_RANKS[-1]}")
    return fitting[0]


def lora_module(name: str, adapter_dir: Path) -> LoraModule:
    """The server entry of one adapter directory (its rank read from ``adapter_config.json``)."""
    config_path = adapter_dir / "adapter_config.json"
    try:
        rank = int(json.loads(config_path.read_text(encoding="utf-8"))["r"])
    except (OSError, ValueError, KeyError) as err:
        raise input_error(config_path, f"cannot read the adapter's LoRA rank ({err})") from None
    return LoraModule(name, adapter_dir.resolve(), rank)


def vllm_python(configured: Path | None) -> Path:
    """The vLLM environment's interpreter: the configured one, ``$SAFEMIX_VLLM_PYTHON``, or ``.venv-vllm``'s.

    Raises:
        InputError: that interpreter does not exist.
    """
    python = configured or (Path(os.environ[PYTHON_ENV]) if os.environ.get(PYTHON_ENV) else None) \
        or DEFAULT_VENV / "bin" / "python"
    if not Path(python).is_file():
        raise InputError(f"generate.vllm.python: {python} does not exist; build the vLLM environment with "
                         f"'make vllm-env', set {PYTHON_ENV} or generate.vllm.python, or give a running server's "
                         "generate.vllm.url")
    return Path(python)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def served_models(base_url: str, timeout_s: float = 5.0) -> list[str]:
    """The model names a server at ``base_url`` (its ``/v1`` root) serves.

    Raises:
        OSError: the server does not answer (``urllib.error.URLError`` is one).
    """
    with urllib.request.urlopen(f"{base_url}/models", timeout=timeout_s) as response:
        return [str(model["id"]) for model in json.load(response)["data"]]


class VLLMServer:
    """A running vLLM server: its API root (``base_url``, ending in ``/v1``) and, when safemix started it, the
    process and its log. Use as a context manager, or call :meth:`stop`."""

    def __init__(self, base_url: str, process: subprocess.Popen[bytes] | None = None, log_path: Path | None = None):
        self.base_url = base_url
        self.process = process
        self.log_path = log_path

    @classmethod
    def start(cls, spec: ServerSpec, log_path: Path, *, startup_timeout_s: float = 900.0,
              env: dict[str, str] | None = None) -> VLLMServer:
        """Start a server for ``spec`` and wait until it serves the base model and every adapter.

        Args:
            spec: what to serve.
            log_path: the server's stdout and stderr (replaced).
            startup_timeout_s: how long loading may take.
            env: the server's environment (default: safemix's).

        Raises:
            RuntimeError: the server exited or did not come up in time (the message ends with its log's last lines).
        """
        port = free_port()
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "wb") as log_file:
            process = subprocess.Popen(spec.command(port), stdin=subprocess.DEVNULL, stdout=log_file,
                                       stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                       preexec_fn=_die_with_parent if sys.platform == "linux" else None)
        server = cls(f"http://127.0.0.1:{port}/v1", process, log_path)
        log.info("vLLM server starting on port %d with %d adapter(s); log %s", port, len(spec.loras), log_path)
        try:
            server.wait_until_serving([BASE_NAME, *(lora.name for lora in spec.loras)], startup_timeout_s)
        except BaseException:
            server.stop()
            raise
        return server

    def wait_until_serving(self, names: Sequence[str], timeout_s: float) -> None:
        """Poll the server until it lists every name in ``names``.

        Raises:
            RuntimeError: the process exited, or ``timeout_s`` passed.
        """
        started = time.monotonic()
        while True:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"the vLLM server exited with code {self.process.returncode} while starting"
                                   + self._log_tail())
            try:
                if set(names) <= set(served_models(self.base_url)):
                    log.info("vLLM server ready after %.0f s", time.monotonic() - started)
                    return
            except OSError:
                pass  # not listening yet
            if time.monotonic() - started > timeout_s:
                raise RuntimeError(f"the vLLM server did not serve {', '.join(names)} within {timeout_s:.0f} s"
                                   + self._log_tail())
            time.sleep(_POLL_S)

    def stop(self) -> None:
        """End the server's whole process group: SIGTERM, then SIGKILL after a grace period. Idempotent; a
        server safemix did not start is left running."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            _signal_group(process, signal.SIGTERM)
            try:
                process.wait(timeout=_STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                log.warning("the vLLM server did not stop within %.0f s of SIGTERM; killing it", _STOP_GRACE_S)
        _signal_group(process, signal.SIGKILL)  # also ends engine processes the server left behind
        process.wait()
        log.info("vLLM server stopped")

    def __enter__(self) -> VLLMServer:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()

    def _log_tail(self) -> str:
        if self.log_path is None or not self.log_path.is_file():
            return ""
        lines = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-_LOG_TAIL_LINES:]
        return f"; last lines of {self.log_path}:\n" + "\n".join(lines)


def _signal_group(process: subprocess.Popen[bytes], signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):  # already gone
        os.killpg(process.pid, signum)


def _die_with_parent() -> None:
    """In the server's process, before exec: receive SIGTERM when safemix's process dies (Linux prctl)."""
    import ctypes

    ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
