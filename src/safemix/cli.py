"""The ``safemix`` command line: thin commands that parse, load a config and call a library function.

Exit codes: 0 ok; 2 bad input or usage (one line naming the file, record or key, and the problem);
1 runtime failure. ``--debug`` shows tracebacks. This module imports nothing heavy (no torch), so
``safemix --help``, ``validate`` and ``data ls`` stay fast.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Annotated, Any, TypeVar, cast

import click
import typer
from pydantic import BaseModel, ValidationError

from safemix.errors import InputError, first_problem, setting_problem

log = logging.getLogger("safemix")

app = typer.Typer(
    name="safemix",
    help="Safety-tune instruction-following models with exact safety-data mixtures, and measure the trade-off.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Data: the source catalog, fetching, and building training mixtures.", no_args_is_help=True)
app.add_typer(data_app, name="data")
judge_app = typer.Typer(help="The learned refusal judge: train it; audit a run's refusal scorers.", no_args_is_help=True)
app.add_typer(judge_app, name="judge")
model_app = typer.Typer(help="Models: the tiny test model and built-in offline models.", no_args_is_help=True)
app.add_typer(model_app, name="model")
annotate_app = typer.Typer(help="Human evaluation: blind side-by-side annotation of answers in a local web app.",
                           no_args_is_help=True)
app.add_typer(annotate_app, name="annotate")

SetOption = Annotated[
    list[str] | None, typer.Option("--set", help="Override a config key: --set data.n_general=900 (repeatable).")
]
DataDirOption = Annotated[
    Path | None, typer.Option("--data-dir", help="Local data mirror laid out like shared/data (default $SAFEMIX_DATA_DIR).")
]


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Log warnings and errors only.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


@app.command()
def validate(
    config: Annotated[Path, typer.Argument(help="Experiment YAML file.")],
    for_run: Annotated[bool, typer.Option("--run", help="Also check it has everything 'safemix run' needs.")] = False,
    overrides: SetOption = None,
) -> None:
    """Validate an experiment config; print every error with its dotted path (exit 2 if any)."""
    from safemix.config import ConfigError, config_hash, load_config

    try:
        experiment = load_config(config, overrides or [])
        if for_run:
            from safemix.pipeline import check_runnable

            check_runnable(experiment, str(config))
    except ConfigError as err:
        for problem in err.problems:
            typer.echo(f"{err.source}: {problem}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"{config}: ok (config hash {config_hash(experiment)})")


@app.command("run")
def run(
    config: Annotated[Path, typer.Argument(help="Experiment YAML (data, train, generate and scoring sections).")],
    out: Annotated[Path | None, typer.Option("--out", help="Run directory (default runs/<name>-<config hash>).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan: what will run, what is already done.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars; warnings and errors only (for logs).")] = False,
    executor: Annotated[str | None, typer.Option("--executor", help="local (default: one task after another) or ray.")] = None,
    address: Annotated[str | None, typer.Option("--address", help="ray: the cluster, 'auto' or ray://HOST:PORT (default: a local Ray instance).")] = None,
    data_dir: DataDirOption = None,
    overrides: SetOption = None,
) -> None:
    """Run a whole experiment: mixtures, one adapter per K, answers, scores, metrics; resumes after a crash."""
    from safemix.config import command_line_config, config_hash, validate_config
    from safemix.data.catalog import default_data_dir
    from safemix.pipeline import headline_text, run_experiment

    started = time.monotonic()
    if quiet:
        logging.getLogger("safemix").setLevel(logging.WARNING)
    flags = {"executor.kind": executor, "executor.address": address}
    experiment = validate_config(command_line_config(config, flags, overrides or []), str(config))
    run_dir = out or Path("runs") / f"{experiment.name}-{config_hash(experiment)}"
    root = default_data_dir(data_dir or experiment.data_dir)
    tasks = run_experiment(experiment, run_dir, data_dir=root, source=str(config), dry_run=dry_run)
    if dry_run:
        typer.echo(f"plan for {run_dir} ({len(tasks)} tasks):")
        for task in tasks:
            typer.echo(f"  {task.stage:9} {task.target:40} {task.status}")
        return
    typer.echo(headline_text(run_dir))
    typer.echo(f"{run_dir}: {len(tasks)} tasks done in {time.monotonic() - started:.0f} s; "
               f"report: {run_dir / 'report.html'}")


@data_app.command("ls")
def data_ls(
    data_dir: DataDirOption = None,
    kind: Annotated[str | None, typer.Option(help="Only sources of this kind (instructions, prompts, ...).")] = None,
) -> None:
    """List the built-in data sources: kind, rows, license, and whether a local copy is present."""
    from safemix.data.catalog import cache_dir, default_data_dir, load_catalog

    root = default_data_dir(data_dir)
    typer.echo(f"{'name':30} {'kind':20} {'rows':>6}  {'local':6} license")
    for name, source in load_catalog().items():
        if kind and source.kind != kind:
            continue
        present = source.origin.package is not None or any(
            r is not None and (r / source.mirror_path).is_file() for r in (root, cache_dir())
        )
        typer.echo(f"{name:30} {source.kind:20} {source.rows:>6}  {'yes' if present else 'no':6} {source.license}")


@data_app.command("show")
def data_show(name: Annotated[str, typer.Argument(help="Catalog source name.")], data_dir: DataDirOption = None) -> None:
    """Show one source: description, origin, sha256, license, rows, and the local copy if there is one."""
    from safemix.data.catalog import default_data_dir, get_source, local_path

    source = get_source(name)
    for key, value in source.model_dump(exclude={"origin"}, exclude_defaults=True).items():
        typer.echo(f"{key}: {value}")
    typer.echo(f"origin: {source.origin.download_url}")
    typer.echo(f"local: {local_path(source, default_data_dir(data_dir)) or 'not present'}")


@data_app.command("fetch")
def data_fetch(
    names: Annotated[list[str], typer.Argument(help="Catalog source names ('all' for every one).")],
    data_dir: DataDirOption = None,
) -> None:
    """Download sources into the cache and verify their sha256; nothing is downloaded when a copy is present."""
    from safemix.data.catalog import default_data_dir, get_source, load_catalog, locate

    root = default_data_dir(data_dir)
    wanted = list(load_catalog()) if names == ["all"] else names
    for name in wanted:
        get_source(name)  # fail on an unknown name before downloading anything
    for name in wanted:
        typer.echo(f"{name}: {locate(name, root)}")


@data_app.command("build")
def data_build(
    out: Annotated[Path, typer.Option("--out", help="Output directory.")],
    config: Annotated[Path | None, typer.Option("--config", help="Experiment YAML with a 'data' section.")] = None,
    general: Annotated[str | None, typer.Option(help="General source: catalog name, path, or hf:owner/name[@rev].")] = None,
    safety: Annotated[str | None, typer.Option(help="Safety source: catalog name, path, or hf:owner/name[@rev].")] = None,
    n_general: Annotated[int | None, typer.Option("--n-general", help="General examples per mixture.")] = None,
    n_safety: Annotated[str | None, typer.Option("--n-safety", help="Comma-separated K values, e.g. 0,100,300.")] = None,
    val_size: Annotated[int | None, typer.Option("--val-size", help="Validation examples from the general pool.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the permutations.")] = None,
    safety_format: Annotated[str | None, typer.Option("--format", help="Safety examples as instruction (default), question or mixed (half each).")] = None,
    safety_questions: Annotated[str | None, typer.Option("--safety-questions", help="The safety set in question form, paired by position ('safemix data rewrite').")] = None,
    data_dir: DataDirOption = None,
    overrides: SetOption = None,
) -> None:
    """Build mixture-K.jsonl for every K, val.jsonl and manifest.json into --out."""
    from safemix.config import command_line_config, validate_config, write_resolved_config
    from safemix.data.catalog import default_data_dir
    from safemix.data.mixture import build_mixtures
    from safemix.run_files import mixture_config_hash

    flags = {
        "data.general": general,
        "data.safety": safety,
        "data.n_general": n_general,
        "data.n_safety": parse_k_list(n_safety) if n_safety is not None else None,
        "data.val_size": val_size,
        "data.formats": [safety_format] if safety_format else None,
        "data.safety_questions": safety_questions,
        "seed": seed,
        "data_dir": str(data_dir) if data_dir else None,
    }
    raw = command_line_config(config, flags, overrides or [])
    experiment = validate_config(raw, str(config) if config else "command line")
    root = default_data_dir(experiment.data_dir)
    d = experiment.data
    if len(d.formats) > 1:
        raise InputError(f"data.formats lists {len(d.formats)} formats; build one at a time with --format "
                         f"({', '.join(d.formats)}), or sweep them with 'safemix run'")
    manifest = build_mixtures(
        d.general, d.safety, d.n_general, d.n_safety, out, val_size=d.val_size, seed=experiment.seed,
        data_dir=root, config_hash=mixture_config_hash(d.model_dump(mode="json"), experiment.seed),
        safety_format=d.formats[0],
        safety_questions=d.safety_questions,
    )
    write_resolved_config(experiment, out)
    for name, info in manifest["outputs"].items():
        typer.echo(f"{out / name}: {info['rows']} examples")


@data_app.command("rewrite")
def data_rewrite(
    to: Annotated[str, typer.Option("--to", help="Target form: question or instruction.")],
    input_path: Annotated[Path, typer.Option("--input", help="Alpaca-style JSON / JSONL set (instruction, input, output).")],
    out: Annotated[Path, typer.Option("--out", help="Output JSONL, one line per input line (manifest: OUT stem + .manifest.json).")],
    model: Annotated[str | None, typer.Option("--model", help="Model dir, built-in name or HF id; openai: the served model.")] = None,
    backend: Annotated[str, typer.Option("--backend", help="hf (local), openai (OpenAI-compatible endpoint) or fake (rule-based, for dry runs).")] = "hf",
    base_url: Annotated[str | None, typer.Option("--base-url", help="openai: the API root (default https://api.openai.com/v1).")] = None,
    cache_dir: Annotated[Path | None, typer.Option("--cache-dir", help="Rewrite cache (default $SAFEMIX_SCORE_CACHE or ~/.cache/safemix/scores).")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Neither read nor write the rewrite cache.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar; warnings and errors only.")] = False,
    overrides: Annotated[list[str] | None, typer.Option("--set", help="Set a model setting: --set rewrite.max_new_tokens=64 (repeatable).")] = None,
) -> None:
    """Rewrite a safety set's instructions as questions (or back) with a language model; cached, nothing dropped."""
    from safemix.rewrite import RewriteConfig, RewriteForm, manifest_path, rewrite_file
    from safemix.scoring.cache import default_cache_root

    if quiet:
        logging.getLogger("safemix").setLevel(logging.WARNING)
    if to not in ("question", "instruction"):
        raise InputError(f"--to {to!r}: expected question or instruction")
    settings = tool_settings({"backend": backend, "model": model, "base_url": base_url}, overrides or [], "rewrite")
    manifest = rewrite_file(input_path, out, cast(RewriteForm, to), tool_config(RewriteConfig, settings, "rewrite model"),
                            cache_dir=None if no_cache else cache_dir or default_cache_root())
    counts = manifest["counts"]
    typer.echo(f"{out}: {counts['lines']} lines, {counts['rewritten']} rewritten, {counts['already_in_form']} already "
               f"in form, {counts['failed']} failed (kept as they were; manifest {manifest_path(out)})")


