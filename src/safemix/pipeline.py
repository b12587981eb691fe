"""``safemix run``: one experiment end to end — data, train per (model, K), generate, score, metrics, report.

Read top to bottom, a run: checks that the config has every section a run needs; plans the models of the sweep
(each base model x template x decoding preset: the untuned base model, and one adapter per safety format, seed
and K) and writes
``run.json``; then runs the stages in order, each over every model. Every stage skips work whose inputs and
settings are unchanged and resumes work a killed run left half done (training from its last checkpoint,
generation from the answers already appended, scoring from the score cache), so the same command after a crash
or ``kill -9`` continues where it stopped, and changing one scorer's settings re-scores without regenerating.
The run directory's layout is in docs/pipeline.md. With a ``capability`` or ``winrate`` section, those stages run
after the metrics (each skips the models it has finished). Heavy imports happen inside the stage actions.
"""

from __future__ import annotations

import logging
import re
import shutil
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safemix import scoring
from safemix.config import ConfigError, ExperimentConfig, config_hash, write_resolved_config
from safemix.executor import ExecutorConfig, Task, node_path, run_local, run_on_ray
from safemix.generate.config import GenerateConfig
from safemix.progress import progress_bar
from safemix.run_files import (
    DIRECTORY_MANIFEST,
    VALIDATION_FILE,
    GenerationManifest,
    MixtureManifest,
    ModelEntry,
    RunIndex,
    RunLayout,
    SuiteEntry,
    mixture_config_hash,
    mixture_file_name,
    model_dirs,
    read_manifest_if_present,
    read_run_index,
    write_run_index,
)
from safemix.run_lock import run_lock
from safemix.scoring.config import ScorerEntry
from safemix.train.config import TrainConfig

if TYPE_CHECKING:
    from safemix.generate.vllm_backend import VLLMServers

log = logging.getLogger(__name__)

BASE_LABEL = "base"


def run_experiment(
    experiment: ExperimentConfig, run_dir: Path, *, data_dir: Path | None, source: str = "config", dry_run: bool = False
) -> list[Task]:
    """Plan the run and, unless ``dry_run``, execute every task in order; return the tasks with their planned status.

    Args:
        experiment: the validated experiment config.
        run_dir: the run directory (created if missing).
        data_dir: the local data mirror (catalog sources and built-in suites).
        source: where the config came from, for error messages.
        dry_run: only plan: say what would run and what is already done; write nothing.

    Raises:
        ConfigError: the config lacks a section a run needs, or sets what the sweep decides.
        InputError: bad inputs found by a stage (a source, a suite, a model).
    """
    check_runnable(experiment, source)
    if dry_run:
        index = plan_index(experiment, data_dir)
        return plan_tasks(experiment, index, Path(run_dir), data_dir, vllm_servers(experiment, index, Path(run_dir)))
    with run_lock(Path(run_dir)):  # planning reads what the directory holds: no other run may change it meanwhile
        index = plan_index(experiment, data_dir)
        servers = vllm_servers(experiment, index, Path(run_dir))
        tasks = plan_tasks(experiment, index, Path(run_dir), data_dir, servers)
        write_resolved_config(experiment, run_dir)
        write_run_index(run_dir, index)
        on_node = partial(_node_task, experiment, Path(run_dir), data_dir)
        try:
            execute(tasks, experiment.executor, RunLayout(Path(run_dir)).logs, on_node)
        finally:
            if servers is not None:
                servers.close()  # also on an error or Ctrl-C: no server outlives the run
    return tasks


def _node_task(experiment: ExperimentConfig, run_dir: Path, data_dir: Path | None, task: Task) -> Callable[[], None]:
    """What a cluster node runs for ``task``: :func:`run_task_on_node` with the task's key."""
    return partial(run_task_on_node, experiment, str(run_dir), str(data_dir) if data_dir else None, task.key)


