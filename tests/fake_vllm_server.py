"""A stand-in for vLLM's OpenAI-compatible server, started the way safemix starts vLLM (``PYTHON -m MODULE ARGS``
through the wrapper that :func:`fake_vllm_python` writes), for tests of the server's life and of the vllm backend.

It parses the arguments safemix passes, serves ``/v1/models`` (the base model and every ``--lora-modules`` name) and
``/v1/completions`` with token-id prompts: the answer is the words ``tok<ID>`` of the last three prompt ids (the
base model) or the same preceded by the adapter's name, its token ids are the prompt's last three, and every request
body is appended to ``$FAKE_VLLM_REQUESTS`` when set. ``FAKE_VLLM_FAIL=1`` makes it exit while starting;
``FAKE_VLLM_CHILD_PIDFILE=PATH`` makes it start a child process (its pid written there) that only a group kill ends.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

STARTUP_DELAY_S = 0.5


def fake_vllm_python(folder: Path) -> Path:
    """Write an executable that runs this fake server whatever module it is asked for; return its path."""
    wrapper = folder / "fake-vllm-python"
    wrapper.write_text(f"#!/bin/sh\nshift 2\nexec {sys.executable} {Path(__file__).resolve()} \"$@\"\n",
                       encoding="utf-8")
    wrapper.chmod(0o755)
    return wrapper


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model")
    parser.add_argument("--served-model-name")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int)
    parser.add_argument("--lora-modules", nargs="*", default=[])
    parser.add_argument("--enable-lora", action="store_true")
    return parser.parse_known_args()[0]


def _handler(names: list[str]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server API
            self._reply({"object": "list", "data": [{"id": name, "object": "model"} for name in names]})

        def do_POST(self) -> None:  # noqa: N802 - the http.server API
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if os.environ.get("FAKE_VLLM_REQUESTS"):
                with open(os.environ["FAKE_VLLM_REQUESTS"], "a", encoding="utf-8") as requests:
                    requests.write(json.dumps(body) + "\n")
            ids = list(body["prompt"])[-3:]
            words = " ".join(f"tok{token}" for token in ids)
            text = words if body["model"] == names[0] else f"{body['model']} {words}"
            choices = [{"index": i, "text": text, "finish_reason": "length", "token_ids": ids}
                       for i in range(body.get("n", 1))]
            self._reply({"id": "cmpl-fake", "object": "text_completion", "model": body["model"], "choices": choices,
                         "usage": {"prompt_tokens": len(body["prompt"]), "completion_tokens": len(ids),
                                   "total_tokens": len(body["prompt"]) + len(ids)}})

        def _reply(self, payload: dict[str, object]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the http.server API
            sys.stderr.write(format % args + "\n")

    return Handler


def main() -> None:
    """Serve until killed."""
    args = _arguments()
    print(f"fake vLLM: model {args.model}, adapters {args.lora_modules}", flush=True)
    if os.environ.get("FAKE_VLLM_FAIL"):
        print("fake vLLM: failing at start as asked", flush=True)
        sys.exit(3)
    if os.environ.get("FAKE_VLLM_CHILD_PIDFILE"):
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        Path(os.environ["FAKE_VLLM_CHILD_PIDFILE"]).write_text(str(child.pid), encoding="utf-8")
    time.sleep(STARTUP_DELAY_S)  # a server takes a moment to listen: the caller must poll
    names = [args.served_model_name, *(module.partition("=")[0] for module in args.lora_modules)]
    ThreadingHTTPServer((args.host, args.port), _handler(names)).serve_forever()


if __name__ == "__main__":
    main()