@model_app.command("tiny")
def model_tiny(
    out: Annotated[Path, typer.Option("--out", help="Directory to write the model into (replaced).")],
    seed: Annotated[int, typer.Option(help="Seed of the random weights.")] = 0,
) -> None:
    """Build a tiny random Llama with a BPE tokenizer and a chat template, offline, in seconds."""
    from safemix.models.tiny import build_tiny_model

    typer.echo(str(build_tiny_model(out, seed=seed)))


@model_app.command("prepare")
def model_prepare(
    name: Annotated[str, typer.Argument(help="Built-in model name: smollm2-135m-instruct.")],
    out: Annotated[Path | None, typer.Option("--out", help="Directory (default $SAFEMIX_MODELS_DIR/NAME).")] = None,
) -> None:
    """Convert a built-in offline model into a transformers checkpoint once; later runs reuse it."""
    from safemix.models.builtin import BUILTIN_MODELS, prepare_smollm2

    if name not in BUILTIN_MODELS:
        raise InputError(f"model {name!r}: not a built-in model (built-in: {', '.join(BUILTIN_MODELS)})")
    typer.echo(str(prepare_smollm2(out)))


@app.command("suites")
def suites_ls(data_dir: DataDirOption = None) -> None:
    """List the built-in evaluation suites: prompts (after deduplication) by category, duplicates dropped."""
    from safemix.data.catalog import default_data_dir
    from safemix.data.suites import PAPER_NAMES, builtin_suite_names, load_suite, suite_description

    root = default_data_dir(data_dir)
    typer.echo(f"{'name':26} {'paper name':24} {'prompts':>7} {'dropped':>7}  {'categories':26} description")
    for name in builtin_suite_names():
        try:
            suite = load_suite(name, root, download=False)
        except InputError:
            counts, size, dropped = "(not local: safemix data fetch)", "-", "-"
        else:
            counts = ", ".join(f"{category} {n}" for category, n in suite.category_counts().items())
            size, dropped = str(len(suite.prompts)), str(len(suite.duplicate_ids))
        typer.echo(f"{name:26} {PAPER_NAMES.get(name, '-'):24} {size:>7} {dropped:>7}  {counts:26} "
                   f"{suite_description(name)}")


