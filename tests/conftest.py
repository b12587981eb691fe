"""Shared fixtures: the real data directory (skipped with a reason when absent) and CLI runners."""

from __future__ import annotations

import os
import socketserver
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
TEST_DATA = Path(__file__).resolve().parent / "data"


def find_data_dir() -> Path | None:
    """``$SAFEMIX_DATA_DIR``, else ``../shared/data`` beside the repository, else None."""
    from_env = os.environ.get("SAFEMIX_DATA_DIR")
    if from_env:
        return Path(from_env)
    sibling = REPO_ROOT.parent / "shared" / "data"
    return sibling if sibling.is_dir() else None


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The local mirror of the public data; tests that need it skip when it is absent."""
    found = find_data_dir()
    if found is None or not found.is_dir():
        pytest.skip("no data directory: set SAFEMIX_DATA_DIR or put shared/data beside the repository")
    return found


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never touch the user's download cache, and never download unless a test says so."""
    monkeypatch.setenv("SAFEMIX_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.setenv("SAFEMIX_OFFLINE", "1")


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``safemix ARGS`` in a subprocess, as a user would, and capture its output."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "safemix", *args], capture_output=True, text=True, env=full_env, cwd=cwd or REPO_ROOT
    )


ServerT = TypeVar("ServerT", bound=socketserver.BaseServer)


@contextmanager
def serving(server: ServerT) -> Iterator[ServerT]:
    """Run a test HTTP server (bound to 127.0.0.1) in a background thread for the duration of the block."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
