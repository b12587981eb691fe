"""One safemix run per run directory: a second run stops with a message naming the first; a killed run's lock is gone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from safemix.errors import InputError
from safemix.run_lock import LOCK_FILE, run_lock
from tests.conftest import REPO_ROOT, run_cli

HOLD = "import sys, time; from pathlib import Path; from safemix.run_lock import run_lock\n" \
       "with run_lock(Path(sys.argv[1])):\n    print('locked', flush=True)\n    time.sleep(120)\n"


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holding the lock of tmp_path/run."""
    process = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path / "run")], cwd=REPO_ROOT,
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stdout.readline().strip() == "locked"
    yield process
    process.kill()
    process.wait()


def test_a_second_run_is_refused_with_the_holder_named(holder: subprocess.Popen[str], tmp_path: Path) -> None:
    with pytest.raises(InputError, match=rf"another safemix run is using this run directory \(pid {holder.pid} on "), \
            run_lock(tmp_path / "run"):
        pass


def test_the_lock_of_a_killed_run_is_taken_over(holder: subprocess.Popen[str], tmp_path: Path) -> None:
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert (tmp_path / "run" / LOCK_FILE).exists()  # the file stays; the lock went with the process
    with run_lock(tmp_path / "run"):
        assert f"pid {os.getpid()} " in (tmp_path / "run" / LOCK_FILE).read_text()


def test_safemix_run_exits_2_on_a_directory_in_use_before_writing_anything(holder: subprocess.Popen[str],
                                                                          tmp_path: Path) -> None:
    result = run_cli("run", str(REPO_ROOT / "configs" / "quickstart.yaml"), "--out", str(tmp_path / "run"))
    assert result.returncode == 2
    assert "another safemix run is using this run directory" in result.stderr
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [LOCK_FILE]