@app.command()
def generate(
    out: Annotated[Path, typer.Option("--out", help="Output directory: <suite>.jsonl per suite and manifest.json.")],
    base_model: Annotated[str | None, typer.Option("--base-model", help="Model dir, built-in name, HF id, or served model name.")] = None,
    adapter: Annotated[Path | None, typer.Option("--adapter", help="LoRA adapter dir written by 'safemix train'.")] = None,
    suite: Annotated[list[str] | None, typer.Option("--suite", help="Suite name ('safemix suites') or prompt file; repeatable.")] = None,
    suite_category: Annotated[str | None, typer.Option("--suite-category", help="Category of prompt-file suites: harmful, safe or general.")] = None,
    suite_columns: Annotated[str | None, typer.Option("--suite-columns", help="Columns of prompt-file suites, e.g. prompt=question,id=qid.")] = None,
    backend: Annotated[str | None, typer.Option(help="hf (default), vllm, openai or fake.")] = None,
    preset: Annotated[str | None, typer.Option(help="Decoding preset: greedy (default) or paper (4 beams, 128 tokens).")] = None,
    max_new_tokens: Annotated[int | None, typer.Option("--max-new-tokens", help="Override the preset's new-token limit.")] = None,
    num_beams: Annotated[int | None, typer.Option("--num-beams", help="Override the preset's number of beams.")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="Most prompts per batch (default 32).")] = None,
    template: Annotated[str | None, typer.Option(help="alpaca or chat; default: the adapter's, else alpaca.")] = None,
    dtype: Annotated[str | None, typer.Option(help="float32 (default), bfloat16 (GPU, or a CPU with native bf16), float16 (GPU), or auto (bfloat16 where native).")] = None,
    device: Annotated[str | None, typer.Option(help="cpu (default), cuda or cuda:N.")] = None,
    base_url: Annotated[str | None, typer.Option("--base-url", help="openai backend: the API root, e.g. http://127.0.0.1:8000/v1.")] = None,
    concurrency: Annotated[int | None, typer.Option(help="openai backend: requests in flight at once.")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="Experiment YAML with a 'generate' section.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a run in --out that has other settings.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar; warnings and errors only (for logs).")] = False,
    data_dir: DataDirOption = None,
    overrides: SetOption = None,
) -> None:
    """Answer every prompt of the chosen suites; resumes an interrupted run in the same --out."""
    from safemix.config import load_command_settings
    from safemix.data.catalog import default_data_dir
    from safemix.generate.command import suite_entries
    from safemix.generate.config import GenerateConfig
    from safemix.generate.runner import generate_suites

    if quiet:
        logging.getLogger("safemix").setLevel(logging.WARNING)
    flags = {
        "generate.base_model": base_model,
        "generate.adapter": str(adapter) if adapter else None,
        "generate.suites": suite_entries(suite, suite_category, suite_columns) if suite else None,
        "generate.backend": backend,
        "generate.preset": preset,
        "generate.decoding.max_new_tokens": max_new_tokens,
        "generate.decoding.num_beams": num_beams,
        "generate.batch_size": batch_size,
        "generate.template": template,
        "generate.dtype": dtype,
        "generate.device": device,
        "generate.openai.base_url": base_url,
        "generate.openai.concurrency": concurrency,
        "data_dir": str(data_dir) if data_dir else None,
    }
    settings = load_command_settings("generate", GenerateConfig, config, flags, overrides or [])
    manifest = generate_suites(settings.section, out, data_dir=default_data_dir(settings.data_dir), overwrite=overwrite)
    for spec in settings.section.suites:
        entry = manifest["suites"][spec.label]
        typer.echo(f"{out / entry['file']}: {entry['n_prompts']} answers")


