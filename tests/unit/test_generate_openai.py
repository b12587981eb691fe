"""The openai backend against a small OpenAI-compatible server on 127.0.0.1, with injected failures."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import openai
import pytest

from safemix.errors import InputError
from safemix.generate.config import DecodingConfig, GenerateConfig, OpenAIConfig
from safemix.generate.openai_backend import OpenAIGenerator
from safemix.generate.runner import generate_suites
from safemix.records import Prompt
from tests.conftest import run_cli, serving

KEY_ENV = "SAFEMIX_TEST_API_KEY"
SECRET = "sk-test-0123456789-do-not-leak"
SLOW_S = 1.0


class ChatServer(ThreadingHTTPServer):
    """Answers ``/v1/chat/completions`` with ``echo: <prompt>``; ``failures`` maps a prompt to the actions of its
    first attempts (an HTTP status such as 429, or ``"slow"`` to answer after SLOW_S seconds)."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), ChatHandler)
        self.failures: dict[str, list[int | str]] = {}
        self.attempts: dict[str, int] = {}
        self.requests: list[dict[str, Any]] = []
        self.authorization: set[str] = set()
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class ChatHandler(BaseHTTPRequestHandler):
    server: ChatServer

    def log_message(self, format: str, *args: Any) -> None:  # keep the test output clean
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        prompt = body["messages"][-1]["content"]
        with self.server.lock:
            self.server.requests.append(body)
            self.server.authorization.add(self.headers.get("Authorization", ""))
            self.server.attempts[prompt] = self.server.attempts.get(prompt, 0) + 1
            plan = self.server.failures.get(prompt, [])
            action = plan.pop(0) if plan else None
            self.server.in_flight += 1
            self.server.max_in_flight = max(self.server.max_in_flight, self.server.in_flight)
        try:
            time.sleep(SLOW_S if action == "slow" else 0.02)
            if isinstance(action, int):
                self._reply(action, {"error": {"message": f"injected {action}", "type": "test"}}, {"Retry-After": "0"})
            else:
                all_words = f"echo: {prompt}".split()
                words = all_words[: body["max_tokens"]]
                self._reply(200, {
                    "id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": body["model"],
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": " ".join(words)},
                                 "finish_reason": "length" if len(all_words) > len(words) else "stop"}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": len(words), "total_tokens": len(words) + 1},
                })
        finally:
            with self.server.lock:
                self.server.in_flight -= 1

    def _reply(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture()
def server() -> Iterator[ChatServer]:
    with serving(ChatServer()) as chat:
        yield chat


@pytest.fixture()
def prompts_file(tmp_path: Path) -> Path:
    path = tmp_path / "questions.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"question {index}"}) + "\n" for index in range(12)))
    return path


def openai_config(server: ChatServer, prompts_file: Path, **openai_fields: Any) -> GenerateConfig:
    settings = {"base_url": server.url, "api_key_env": KEY_ENV, "concurrency": 4, "backoff_s": 0.01,
                "timeout_s": 0.5, "max_retries": 3, **openai_fields}
    return GenerateConfig(backend="openai", base_model="served-model", openai=settings, decoding={"max_new_tokens": 3},
                          suites=[{"path": str(prompts_file), "category": "general"}])


def answers(path: Path) -> dict[str, dict[str, Any]]:
    return {row["id"]: row for row in map(json.loads, path.read_text().splitlines())}


def test_answers_every_prompt_with_requests_in_parallel(server: ChatServer, prompts_file: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, SECRET)
    manifest = generate_suites(openai_config(server, prompts_file), tmp_path / "out", data_dir=None)
    rows = answers(tmp_path / "out" / "questions.jsonl")
    assert rows["questions-5"] == {"id": "questions-5", "suite": "questions", "category": "general",
                                   "prompt": "question 5", "response": "echo: question 5",
                                   "finish_reason": "stop", "n_new_tokens": 3}
    assert len(rows) == 12 and len(server.requests) == 12
    assert 2 <= server.max_in_flight <= 4
    request = server.requests[0]
    assert (request["model"], request["temperature"], request["max_tokens"], request["seed"]) == ("served-model", 0.0, 3, 0)
    assert server.authorization == {f"Bearer {SECRET}"}
    assert manifest["settings"]["template"] == "server-chat"


def test_retries_429_5xx_and_timeouts_with_backoff(server: ChatServer, prompts_file: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, SECRET)
    server.failures = {"question 1": [429, 429], "question 2": [503], "question 3": ["slow"], "question 4": [500, 502]}
    generate_suites(openai_config(server, prompts_file), tmp_path / "out", data_dir=None)
    assert len(answers(tmp_path / "out" / "questions.jsonl")) == 12
    assert {f"question {n}": server.attempts[f"question {n}"] for n in range(1, 6)} == {
        "question 1": 3, "question 2": 2, "question 3": 2, "question 4": 3, "question 5": 1}


def test_a_request_that_keeps_failing_stops_the_run_and_the_rerun_resumes(
    server: ChatServer, prompts_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, SECRET)
    server.failures = {"question 7": [500, 500, 500]}
    config = openai_config(server, prompts_file, max_retries=2, concurrency=1)
    with pytest.raises(openai.InternalServerError):
        generate_suites(config, tmp_path / "out", data_dir=None)
    assert server.attempts["question 7"] == 3
    kept = answers(tmp_path / "out" / "questions.jsonl")
    assert set(kept) == {f"questions-{index}" for index in range(7)}
    server.requests.clear()
    generate_suites(config, tmp_path / "out", data_dir=None)
    assert {request["messages"][-1]["content"] for request in server.requests} == {
        f"question {index}" for index in range(7, 12)}
    assert len(server.requests) == 5
    assert list(answers(tmp_path / "out" / "questions.jsonl")) == [f"questions-{index}" for index in range(12)]


def test_a_bad_request_is_not_retried(server: ChatServer, prompts_file: Path, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, SECRET)
    server.failures = {"question 0": [400]}
    with pytest.raises(openai.BadRequestError):
        generate_suites(openai_config(server, prompts_file), tmp_path / "out", data_dir=None)
    assert server.attempts["question 0"] == 1


def test_the_key_never_reaches_files_or_logs(server: ChatServer, prompts_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_cli("--debug", "generate", "--backend", "openai", "--base-model", "served-model",
                     "--base-url", server.url, "--suite", str(prompts_file), "--suite-category", "general",
                     "--max-new-tokens", "3", "--set", f"generate.openai.api_key_env={KEY_ENV}", "--out", str(out),
                     env={KEY_ENV: SECRET})
    assert result.returncode == 0, result.stderr
    assert server.authorization == {f"Bearer {SECRET}"}
    assert SECRET not in result.stdout + result.stderr
    assert sorted(path.name for path in out.iterdir()) == ["manifest.json", "questions.jsonl"]
    assert all(SECRET not in path.read_text() for path in out.iterdir())


def test_a_missing_key_is_an_input_error(server: ChatServer, prompts_file: Path, tmp_path: Path) -> None:
    result = run_cli("generate", "--backend", "openai", "--base-model", "m", "--base-url", server.url,
                     "--suite", str(prompts_file), "--suite-category", "general",
                     "--set", "generate.openai.api_key_env=SAFEMIX_UNSET_KEY_VARIABLE", "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "safemix: error: generate.openai.api_key_env: environment variable SAFEMIX_UNSET_KEY_VARIABLE is not set "
        "(set it, or set api_key_env to '' for a server without a key)")


def test_a_server_without_a_key(server: ChatServer) -> None:
    generator = OpenAIGenerator("m", DecodingConfig(max_new_tokens=2), OpenAIConfig(base_url=server.url, api_key_env=""))
    prompt = Prompt(id="p-0", suite="p", category="safe", prompt="hello there", input="friend")
    assert generator.generate([prompt])[0].response == "echo: hello"
    assert server.requests[0]["messages"] == [{"role": "user", "content": "hello there\n\nfriend"}]
    assert server.authorization == {"Bearer no-key"}


def test_beam_search_is_refused() -> None:
    with pytest.raises(InputError, match="the openai backend cannot run beam search"):
        OpenAIGenerator("m", DecodingConfig(max_new_tokens=2, num_beams=4), OpenAIConfig(api_key_env=""))
