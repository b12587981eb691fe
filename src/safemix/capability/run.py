"""Capability benchmarks for one model (a base model, or a base model with a LoRA adapter) through lm-eval.

Read top to bottom, :func:`evaluate_capability`: checks that lm-eval is installed; decides where the tasks come
from (local YAMLs over the data dir's files, or the harness's built-in tasks) and checks the local files; works
out, without loading the model, every setting that decides each task's numbers (model fingerprint, adapter
hash, data file hash, task definition, few-shot count, limit, lm-eval version); keeps each task that
``results.json`` already holds with the same settings; loads the model only if a task is left; runs each
remaining task through ``lm_eval.simple_evaluate`` with lm-eval's response cache; and writes
``samples_<task>.jsonl`` and ``results.json`` after every task, so an interrupted run redoes at most the task in
flight (and that one mostly from the response cache).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from safemix.capability.config import CapabilityConfig, TaskSource, default_cache_dir, resolve_source
from safemix.capability.local_tasks import check_local_file, local_data_file, task_definition_sha256, write_local_task
from safemix.errors import InputError, input_error
from safemix.files import canonical_json, sha256_file, sha256_text, write_json_atomic, write_jsonl_atomic
from safemix.versions import package_versions

log = logging.getLogger(__name__)

RESULTS_FILE = "results.json"
TASKS_DIR = "tasks"
EXTRA_HINT = "pip install 'safemix[eval]'"
_VERSIONED_PACKAGES = ("lm-eval", "torch", "transformers", "peft", "datasets")


def samples_file(out_dir: Path, task: str) -> Path:
    """The per-sample log of one task."""
    return out_dir / f"samples_{task}.jsonl"


def require_lm_eval() -> str:
    """Return lm-eval's version.

    Raises:
        InputError: lm-eval is not installed; the message names the extra that installs it.
    """
    try:
        import lm_eval
    except ImportError:
        raise InputError("capability benchmarks need lm-evaluation-harness, which is not installed; "
                         f"run: {EXTRA_HINT}") from None
    return str(getattr(lm_eval, "__version__", "unknown"))


def evaluate_capability(
    config: CapabilityConfig, base_model: str, adapter: Path | None, out_dir: Path, data_dir: Path | None
) -> dict[str, Any]:
    """Run the configured lm-eval tasks on a model and write ``results.json`` and ``samples_<task>.jsonl``.

    Args:
        config: tasks, few-shot count, limit, batch size, device, task source, cache.
        base_model: a built-in name, local model directory or Hugging Face id.
        adapter: a LoRA adapter written by ``safemix train`` (or its output dir), checked against the base; None
            for the base model alone.
        out_dir: the output directory (created); tasks it already holds with the same settings are not rerun.
        data_dir: the data directory holding ``capability-benchmarks/`` (local tasks).

    Returns:
        The content of ``results.json``: ``model``, ``results`` (one row per task and metric: task, metric,
        value, stderr, n, n_correct), ``tasks`` (per task: source, settings, input, n, metrics, samples file and
        its sha256, wall seconds) and ``versions``.

    Raises:
        InputError: lm-eval missing, a missing or malformed data file, a missing model, or an adapter trained on
            another base model.
    """
    lm_eval_version = require_lm_eval()
    source = resolve_source(config, data_dir)
    cache_root = default_cache_dir(config)
    inputs = {task: task_input(task, source, data_dir, config.limit, cache_root, out_dir) for task in config.tasks}
    model = describe_model(base_model, adapter)
    cache_db = response_cache(cache_root, model)
    previous = read_results(out_dir)
    results: dict[str, Any] = {"model": model, "tasks": {}, "versions": package_versions(_VERSIONED_PACKAGES)}
    lm = None
    for task in config.tasks:
        settings = task_settings(config, task, source, model, inputs[task], lm_eval_version)
        done = finished_task(previous, task, settings, out_dir)
        if done is not None:
            log.info("%s: already done with the same settings in %s", task, out_dir)
            results["tasks"][task] = done
        else:
            lm = lm if lm is not None else load_lm(model, config)
            results["tasks"][task] = run_task(lm, task, settings, inputs[task], config, out_dir, cache_db)
        results["results"] = result_rows(results["tasks"])
        write_json_atomic(out_dir / RESULTS_FILE, results)
    return results


def describe_model(base_model: str, adapter: Path | None) -> dict[str, Any]:
    """What is evaluated, without loading it: the resolved base, its fingerprint, the adapter and its hash."""
    from safemix.generate.runner import adapter_sha256
    from safemix.models.adapters import check_adapter_base, find_adapter_dir
    from safemix.models.resolve import model_fingerprint, resolve_model

    resolved = resolve_model(base_model)
    described: dict[str, Any] = {"base_model": base_model, "pretrained": str(resolved),
                                 "fingerprint": model_fingerprint(resolved), "adapter": None}
    if adapter is not None:
        check_adapter_base(adapter, base_model, resolved)
        adapter_dir = find_adapter_dir(adapter).resolve()
        described["adapter"] = {"path": str(adapter_dir), "sha256": adapter_sha256(adapter_dir)}
    return described


def task_input(
    task: str, source: TaskSource, data_dir: Path | None, limit: int | None, cache_root: Path, out_dir: Path
) -> dict[str, Any]:
    """A local task's checked data file (with its sha256) and written YAML; for a built-in task, its name only."""
    if source == "harness":
        return {"task": task}
    data_file = local_data_file(task, data_dir)
    n_rows = check_local_file(task, data_file, limit)
    yaml_path = write_local_task(task, data_file.resolve(), cache_root / "datasets", out_dir / TASKS_DIR)
    return {"task": task, "file": str(data_file), "sha256": sha256_file(data_file), "rows": n_rows,
            "task_yaml": str(yaml_path), "definition_sha256": task_definition_sha256(task)}