@app.command()
def train(
    out: Annotated[Path, typer.Option("--out", help="Output directory: adapter/, train_log.json, loss.png, config.")],
    base_model: Annotated[str | None, typer.Option("--base-model", help="Model dir, built-in name (smollm2-135m-instruct) or HF id.")] = None,
    train_file: Annotated[Path | None, typer.Option("--train", help="mixture-K.jsonl from 'safemix data build'.")] = None,
    val_file: Annotated[Path | None, typer.Option("--val", help="val.jsonl from 'safemix data build'.")] = None,
    template: Annotated[str | None, typer.Option(help="alpaca (paper, default) or chat (the tokenizer's chat template).")] = None,
    train_on_inputs: Annotated[bool | None, typer.Option("--train-on-inputs/--no-train-on-inputs", help="Loss on prompt and answer (paper, default) or on the answer only.")] = None,
    cutoff_len: Annotated[int | None, typer.Option("--cutoff-len", help="Longest sequence in tokens (default 256).")] = None,
    lora_r: Annotated[int | None, typer.Option("--lora-r", help="LoRA rank (default 8).")] = None,
    lora_alpha: Annotated[int | None, typer.Option("--lora-alpha", help="LoRA alpha (default 16).")] = None,
    lora_dropout: Annotated[float | None, typer.Option("--lora-dropout", help="LoRA dropout (default 0.05).")] = None,
    lora_target_modules: Annotated[str | None, typer.Option("--lora-target-modules", help="Comma-separated module names (default q_proj,v_proj).")] = None,
    learning_rate: Annotated[float | None, typer.Option("--learning-rate", help="Peak learning rate (default 3e-4).")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="Examples per optimizer step, all processes (default 128).")] = None,
    micro_batch_size: Annotated[int | None, typer.Option("--micro-batch-size", help="Examples per forward pass (default 4).")] = None,
    epochs: Annotated[float | None, typer.Option(help="Passes over the mixture (default 3).")] = None,
    max_steps: Annotated[int | None, typer.Option("--max-steps", help="Optimizer steps; overrides --epochs.")] = None,
    eval_steps: Annotated[int | None, typer.Option("--eval-steps", help="Validate and checkpoint every N steps (default 200).")] = None,
    warmup_steps: Annotated[int | None, typer.Option("--warmup-steps", help="Linear warm-up steps (default 100).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the batch order, LoRA init and dropout.")] = None,
    dtype: Annotated[str | None, typer.Option(help="float32 (default), bfloat16 (CUDA, or CPU autocast where native), float16 (CUDA), or auto.")] = None,
    load_in_4bit: Annotated[bool | None, typer.Option("--load-in-4bit", help="QLoRA: base in 4-bit NF4 (bitsandbytes: safemix[gpu]).")] = None,
    load_in_8bit: Annotated[bool | None, typer.Option("--load-in-8bit", help="Base in 8-bit (bitsandbytes: safemix[gpu]).")] = None,
    gradient_checkpointing: Annotated[bool | None, typer.Option("--gradient-checkpointing", help="Save activation memory.")] = None,
    sharded_loading: Annotated[bool | None, typer.Option("--sharded-loading", help="2+ processes: no process loads the whole base (FSDP2; float32 or bfloat16).")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="Experiment YAML with a 'train' section.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar; warnings and errors only (for logs).")] = False,
    overrides: SetOption = None,
) -> None:
    """Fine-tune a causal LM with LoRA on a mixture; keep the best step by validation loss; resume after a crash."""
    from safemix.config import load_train_settings
    from safemix.train.recipe import train as run_training

    if quiet:
        logging.getLogger("safemix").setLevel(logging.WARNING)
    flags = {
        "train.base_model": base_model,
        "train.train_file": str(train_file) if train_file else None,
        "train.val_file": str(val_file) if val_file else None,
        "train.template": template,
        "train.train_on_inputs": train_on_inputs,
        "train.cutoff_len": cutoff_len,
        "train.lora.r": lora_r,
        "train.lora.alpha": lora_alpha,
        "train.lora.dropout": lora_dropout,
        "train.lora.target_modules": lora_target_modules.split(",") if lora_target_modules else None,
        "train.learning_rate": learning_rate,
        "train.batch_size": batch_size,
        "train.micro_batch_size": micro_batch_size,
        "train.epochs": epochs,
        "train.max_steps": max_steps,
        "train.eval_steps": eval_steps,
        "train.warmup_steps": warmup_steps,
        "train.seed": seed,
        "train.dtype": dtype,
        "train.load_in_4bit": load_in_4bit,
        "train.load_in_8bit": load_in_8bit,
        "train.gradient_checkpointing": gradient_checkpointing,
        "train.sharded_loading": sharded_loading,
    }
    result = run_training(load_train_settings(config, flags, overrides or []), out)
    typer.echo(f"{result.adapter_dir}: best step {result.log['best_step']}, validation loss {result.log['best_val_loss']:.4f}")