def run_task_on_node(experiment: ExperimentConfig, run_dir: str, data_dir: str | None, key: str) -> None:
    """On a cluster node: plan the run again where this node sees the run directory and the data directory
    (:func:`safemix.executor.node_path`), and run the task named ``key``. Planning reads ``run.json`` and builds the
    tasks' settings; it checks no task's status, so it costs milliseconds."""
    local_run_dir = node_path(Path(run_dir))
    local_data_dir = node_path(Path(data_dir)) if data_dir else None
    log.info("run directory %s, data directory %s", local_run_dir, local_data_dir)
    index = read_run_index(local_run_dir)
    tasks = plan_tasks(experiment, index, local_run_dir, local_data_dir,
                       vllm_servers(experiment, index, local_run_dir))
    next(task for task in tasks if task.key == key).action()


def execute(tasks: list[Task], executor: ExecutorConfig, logs_dir: Path,
            on_node: Callable[[Task], Callable[[], Any]]) -> None:
    """Run the planned tasks with the configured executor, under one progress bar (``on_node``: what a cluster node
    runs for a task)."""
    with progress_bar(len(tasks), f"safemix run ({executor.kind})", "task") as bar:
        def started(task: Task) -> None:
            bar.set_postfix_str(task.key)
            log.info("%s (%s)", task.key, task.status)

        def done(task: Task) -> None:
            bar.set_postfix_str(task.key)
            bar.update(1)

        if executor.kind == "ray":
            run_on_ray(tasks, executor, logs_dir, done, on_node)
        else:
            run_local(tasks, started, done)


def check_runnable(experiment: ExperimentConfig, source: str) -> None:
    """Every section a run needs is there, and nothing the sweep decides is set by hand."""
    problems = [f"{section}: required by 'safemix run'" for section in ("train", "generate", "scoring")
                if getattr(experiment, section) is None]
    if experiment.data.val_size == 0:
        problems.append("data.val_size: must be > 0 (training keeps the step with the lowest validation loss)")
    if experiment.train is not None:
        problems += [f"train.{key}: set by 'safemix run' (the mixtures it builds); remove it"
                     for key in ("train_file", "val_file") if getattr(experiment.train, key) is not None]
        if experiment.sweep.seeds is not None and "seed" in experiment.train.model_fields_set:
            problems.append("train.seed: set by sweep.seeds (each adapter trains with its mixture's seed); remove it")
    if experiment.generate is not None:
        problems += [f"generate.{key}: set by 'safemix run' (train.base_model / sweep); remove it"
                     for key in ("base_model", "adapter") if getattr(experiment.generate, key) is not None]
        if not experiment.generate.suites:
            problems.append("generate.suites: name at least one suite ('safemix suites' lists them)")
    generate = experiment.generate
    if experiment.executor.kind == "ray" and generate is not None and generate.backend == "vllm" \
            and generate.vllm.url is None:
        problems.append("generate.vllm.url: required with executor.kind ray (the run's tasks run in many processes; "
                        "serve the models once and give the server's URL)")
    if experiment.scoring is not None:
        stems = [score_file_stem(entry) for entry in experiment.scoring.scorers]
        problems += [f"scoring.scorers: {stem!r} is listed twice" for stem in sorted({s for s in stems if stems.count(s) > 1})]
    if problems:
        raise ConfigError(source, problems, lister="safemix validate --run")


# ------------------------------------------------------------------------------------------------ the plan


