"""``safemix run --executor ray`` on a local two-node Ray cluster (1 CPU each) with the tiny model: the same files
as a sequential run, a worker killed during training costs only its unfinished steps, and a finished run
resubmitted does nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO_ROOT, run_cli

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install safemix[ray])")
from ray.cluster_utils import Cluster  # noqa: E402

SUITES = ["starter-harmful", "starter-safe"]
COMPARED = ["summary.csv", "metrics.json", "metrics.csv"]


def write_config(folder: Path, base_model: Path) -> Path:
    """K in {0, 16}, enough training steps (checkpointing every 4) for a worker to be killed in the middle."""
    config = {
        "name": "ray-sweep", "seed": 0,
        "data": {"general": "starter-general", "safety": "starter-safety", "n_general": 24, "n_safety": [0, 16],
                 "val_size": 8},
        "train": {"base_model": str(base_model), "template": "chat", "batch_size": 4, "micro_batch_size": 4,
                  "max_steps": 24, "eval_steps": 4, "warmup_steps": 1},
        "generate": {"suites": SUITES, "batch_size": 8, "decoding": {"max_new_tokens": 8}},
        "scoring": {"scorers": [{"name": "refusal-strmatch"}, {"name": "refusal-judge"}]},
    }
    path = folder / "ray-sweep.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def mounts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A shared folder the driver sees as ``MOUNTS/driver`` and the cluster's nodes as ``MOUNTS/node`` (the driver's
    name is a link to the nodes', so that this one machine can play both)."""
    folder = tmp_path_factory.mktemp("mounts")
    (folder / "node").mkdir()
    (folder / "driver").symlink_to(folder / "node")
    return folder


@pytest.fixture(scope="module")
def cluster(mounts: Path) -> Iterator[str]:
    """A Ray cluster of two nodes on this machine, one CPU each, whose nodes mount ``MOUNTS/driver`` at
    ``MOUNTS/node`` (``SAFEMIX_PATH_MAP``); yields its address."""
    with pytest.MonkeyPatch.context() as environment:  # the nodes' processes inherit it
        environment.setenv("SAFEMIX_PATH_MAP", f"{mounts / 'driver'}={mounts / 'node'}")
        nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
        nodes.add_node(num_cpus=1)
        nodes.wait_for_nodes()
    try:
        yield nodes.address
    finally:
        nodes.shutdown()


@pytest.fixture(scope="module")
def sequential_run(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("sequential")
    result = run_cli("run", str(write_config(folder, tiny_model_dir)), "--out", str(folder / "run"), "--quiet")
    assert result.returncode == 0, result.stderr
    return folder / "run"


def result_files(run_dir: Path) -> dict[str, bytes]:
    """Every score, answer and adapter file of a run, and its metrics and summary, by relative path."""
    paths = [*COMPARED, *(str(p.relative_to(run_dir)) for folder in ("scores", "generations", "train")
                          for p in (run_dir / folder).rglob("*")
                          if p.is_file() and (p.suffix == ".jsonl" or p.parent.name == "adapter"))]
    return {path: (run_dir / path).read_bytes() for path in sorted(paths)}


def test_a_run_on_ray_writes_the_files_of_a_sequential_run_and_survives_a_killed_worker(
        cluster: str, sequential_run: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    config = write_config(tmp_path, tiny_model_dir)
    run_dir = tmp_path / "run"
    driver = subprocess.Popen([sys.executable, "-m", "safemix", "run", str(config), "--out", str(run_dir), "--quiet",
                               "--executor", "ray", "--address", cluster], cwd=REPO_ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = kill_a_worker_during_training(run_dir / "logs" / "train-k16.log", run_dir / "train" / "k16")
    _, stderr = driver.communicate(timeout=600)
    assert driver.returncode == 0, stderr
    assert killed, "the training worker finished before it could be killed"
    log = (run_dir / "logs" / "train-k16.log").read_text(encoding="utf-8")
    assert log.count("task started") == 2 and "resuming from" in log.lower()
    assert result_files(run_dir) == result_files(sequential_run)

    results = [path for folder in ("train", "generations", "scores") for path in (run_dir / folder).rglob("*")
               if path.is_file()]
    before = {path: path.stat().st_mtime_ns for path in results}
    again = run_cli("run", str(config), "--out", str(run_dir), "--quiet", "--executor", "ray", "--address", cluster)
    assert again.returncode == 0, again.stderr
    assert [path for path in results if path.stat().st_mtime_ns != before[path]] == []  # resubmitted: nothing redone


def kill_a_worker_during_training(log_path: Path, train_dir: Path, timeout_s: float = 300.0) -> bool:
    """Wait until the training task has written its first checkpoint, then kill -9 its worker process."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        checkpoints = train_dir / "checkpoints"
        if log_path.is_file() and checkpoints.is_dir() and any(checkpoints.glob("step-*")):
            if (train_dir / "train_log.json").exists():
                return False
            os.kill(task_process(log_path), signal.SIGKILL)
            return True
        time.sleep(0.05)
    return False


def test_ctrl_c_cancels_the_clusters_tasks(cluster: str, tiny_model_dir: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    driver = subprocess.Popen([sys.executable, "-m", "safemix", "run", str(write_config(tmp_path, tiny_model_dir)),
                               "--out", str(run_dir), "--quiet", "--executor", "ray", "--address", cluster],
                              cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    worker = task_process(run_dir / "logs" / "train-k0.log")
    driver.send_signal(signal.SIGINT)
    driver.communicate(timeout=120)
    assert driver.returncode != 0
    assert wait_dead(worker), "the training task kept running after Ctrl-C"


def task_process(log_path: Path, timeout_s: float = 120.0) -> int:
    """The pid of the worker running a task, once its log says it started."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if log_path.is_file():
            started = [line for line in log_path.read_text(encoding="utf-8").splitlines() if "task started" in line]
            if started:
                return int(started[-1].split("in process ")[1].split()[0])
        time.sleep(0.05)
    raise AssertionError(f"{log_path}: the task did not start")


def wait_dead(pid: int, timeout_s: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def test_a_task_that_meets_bad_input_fails_the_run_once_with_its_error(cluster: str, tiny_model_dir: Path,
                                                                        tmp_path: Path) -> None:
    general = tmp_path / "general.jsonl"
    general.write_text('{"instruction": "Say hi", "output": "hi"}\n{"instruction": \n', encoding="utf-8")
    config = write_config(tmp_path, tiny_model_dir)
    result = run_cli("run", str(config), "--out", str(tmp_path / "run"), "--quiet", "--executor", "ray",
                     "--address", cluster, "--set", f"data.general={general}")
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"safemix: error: {general}: line 2")
    log = (tmp_path / "run" / "logs" / "data-mixtures-data.log").read_text(encoding="utf-8")
    assert log.count("task started") == 1  # an input error is not retried


def test_nodes_that_mount_the_run_directory_elsewhere_find_their_tasks_there(
        cluster: str, mounts: Path, sequential_run: Path, tiny_model_dir: Path) -> None:
    driver_view = mounts / "driver" / "run"
    config = write_config(mounts, tiny_model_dir)
    result = run_cli("run", str(config), "--out", str(driver_view), "--quiet", "--executor", "ray",
                     "--address", cluster)
    assert result.returncode == 0, result.stderr
    log = (mounts / "node" / "run" / "logs" / "train-k16.log").read_text(encoding="utf-8")
    assert f"run directory {mounts / 'node' / 'run'}," in log  # the node planned the run at its own path
    assert result_files(mounts / "node" / "run") == result_files(sequential_run)