@app.command()
def export(
    base_model: Annotated[str, typer.Option("--base-model", help="The base the adapter was trained on.")],
    adapter: Annotated[Path, typer.Option("--adapter", help="Adapter dir (or the training --out dir).")],
    out: Annotated[Path, typer.Option("--out", help="Directory for the merged model (replaced).")],
) -> None:
    """Merge a LoRA adapter into its base model: a standalone checkpoint that loads without peft."""
    from safemix.train.export import export_merged

    typer.echo(str(export_merged(base_model, adapter, out)))


@app.command("scorers")
def scorers_ls() -> None:
    """List the scorers, whether they need the network, and what they judge."""
    from safemix.scoring import SCORERS

    typer.echo(f"{'name':18} {'network':9} description")
    for info in SCORERS.values():
        typer.echo(f"{info.name:18} {info.network:9} {info.description}")


@app.command()
def score(
    scorer: Annotated[str, typer.Option("--scorer", help="Scorer name ('safemix scorers').")],
    input_path: Annotated[Path, typer.Option("--input", help="Generations directory, or a JSONL / JSON / CSV file.")],
    out: Annotated[Path, typer.Option("--out", help="Scores JSONL to write (manifest: OUT stem + .manifest.json).")],
    prompt_column: Annotated[str, typer.Option("--prompt-column", help="Column holding the prompt.")] = "prompt",
    response_column: Annotated[str, typer.Option("--response-column", help="Column holding the response.")] = "response",
    id_column: Annotated[str | None, typer.Option("--id-column", help="Column holding the id (default 'id', else row numbers).")] = None,
    prompts: Annotated[Path | None, typer.Option("--prompts", help="File of prompts pairing by position with --input's responses.")] = None,
    model: Annotated[str | None, typer.Option("--model", help="The scorer's model: HF id, local dir, or API model name.")] = None,
    setup: Annotated[str | None, typer.Option("--setup", help="harmfulness-rm: redteam (default) or redteam-osst.")] = None,
    template: Annotated[str | None, typer.Option("--template", help="llm-judge: xstest, llama-guard-3, harmbench or wildguard.")] = None,
    base_url: Annotated[str | None, typer.Option("--base-url", help="moderation / llm-judge: API root (OpenAI-compatible).")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="Items per forward pass (local models).")] = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, or auto (local models).")] = None,
    generations_model: Annotated[str | None, typer.Option("--generations-model", help="Name of the model that wrote the responses (metrics group by it; default from the generations manifest or folder).")] = None,
    cache_dir: Annotated[Path | None, typer.Option("--cache-dir", help="Score cache (default $SAFEMIX_SCORE_CACHE or ~/.cache/safemix/scores).")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Neither read nor write the score cache.")] = False,
    config: Annotated[Path | None, typer.Option("--config", help="Experiment YAML whose 'scoring' section gives the scorer's settings.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar; warnings and errors only.")] = False,
    overrides: Annotated[list[str] | None, typer.Option("--set", help="Set a scorer setting: --set scoring.SCORER.max_tokens=256 (repeatable).")] = None,
) -> None:
    """Judge every response of --input with one scorer; cached judgements are reused, so reruns score only new items."""
    from safemix.config import load_config
    from safemix.scoring.cache import default_cache_root
    from safemix.scoring.inputs import Columns
    from safemix.scoring.run import manifest_path, score_file

    if quiet:
        logging.getLogger("safemix").setLevel(logging.WARNING)
    settings: dict[str, Any] = {}
    if config is not None:
        scoring = load_config(config).scoring
        settings.update(scoring.settings_for(scorer) if scoring else {})
        cache_dir = cache_dir or (scoring.cache_dir if scoring else None)
    flags = {"model": model, "setup": setup, "template": template, "base_url": base_url, "batch_size": batch_size, "device": device}
    settings.update(tool_settings(flags, overrides or [], f"scoring.{scorer}"))
    columns = Columns(prompt=prompt_column, response=response_column, id=id_column or "id", id_given=id_column is not None)
    manifest = score_file(scorer, settings, input_path, out, columns=columns, prompts_path=prompts, model=generations_model,
                          cache_dir=None if no_cache else cache_dir or default_cache_root())
    counts = manifest["counts"]
    typer.echo(f"{out}: {counts['items']} items, {counts['scored']} scored, {counts['unscored']} unscored "
               f"(manifest {manifest_path(out)})")