def plan_index(experiment: ExperimentConfig, data_dir: Path | None) -> RunIndex:
    """The models of the sweep and the suites they answer: the content of ``run.json``."""
    from safemix.generate.runner import load_suites

    assert experiment.train is not None and experiment.generate is not None and experiment.scoring is not None
    sweep = experiment.sweep
    base_models = sweep.base_models or [experiment.train.base_model]
    templates = sweep.templates or [experiment.train.template]
    presets = sweep.presets or [experiment.generate.preset]
    formats = experiment.data.formats
    seeds = run_seeds(experiment)
    models = []
    for base_model in base_models:
        for template in templates:
            for preset in presets:
                axes = {"model": (base_model, len(base_models) > 1), "template": (template, len(templates) > 1),
                        "preset": (preset, len(presets) > 1)}
                if sweep.include_base_model:
                    models.append(_model_entry(axes, None, None))
                for safety_format in formats:
                    format_axis = (safety_format, len(formats) > 1) if formats != ["instruction"] else None
                    models += [_model_entry(axes, format_axis, k, (seed, seed != experiment.seed))
                               for seed in seeds for k in sorted(experiment.data.n_safety)]
    suites = load_suites(experiment.generate, data_dir)
    return RunIndex(
        name=experiment.name,
        config_hash=config_hash(experiment),
        suites=[SuiteEntry(name=s.name, n_prompts=len(s.prompts), categories=s.category_counts()) for s in suites],
        scorers=[score_file_stem(entry) for entry in experiment.scoring.scorers],
        models=models,
    )


def run_seeds(experiment: ExperimentConfig) -> list[int]:
    """The seeds of the run's mixtures and adapters: ``sweep.seeds``, else the experiment's ``seed``."""
    return experiment.sweep.seeds or [experiment.seed]


def _model_entry(axes: dict[str, tuple[str, bool]], format_axis: tuple[str, bool] | None, k: int | None,
                 seed_axis: tuple[int, bool] | None = None) -> ModelEntry:
    """One model of the sweep; its label spells out only the axes that vary in the run.

    ``format_axis`` is (the safety examples' format, whether formats vary), or None when the run uses the safety
    set as it is; ``seed_axis`` is (the adapter's seed, whether to spell it out: not for the experiment's own
    ``seed``, so adding seeds to a finished run keeps its adapters where they are). The untuned base model has
    neither.
    The seed is left out of the display name, so the report can aggregate the seeds of one K.
    """
    base_model, template, preset = (axes[name][0] for name in ("model", "template", "preset"))
    varying = [(name, value) for name, (value, varies) in axes.items() if varies]
    model_part = [value.replace("/", "-") for name, value in varying if name == "model"]
    template_part = [value for name, value in varying if name == "template"]
    format_part = [format_axis[0]] if format_axis and format_axis[1] else []
    seed_part = [f"seed{seed_axis[0]}"] if seed_axis and seed_axis[1] else []
    k_part = BASE_LABEL if k is None else f"k{k}"
    label = "/".join([*model_part, *template_part, *format_part, *seed_part, k_part])
    train_slug = _slug(label)
    preset_part = [value for name, value in varying if name == "preset"]
    if preset_part:
        label += f"@{preset_part[0]}"
    qualifiers = ", ".join(f"{name}={value}" for name, value in varying if name != "model")
    slug = _slug(label)
    dirs = model_dirs(slug, None if k is None else train_slug)
    return ModelEntry(
        label=label,
        model=base_model + (f" [{qualifiers}]" if qualifiers else ""),
        slug=slug,
        base_model=base_model,
        template=template,
        preset=preset,
        k=k,
        format=format_axis[0] if format_axis else None,
        seed=seed_axis[0] if seed_axis else None,
        train_dir=dirs.train_dir,
        generations_dir=dirs.generations_dir,
        scores_dir=dirs.scores_dir,
    )


def _slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", label.replace("/", "__").replace("@", "--"))


def score_file_stem(entry: ScorerEntry) -> str:
    """The score file stem of a configured scorer (:func:`safemix.scoring.score_file_stem`)."""
    template = entry.settings.get("template")
    return scoring.score_file_stem(entry.name, str(template) if template else None)


