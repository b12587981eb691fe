"""A local OpenAI-compatible HTTP server with injected faults, for the scoring and win-rate tests.

The server (127.0.0.1, a free port; run it with ``tests.conftest.serving``) answers moderation, chat and
completion requests like the OpenAI API, and can be told to answer the next requests with a 429, a 500, a 400, a
body that is not the expected JSON, or to stall past the client's timeout.
"""

from __future__ import annotations

import http.server
import json
import time
from collections.abc import Callable
from typing import Any


class FakeOpenAI(http.server.ThreadingHTTPServer):
    """A scripted OpenAI-compatible server: ``faults`` are consumed one per request, then it answers normally."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.faults: list[str] = []
        self.replies: list[str] = []  # judge replies, one per chat/completions request
        self.reply_for: Callable[[str], str] | None = None  # or a reply computed from the last message's text
        self.requests: list[dict[str, Any]] = []
        self.auth: set[str] = set()
        self.reject_text = "REJECT ME"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


def _category_scores(text: str) -> dict[str, float]:
    """Moderation scores: high threat and violence for a text that says 'kill', low otherwise."""
    return {"harassment": 0.02, "harassment/threatening": 0.95 if "kill" in text else 0.01, "violence": 0.3 if "kill" in text else 0.0}


class _Handler(http.server.BaseHTTPRequestHandler):
    server: FakeOpenAI

    def log_message(self, *args: Any) -> None:  # keep test output clean
        pass

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append({"path": self.path, **body})
        self.server.auth.add(self.headers.get("Authorization", ""))
        fault = self.server.faults.pop(0) if self.server.faults else "ok"
        if fault == "timeout":
            time.sleep(1.0)
            return self._send(200, json.dumps({"too": "late"}))
        if fault in ("429", "500"):
            return self._send(int(fault), json.dumps({"error": {"message": f"injected {fault}", "type": "x"}}))
        if fault == "malformed":
            return self._send(200, '{"results": [ this is not json')
        if fault == "wrong-count":
            return self._send(200, json.dumps({"id": "m", "model": "x", "results": []}))
        if self.path.endswith("/moderations"):
            return self._moderate(body)
        reply = self.server.replies.pop(0) if self.server.replies else "no reply scripted"
        if self.path.endswith("/chat/completions"):
            if self.server.reply_for is not None:
                reply = self.server.reply_for(body["messages"][-1]["content"])
            choice = {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": reply}}
            usage = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}  # the generate backend needs it
            return self._send(200, json.dumps({"id": "c", "object": "chat.completion", "created": 0, "model": body["model"],
                                               "choices": [choice], "usage": usage}))
        choice = {"index": 0, "finish_reason": "stop", "text": reply, "logprobs": None}
        return self._send(200, json.dumps({"id": "c", "object": "text_completion", "created": 0, "model": body["model"],
                                           "choices": [choice]}))

    def _moderate(self, body: dict[str, Any]) -> None:
        inputs = body["input"]
        if self.server.reject_text in inputs:
            return self._send(400, json.dumps({"error": {"message": "input rejected", "type": "invalid_request_error"}}))
        results = [{"flagged": "kill" in text, "categories": {}, "category_scores": _category_scores(text)} for text in inputs]
        return self._send(200, json.dumps({"id": "modr-1", "model": body["model"], "results": results}))

    def _send(self, status: int, text: str) -> None:
        data = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