@app.command()
def winrate(
    a: Annotated[Path, typer.Option("--a", help="Answers of the model measured: a generations directory or file.")],
    b: Annotated[Path, typer.Option("--b", help="Answers of the reference model: a generations directory or file.")],
    out: Annotated[Path, typer.Option("--out", help="Judgements JSONL, one line per prompt (manifest: OUT stem + .manifest.json).")],
    suite: Annotated[str | None, typer.Option("--suite", help="With directories: the suite file to compare (default i-alpaca).")] = None,
    judge_backend: Annotated[str | None, typer.Option("--judge-backend", help="hf (local model), openai (OpenAI-compatible endpoint) or fake.")] = None,
    judge_model: Annotated[str | None, typer.Option("--judge-model", help="Judge model dir, built-in name or HF id; openai: the served model.")] = None,
    base_url: Annotated[str | None, typer.Option("--base-url", help="openai: the API root (default https://api.openai.com/v1).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the answer order (default 0).")] = None,
    cache_dir: Annotated[Path | None, typer.Option("--cache-dir", help="Judgement cache (default $SAFEMIX_SCORE_CACHE or ~/.cache/safemix/scores).")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Neither read nor write the judgement cache.")] = False,
    config: Annotated[Path | None, typer.Option("--config", help="Experiment YAML whose 'winrate' section gives the judge, seed and cache.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar; warnings and errors only.")] = False,
    overrides: Annotated[list[str] | None, typer.Option("--set", help="Set a judge setting: --set winrate.judge.max_new_tokens=32 (repeatable).")] = None,
) -> None:
    """Pairwise win rate of --a against --b (the reference), judged by a language model; verdicts are cached."""
    from safemix.config import load_config
    from safemix.scoring.cache import default_cache_root
    from safemix.scoring.inputs import generations_model_name
    from safemix.scoring.run import manifest_path
    from safemix.winrate.compare import answers_file, compare, read_answers
    from safemix.winrate.config import JudgeConfig
    from safemix.winrate.judge import build_judge

    if quiet:
        logging.getLogger("safemix").setLevel(logging.WARNING)
    section = load_config(config).winrate if config else None
    settings = section.judge.model_dump(mode="json", exclude_unset=True) if section else {}
    settings.update(tool_settings({"backend": judge_backend, "model": judge_model, "base_url": base_url}, overrides or [],
                                  "winrate.judge"))
    judge = build_judge(tool_config(JudgeConfig, settings, "win-rate judge"))
    answers_a, answers_b = (read_answers(answers_file(path, suite), generations_model_name(path)) for path in (a, b))
    cache_dir = cache_dir or (section.cache_dir if section else None) or default_cache_root()
    order_seed = seed if seed is not None else (section.seed if section else 0)
    try:
        manifest = compare(answers_a, answers_b, out, judge, seed=order_seed, cache_dir=None if no_cache else cache_dir)
    finally:
        judge.model.close()
    counts, rate = manifest["counts"], manifest["win_rate"]
    shown = "n/a" if rate["estimate"] is None else f"{rate['estimate']:.3f} [{rate['ci_low']:.3f}, {rate['ci_high']:.3f}]"
    typer.echo(f"{out}: win rate of {answers_a.name} vs {answers_b.name}: {shown}; {counts['wins']} wins, "
               f"{counts['ties']} ties, {counts['losses']} losses, {counts['unscored']} unscored "
               f"(manifest {manifest_path(out)})")


def tool_settings(flags: dict[str, Any], overrides: list[str], root: str) -> dict[str, Any]:
    """A scorer's, judge's or rewriter's settings: the flags given, then ``--set`` overrides.

    As in every command, ``--set`` names dotted config keys: here the settings under ``root``
    (``scoring.llm-judge.max_tokens``, ``winrate.judge.max_new_tokens``, ``rewrite.batch_size``). The short form
    relative to ``root`` (``--set max_tokens=256``), which these commands took before, still works and warns.
    """
    from safemix.config import parse_override

    settings = {key: value for key, value in flags.items() if value is not None}
    prefix = root.split(".")
    for text in overrides:
        keys, value = parse_override(text)
        if keys[: len(prefix)] == prefix and len(keys) > len(prefix):
            keys = keys[len(prefix):]
        else:
            log.warning("--set %s: write --set %s.%s (the short form is deprecated)", text, root, text)
        settings[".".join(keys)] = value
    return settings


ToolConfigT = TypeVar("ToolConfigT", bound=BaseModel)


def tool_config(cls: type[ToolConfigT], settings: dict[str, Any], what: str) -> ToolConfigT:
    """Validate a judge's or rewriter's settings; a problem is an input error that names the setting."""
    try:
        return cls.model_validate(settings)
    except ValidationError as err:
        raise InputError(f"{what}: {setting_problem(err)}") from None


@judge_app.command("train")
def judge_train(
    out: Annotated[Path, typer.Option("--out", help="Directory for the weights (.safetensors), data card (.json) and fold predictions.")],
    data_dir: DataDirOption = None,
    no_folds: Annotated[bool, typer.Option("--no-folds", help="Skip the held-out XSTest folds (the card then has none).")] = False,
    seed: Annotated[int, typer.Option(help="Seed of the initialisation, the data order and the constructed examples.")] = 0,
) -> None:
    """Train the refusal judge: stance stage, held-out XSTest folds, final XSTest stage; print the folds' table.

    The prompts of the hand-labelled test set's suites, and the XSTest prompts reserved for it, are never trained on.
    """
    from safemix.data.catalog import default_data_dir
    from safemix.scoring.judge import JudgeTraining, train_judge
    from safemix.scoring.judge_testset import reserved_prompt_keys

    data = default_data_dir(data_dir)
    card = train_judge(data, out, exclude=reserved_prompt_keys(data), training=JudgeTraining(seed=seed), folds=not no_folds)
    n = card["n_examples"]
    typer.echo(f"{out}: judge trained on {n['stance']} stance examples and {n['xstest']} XSTest completions "
               f"({card['n_left_out_test_set_prompts']} examples left out: prompts of the test set)")
    for row in card["xstest_folds"]:
        typer.echo(f"held out {row['model']:10} half {row['half']}: binary accuracy {row['judge']:.4f} "
                   f"(string match {row['strmatch']:.4f}) on {row['n']}")


@app.command()
def metrics(
    paths: Annotated[list[Path], typer.Argument(help="Score files, or run directories holding them.")],
    out: Annotated[Path | None, typer.Option("--out", help="Directory for metrics.csv and metrics.json.")] = None,
) -> None:
    """Rates with Wilson 95% intervals and means per (model, suite, category, scorer), with scored/unscored counts."""
    from safemix.metrics import compute_metrics, read_scores, rows_to_csv, write_metrics

    rows = compute_metrics(read_scores(paths))
    if out is not None:
        for path in write_metrics(rows, out):
            typer.echo(f"wrote {path}", err=True)
    typer.echo(rows_to_csv(rows), nl=False)


@app.command()
def report(
    run_dirs: Annotated[list[Path], typer.Argument(help="Run directories of 'safemix run' (each holds run.json).")],
    out: Annotated[Path | None, typer.Option("--out", help="Report directory (default: the run directory; required "
                                                          "with several runs).")] = None,
) -> None:
    """Write summary.csv, report.md and a self-contained report.html with plots for one or more runs."""
    from safemix.report import write_report

    if out is None and len(run_dirs) > 1:
        raise InputError("--out is required with several run directories")
    paths = write_report(run_dirs, out or run_dirs[0])
    typer.echo(f"wrote {paths['html']}, {paths['markdown']}, {paths['summary']}")


@app.command()
def capability(
    out: Annotated[Path, typer.Option("--out", help="Output directory: results.json, samples_<task>.jsonl, tasks/.")],
    base_model: Annotated[str, typer.Option("--base-model", help="Model dir, built-in name or HF id.")],
    adapter: Annotated[Path | None, typer.Option("--adapter", help="LoRA adapter dir written by 'safemix train'.")] = None,
    task: Annotated[list[str] | None, typer.Option("--task", help="piqa, boolq, openbookqa (default: all three), arc_easy, arc_challenge, winogrande; repeatable.")] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="The first N items of each task (default: all).")] = None,
    num_fewshot: Annotated[int | None, typer.Option("--num-fewshot", help="Examples before each item (default 0).")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="Requests per forward pass (default 8).")] = None,
    device: Annotated[str | None, typer.Option(help="cpu (default), cuda or cuda:N.")] = None,
    source: Annotated[str | None, typer.Option(help="local (data dir files, offline) or harness (lm-eval's built-in tasks).")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="Experiment YAML with a 'capability' section.")] = None,
    data_dir: DataDirOption = None,
    overrides: SetOption = None,
) -> None:
    """Accuracy on multiple-choice benchmarks through lm-evaluation-harness; finished tasks are not rerun."""
    from safemix.capability.config import CapabilityConfig
    from safemix.capability.run import evaluate_capability
    from safemix.config import load_command_settings
    from safemix.data.catalog import default_data_dir

    flags = {
        "capability.tasks": task,
        "capability.limit": limit,
        "capability.num_fewshot": num_fewshot,
        "capability.batch_size": batch_size,
        "capability.device": device,
        "capability.source": source,
        "data_dir": str(data_dir) if data_dir else None,
    }
    settings = load_command_settings("capability", CapabilityConfig, config, flags, overrides or [],
                                     default=CapabilityConfig())
    results = evaluate_capability(settings.section, base_model, adapter, out, default_data_dir(settings.data_dir))
    for row in results["results"]:
        typer.echo(f"{row['task']:14} {row['metric']:9} {row['value']:.4f} n={row['n']}")
    typer.echo(f"wrote {out / 'results.json'}", err=True)