def plan_tasks(experiment: ExperimentConfig, index: RunIndex, run_dir: Path, data_dir: Path | None,
               servers: VLLMServers | None = None) -> list[Task]:
    """Every task of the run, each after the tasks it needs, with what the run directory already holds for it; with
    the vllm backend, ``servers`` answers the generation tasks and a task after them stops it.

    What needs what: an adapter its mixtures; a model's answers its adapter; its scores its answers; the metrics
    every score; capability every adapter; win rate every answer; the report the metrics, capability and win rate.
    """
    assert experiment.scoring is not None
    layout = RunLayout(run_dir)
    tasks: list[Task] = []
    data_keys: dict[Path, str] = {}
    for safety_format in experiment.data.formats:
        for seed in run_seeds(experiment):
            data_out = mixtures_dir(experiment, run_dir, safety_format, seed)
            tasks.append(Task("data", f"mixtures {data_out.relative_to(run_dir)}",
                              partial(_data_status, experiment, seed, data_out),
                              partial(build_data, experiment, safety_format, seed, data_out, data_dir)))
            data_keys[data_out] = tasks[-1].key
    train_keys: dict[str, str] = {}
    for entry in index.models:
        if entry.train_dir is None or entry.train_dir in train_keys:
            continue  # presets share one adapter
        assert entry.seed is not None
        data_out = mixtures_dir(experiment, run_dir, entry.format or "instruction", entry.seed)
        config, out = train_config(experiment, entry, data_out), run_dir / entry.train_dir
        tasks.append(Task("train", entry.label, partial(_train_status, config, out), partial(train_model, config, out),
                          needs=(data_keys[data_out],)))
        train_keys[entry.train_dir] = tasks[-1].key
    generate_keys: dict[str, str] = {}
    for entry in index.models:
        out = layout.generations_dir(entry)
        tasks.append(Task("generate", entry.label, partial(_generate_status, out),
                          partial(generate_answers, generate_config(experiment, entry, run_dir), out, data_dir,
                                  servers),
                          needs=(train_keys[entry.train_dir],) if entry.train_dir is not None else ()))
        generate_keys[entry.label] = tasks[-1].key
    if servers is not None:  # their memory goes back before scoring and capability load models of their own
        tasks.append(Task("generate", "stop the vLLM servers", _pending, servers.close,
                          needs=tuple(generate_keys.values())))
    score_keys = []
    for entry in index.models:
        for scorer in experiment.scoring.scorers:
            generations, out = layout.generations_dir(entry), score_path(run_dir, entry, scorer)
            tasks.append(Task("score", f"{entry.label} {score_file_stem(scorer)}",
                              partial(_score_status, scorer, generations, out, entry.label),
                              partial(score_answers, scorer, generations, out, entry.label, experiment),
                              needs=(generate_keys[entry.label],)))
            score_keys.append(tasks[-1].key)
    tasks.append(Task("metrics", "all models", _pending, partial(write_run_metrics, index, run_dir),
                      needs=tuple(score_keys)))
    report_needs = [tasks[-1].key]
    if experiment.capability is not None:
        tasks.append(Task("capability", "all models", _pending,
                          partial(run_capability, experiment, run_dir, data_dir), needs=tuple(train_keys.values())))
        report_needs.append(tasks[-1].key)
    if experiment.winrate is not None:
        tasks.append(Task("winrate", f"vs {experiment.winrate.reference}", _pending,
                          partial(run_winrate, experiment, run_dir, data_dir), needs=tuple(generate_keys.values())))
        report_needs.append(tasks[-1].key)
    tasks.append(Task("report", "all models", _pending, partial(write_run_report, run_dir),
                      needs=tuple(report_needs)))
    return tasks


def mixtures_dir(experiment: ExperimentConfig, run_dir: Path, safety_format: str, seed: int) -> Path:
    """``RUN_DIR/data``, with a ``<format>`` part when the run sweeps several safety formats and a ``seed-<seed>``
    part for a seed other than the experiment's ``seed`` (``RUN_DIR/data/question/seed-1``)."""
    return RunLayout(run_dir).mixtures_dir(safety_format if len(experiment.data.formats) > 1 else None,
                                           None if seed == experiment.seed else seed)