def task_settings(
    config: CapabilityConfig, task: str, source: TaskSource, model: dict[str, Any], task_in: dict[str, Any],
    lm_eval_version: str,
) -> dict[str, Any]:
    """Everything that decides a task's numbers; a task is rerun when any of it changes."""
    adapter = model["adapter"]
    return {
        "task": task,
        "source": source,
        "num_fewshot": config.num_fewshot,
        "limit": config.limit,
        "model_fingerprint": model["fingerprint"],
        "adapter_sha256": adapter["sha256"] if adapter else None,
        "data_sha256": task_in.get("sha256"),
        "definition_sha256": task_in.get("definition_sha256"),
        "lm_eval": lm_eval_version,
    }


def read_results(out_dir: Path) -> dict[str, Any]:
    """A previous ``results.json`` in ``out_dir`` (empty when there is none).

    Raises:
        InputError: the file exists but is not a safemix capability results file.
    """
    path = out_dir / RESULTS_FILE
    if not path.exists():
        return {}
    try:
        previous = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise input_error(path, f"not valid JSON ({err}); delete it to rerun every task") from None
    if not isinstance(previous, dict) or not isinstance(previous.get("tasks"), dict):
        raise input_error(path, "not a safemix capability results file (no 'tasks' mapping); "
                                "delete it or use another --out")
    return previous


def finished_task(
    previous: dict[str, Any], task: str, settings: dict[str, Any], out_dir: Path
) -> dict[str, Any] | None:
    """The previous result of ``task`` when it ran with the same settings and its samples file is intact."""
    done = previous.get("tasks", {}).get(task)
    if not isinstance(done, dict) or done.get("settings") != settings:
        return None
    samples = samples_file(out_dir, task)
    if not samples.is_file() or sha256_file(samples) != done.get("samples_sha256"):
        return None
    return done


def load_lm(model: dict[str, Any], config: CapabilityConfig) -> Any:
    """lm-eval's HF model (``pretrained=`` the resolved base, ``peft=`` the adapter), built once for every task."""
    from lm_eval.api.registry import get_model

    arguments: dict[str, Any] = {"pretrained": model["pretrained"]}
    if model["adapter"] is not None:
        arguments["peft"] = model["adapter"]["path"]
    log.info("loading %s%s for lm-eval", model["base_model"], " with its adapter" if model["adapter"] else "")
    return get_model("hf").create_from_arg_obj(arguments, {"batch_size": config.batch_size, "device": config.device})


def response_cache(cache_root: Path, model: dict[str, Any]) -> Path:
    """lm-eval's response cache for this model: it keys answers by request only, so one database per model
    (lm-eval appends ``_rank0.db``)."""
    adapter_sha256 = model["adapter"]["sha256"] if model["adapter"] else None
    identity = {"fingerprint": model["fingerprint"], "adapter": adapter_sha256}
    return cache_root / "responses" / sha256_text(canonical_json(identity))[:16]


def run_task(
    lm: Any, task: str, settings: dict[str, Any], task_in: dict[str, Any], config: CapabilityConfig, out_dir: Path,
    cache_db: Path,
) -> dict[str, Any]:
    """Run one task through ``lm_eval.simple_evaluate``; write its samples file; return its entry of results.json."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    if settings["source"] == "local":
        task_manager = TaskManager(include_path=str(out_dir / TASKS_DIR), include_defaults=False)
    else:
        task_manager = TaskManager()
    started = time.monotonic()
    # None leaves the tasks at zero-shot without lm-eval's warning about overriding their (unset) default.
    output = lm_eval.simple_evaluate(
        model=lm, tasks=[task], num_fewshot=config.num_fewshot or None, limit=config.limit, task_manager=task_manager,
        use_cache=str(cache_db), log_samples=True,
    )
    wall_s = time.monotonic() - started
    samples = [json.loads(json.dumps(sample, default=str)) for sample in output["samples"][task]]
    write_jsonl_atomic(samples_file(out_dir, task), samples)
    metrics = task_metrics(output["results"][task], samples)
    summary = ", ".join(f"{name} {entry['value']:.4f}" for name, entry in metrics.items())
    log.info("%s: %s (n=%d, %.1f s)", task, summary, len(samples), wall_s)
    return {
        "source": settings["source"],
        "settings": settings,
        "input": task_in,
        "n": len(samples),
        "metrics": metrics,
        "samples_file": samples_file(out_dir, task).name,
        "samples_sha256": sha256_file(samples_file(out_dir, task)),
        "wall_s": round(wall_s, 3),
        "batch_size": config.batch_size,
        "device": config.device,
    }


def task_metrics(task_results: dict[str, Any], samples: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per metric (``acc``, ``acc_norm``): lm-eval's value and stderr, and the correct count from the samples."""
    metrics: dict[str, dict[str, Any]] = {}
    for name in samples[0]["metrics"] if samples else []:
        n_correct = sum(1 for sample in samples if sample[name] == 1.0)
        stderr = task_results.get(f"{name}_stderr,none")
        metrics[name] = {"value": task_results[f"{name},none"], "stderr": stderr if isinstance(stderr, float) else None,
                         "n_correct": n_correct}
    return metrics


def result_rows(tasks: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (task, metric): task, metric, value, stderr, n, n_correct."""
    return [{"task": task, "metric": name, "value": entry["value"], "stderr": entry["stderr"], "n": done["n"],
             "n_correct": entry["n_correct"]}
            for task, done in tasks.items() for name, entry in done["metrics"].items()]