StudyOption = Annotated[str, typer.Option("--study", help="Study name; its database is STUDIES_DIR/NAME.sqlite.")]
StudiesDirOption = Annotated[Path, typer.Option("--studies-dir", help="Folder of study databases; RUN_DIR/studies "
                                                                      "puts a study in that run's report.")]


@annotate_app.command("serve")
def annotate_serve(
    study: StudyOption,
    generations: Annotated[list[Path] | None, typer.Option("--generations", help="A generations JSONL file or directory per model: --generations A.jsonl B.jsonl ... (needed to create the study).")] = None,
    more_generations: Annotated[list[Path] | None, typer.Argument(help="The further inputs after --generations A.jsonl.", show_default=False)] = None,
    name: Annotated[list[str] | None, typer.Option("--name", help="Model name per input, in the same order (default: run label, generations manifest, folder); repeatable.")] = None,
    sample: Annotated[int | None, typer.Option("--sample", help="Show N prompts, stratified by suite (default: all).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the sample, the item order and the answer order.")] = 0,
    studies_dir: StudiesDirOption = Path("studies"),
    host: Annotated[str, typer.Option(help="Address to listen on; other machines can reach anything but loopback.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on (0: any free port).")] = 8765,
    token: Annotated[str | None, typer.Option("--token", envvar="SAFEMIX_ANNOTATE_TOKEN", help="Access token every request must carry (or set $SAFEMIX_ANNOTATE_TOKEN).")] = None,
) -> None:
    """Create or reopen a study and serve the annotation pages until Ctrl+C; judgements are saved as they come."""
    from safemix.annotate.server import bind_server, create_app, run_server
    from safemix.annotate.store import open_study

    if more_generations and generations and len(generations) > 1:
        raise InputError("--generations: give the inputs either as --generations A B C or as --generations A "
                         "--generations B, not both (their order names the models)")
    inputs = [*(generations or []), *(more_generations or [])]
    opened = open_study(studies_dir, study, inputs, name or [], sample, seed)
    server = bind_server(create_app(opened, token), host, port)
    shown_host = f"[{host}]" if ":" in host else host
    typer.echo(f"{opened.path}: {opened.n_items()} items, {len(opened.model_names())} models (hidden); annotate at "
               f"http://{shown_host}:{server.port}/ (Ctrl+C stops)")
    run_server(server)