def train_config(experiment: ExperimentConfig, entry: ModelEntry, data_out: Path) -> TrainConfig:
    """The train settings of one adapter: the ``train`` section on this model's mixture, base model and template."""
    assert experiment.train is not None and entry.k is not None
    update: dict[str, Any] = {
        "base_model": entry.base_model,
        "template": entry.template,
        "train_file": data_out / mixture_file_name(entry.k),
        "val_file": data_out / VALIDATION_FILE,
    }
    if "seed" not in experiment.train.model_fields_set:
        update["seed"] = entry.seed
    return experiment.train.model_copy(update=update)


def generate_config(experiment: ExperimentConfig, entry: ModelEntry, run_dir: Path) -> GenerateConfig:
    """The generate settings of one model: the ``generate`` section with this model, adapter, template and preset."""
    assert experiment.generate is not None
    adapter = RunLayout(run_dir).adapter(entry)
    return experiment.generate.model_copy(update={
        "base_model": entry.base_model, "adapter": adapter, "template": entry.template, "preset": entry.preset,
    })


def score_path(run_dir: Path, entry: ModelEntry, scorer: ScorerEntry) -> Path:
    """``RUN_DIR/scores/<slug>/<scorer>.jsonl``."""
    return RunLayout(run_dir).score_file(entry, score_file_stem(scorer))


# ------------------------------------------------------------------------------------------------ statuses


def _pending() -> str:
    """The status of a task that always runs (metrics, capability, win rate, report, stopping servers)."""
    return "pending"


def _data_status(experiment: ExperimentConfig, seed: int, data_out: Path) -> str:
    manifest = read_manifest_if_present(data_out / DIRECTORY_MANIFEST, MixtureManifest)
    if manifest is None:
        return "pending"
    return "done" if manifest.config_hash == _data_hash(experiment, seed) else "redo"


def _train_status(config: TrainConfig, out: Path) -> str:
    if not out.exists():
        return "pending"
    if not (config.train_file and config.train_file.is_file() and config.val_file and config.val_file.is_file()):
        return "redo"  # the mixtures are rebuilt first; the run hash will tell
    from safemix.train.recipe import train_status

    return {"absent": "pending", "partial": "resume", "finished": "done", "stale": "redo"}[train_status(config, out)]


def _generate_status(out: Path) -> str:
    manifest = read_manifest_if_present(out / DIRECTORY_MANIFEST, GenerationManifest)
    if manifest is None:
        return "pending"
    return "done" if manifest.complete else "resume"  # settings are checked when the stage runs, after training


def _score_status(scorer: ScorerEntry, generations: Path, out: Path, model: str) -> str:
    from safemix.scoring.run import scores_up_to_date

    if not out.is_file():
        return "pending"
    if not generations.is_dir():
        return "redo"
    return "done" if scores_up_to_date(scorer.name, scorer.settings, generations, out, model) else "redo"


# ------------------------------------------------------------------------------------------------ stage actions


def _data_hash(experiment: ExperimentConfig, seed: int) -> str:
    """The hash recorded in the mixtures' manifest: the settings that decide the mixtures of one seed."""
    return mixture_config_hash(experiment.data.model_dump(mode="json"), seed)


def build_data(experiment: ExperimentConfig, safety_format: Any, seed: int, data_out: Path,
               data_dir: Path | None) -> None:
    """Build the mixtures of one safety format and seed (rebuilding unchanged inputs writes the same bytes)."""
    from safemix.data.mixture import build_mixtures

    d = experiment.data
    build_mixtures(d.general, d.safety, d.n_general, d.n_safety, data_out, val_size=d.val_size,
                   seed=seed, data_dir=data_dir, config_hash=_data_hash(experiment, seed),
                   safety_format=safety_format, safety_questions=d.safety_questions)


