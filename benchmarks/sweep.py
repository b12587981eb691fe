"""A quickstart-sized sweep on the tiny model through ``safemix run --executor ray`` with one worker, then with two,
on a local Ray cluster (one CPU per worker); then the same finished run resubmitted, on Ray and locally, to
measure the scheduling overhead per task. The last line is ``speedup=X.XX`` (wall time with one worker / with two).

    python benchmarks/sweep.py

The sweep is ``configs/quickstart.yaml`` on the tiny model: K in {0, 25, 100, 300} on the starter data plus the
untuned model, three suites, the refusal judge and string match, so 4 trainings, 5 generations and 10 scorings
whose chains are independent. A first run with two workers warms the disk caches and is not counted.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from ray.cluster_utils import Cluster

from safemix.models import build_tiny_model

REPO_ROOT = Path(__file__).resolve().parents[1]


def write_config(folder: Path, base_model: Path) -> Path:
    """configs/quickstart.yaml with the tiny model as the base model."""
    config = yaml.safe_load((REPO_ROOT / "configs" / "quickstart.yaml").read_text(encoding="utf-8"))
    config["train"]["base_model"] = str(base_model)
    path = folder / "sweep-bench.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def timed_run(config: Path, run_dir: Path, *executor: str) -> float:
    """Seconds ``safemix run`` takes, from a fresh process (so both runs pay the same imports), with a score cache of
    its own beside the run directory (so that no run reuses another's judgements)."""
    env = {**os.environ, "SAFEMIX_SCORE_CACHE": str(run_dir.with_name(f"{run_dir.name}-score-cache"))}
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "safemix", "run", str(config), "--out", str(run_dir), "--quiet",
                             *executor], cwd=REPO_ROOT, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise SystemExit(result.stderr[-3000:])
    return time.perf_counter() - start


def on_cluster(n_workers: int, config: Path, run_dir: Path) -> float:
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": n_workers})
    try:
        return timed_run(config, run_dir, "--executor", "ray", "--address", cluster.address)
    finally:
        cluster.shutdown()


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        config = write_config(folder, build_tiny_model(folder / "tiny"))
        warm_up = on_cluster(2, config, folder / "warm-up")  # so that neither measured run pays for cold disk caches
        print(f"warm-up run (2 workers, not counted): {warm_up:.1f} s")
        one = on_cluster(1, config, folder / "one")
        print(f"1 worker:  {one:.1f} s")
        two = on_cluster(2, config, folder / "two")
        print(f"2 workers: {two:.1f} s")
        n_tasks = sum(1 for line in subprocess.run(
            [sys.executable, "-m", "safemix", "run", str(config), "--out", str(folder / "two"), "--dry-run"],
            cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout.splitlines()[1:])
        noop_ray = on_cluster(2, config, folder / "two")
        noop_local = timed_run(config, folder / "two")
        print(f"resubmitting the finished run ({n_tasks} tasks): ray {noop_ray:.1f} s, local {noop_local:.1f} s; "
              f"scheduling overhead {(noop_ray - noop_local) / n_tasks:.2f} s per task (connecting to the cluster included)")
    print(f"speedup={one / two:.2f}")


if __name__ == "__main__":
    main()