@annotate_app.command("export")
def annotate_export(
    study: StudyOption,
    studies_dir: StudiesDirOption = Path("studies"),
    out: Annotated[Path | None, typer.Option("--out", help="Output folder (default: STUDIES_DIR/NAME-export).")] = None,
) -> None:
    """Write the study's judgements with the models unblinded: answers and preferences, as CSV and JSONL."""
    from safemix.annotate.export import export_study
    from safemix.annotate.store import open_study

    for path in export_study(open_study(studies_dir, study), out or studies_dir / f"{study}-export"):
        typer.echo(str(path))


@annotate_app.command("stats")
def annotate_stats(
    study: StudyOption,
    studies_dir: StudiesDirOption = Path("studies"),
    scores: Annotated[list[Path] | None, typer.Option("--scores", help="Score files (or folders) of the same answers: each scorer's agreement with the people; repeatable.")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write every figure to this JSON file.")] = None,
) -> None:
    """Human rates with intervals, pairwise preference, inter-annotator agreement, and scorer agreement."""
    from dataclasses import asdict

    from safemix.annotate.stats import check_scores_match, render_text, study_stats
    from safemix.annotate.store import open_study
    from safemix.files import write_json_atomic
    from safemix.metrics import read_scores

    opened = open_study(studies_dir, study)
    score_lines = read_scores(scores) if scores else []
    check_scores_match(opened, score_lines)
    stats = study_stats(opened, score_lines)
    if json_out is not None:
        write_json_atomic(json_out, asdict(stats))
    typer.echo(render_text(stats), nl=False)


@judge_app.command("audit")
def judge_audit(
    run_dir: Annotated[Path, typer.Argument(help="A finished run directory of 'safemix run' (run.json, generations, scores).")],
    n: Annotated[int, typer.Option("--n", help="The most answers on which the refusal scorers disagree (sampled, stratified by model).")] = 100,
    control: Annotated[int, typer.Option("--control", help="Answers drawn uniformly from every judged answer: the unbiased accuracy estimate.")] = 50,
    seed: Annotated[int, typer.Option(help="Seed of both samples and of the study's item order.")] = 0,
    study: Annotated[str, typer.Option("--study", help="Study name; also the folder RUN_DIR/audit/NAME.")] = "judge-audit",
    studies_dir: Annotated[Path | None, typer.Option("--studies-dir", help="Folder of study databases (default RUN_DIR/studies, which the report reads).")] = None,
) -> None:
    """Build an annotation study that checks the run's refusal scorers against people's labels."""
    from safemix.annotate.audit import audit_summary, build_audit

    result = build_audit(run_dir, study, studies_dir, n=n, n_control=control, seed=seed)
    for line in audit_summary(result):
        typer.echo(line)


def parse_k_list(text: str) -> list[int]:
    """Parse ``--n-safety`` ("0,100,300") into distinct non-negative integers, or raise an input error."""
    parts = [part.strip() for part in text.split(",")]
    try:
        values = [int(part) for part in parts]
    except ValueError:
        raise InputError(f"--n-safety {text!r}: expected comma-separated non-negative integers, e.g. 0,100,300") from None
    if any(value < 0 for value in values):
        raise InputError(f"--n-safety {text!r}: values must be >= 0")
    if len(set(values)) != len(values):
        raise InputError(f"--n-safety {text!r}: values must be distinct")
    return values


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the app and map errors to exit codes (2 input, 1 runtime)."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    try:
        code = app(args=args, prog_name="safemix", standalone_mode=False)
    except InputError as err:
        if debug:
            raise
        typer.echo(f"safemix: error: {err}", err=True)
        code = 2
    except ValidationError as err:
        if debug:
            raise
        typer.echo(f"safemix: error: {first_problem(err)}", err=True)
        code = 2
    except click.ClickException as err:
        err.show()
        code = err.exit_code
    except click.exceptions.Abort:
        typer.echo("safemix: aborted", err=True)
        code = 130
    except Exception as err:
        if debug:
            raise
        typer.echo(f"safemix: error: {type(err).__name__}: {err} (run with --debug for the traceback)", err=True)
        code = 1
    sys.exit(code if isinstance(code, int) else 0)