def train_model(config: TrainConfig, out: Path) -> None:
    """Train one adapter, resuming a killed run; a finished run with other settings or inputs is replaced."""
    from safemix.train.recipe import train, train_status

    if train_status(config, out) == "stale":
        log.warning("%s holds a run with other settings or inputs; training it again", out)
        shutil.rmtree(out)
    train(config, out)


def generate_answers(config: GenerateConfig, out: Path, data_dir: Path | None,
                     servers: VLLMServers | None = None) -> None:
    """Answer every suite, resuming a killed run; answers made with other settings are replaced."""
    from safemix.generate.runner import generate_suites, stale_reason

    reason = stale_reason(config, out, data_dir)
    if reason:
        log.warning("%s: answers were made with other settings (%s); generating them again", out, reason)
    generate_suites(config, out, data_dir=data_dir, overwrite=reason is not None, servers=servers)


def vllm_servers(experiment: ExperimentConfig, index: RunIndex, run_dir: Path) -> VLLMServers | None:
    """With the vllm backend, the run's servers: one per base model with every adapter of the run on that base
    model (started when first needed, logs in ``RUN_DIR/logs``); None with any other backend."""
    if experiment.generate is None or experiment.generate.backend != "vllm":
        return None
    from safemix.generate.vllm_backend import VLLMServers, served_name

    layout = RunLayout(run_dir)
    adapters: dict[str, dict[str, Path]] = {}
    for entry in index.models:
        adapter = layout.adapter(entry)
        if entry.train_dir is not None and adapter is not None:
            adapters.setdefault(entry.base_model, {})[served_name(entry.train_dir)] = adapter
    return VLLMServers(adapters, layout.logs)


def score_answers(scorer: ScorerEntry, generations: Path, out: Path, model: str, experiment: ExperimentConfig) -> None:
    """Score one model's answers with one scorer, unless the scores file already holds exactly that."""
    from safemix.scoring.cache import default_cache_root
    from safemix.scoring.run import score_file, scores_up_to_date

    if scores_up_to_date(scorer.name, scorer.settings, generations, out, model):
        return
    assert experiment.scoring is not None
    score_file(scorer.name, scorer.settings, generations, out, model=model,
               cache_dir=experiment.scoring.cache_dir or default_cache_root())


def write_run_metrics(index: RunIndex, run_dir: Path) -> None:
    """``metrics.csv`` and ``metrics.json`` over every model and scorer of the run."""
    from safemix.metrics import compute_metrics, read_scores, write_metrics

    layout = RunLayout(run_dir)
    files = [layout.score_file(entry, stem) for entry in index.models for stem in index.scorers]
    write_metrics(compute_metrics(read_scores(files)), run_dir)


def run_capability(experiment: ExperimentConfig, run_dir: Path, data_dir: Path | None) -> None:
    """lm-eval benchmarks for every model (finished tasks are kept); ``RUN_DIR/capability/metrics.json``."""
    from safemix.capability.stage import run_capability_stage

    assert experiment.capability is not None
    run_capability_stage(experiment.capability, run_dir, data_dir)


def run_winrate(experiment: ExperimentConfig, run_dir: Path, data_dir: Path | None) -> None:
    """Pairwise win rate of every model against the reference (cached judgements are reused)."""
    from safemix.winrate.stage import run_winrate_stage

    assert experiment.winrate is not None
    run_winrate_stage(experiment.winrate, run_dir, data_dir)


def write_run_report(run_dir: Path) -> None:
    """``report.html``, ``report.md`` and ``summary.csv`` in the run directory."""
    from safemix.report import write_report

    write_report([run_dir], run_dir)


def headline_text(run_dir: Path) -> str:
    """The report's headline tables as plain text (what ``safemix run`` prints when it ends)."""
    from safemix.report.content import headline_section
    from safemix.report.render import render_text
    from safemix.report.runs import load_runs

    return render_text(headline_section(load_runs([run_dir])))
