"""The LoRA safety-tuning recipe, top to bottom: ``train(config, out_dir)``.

A plain loop on ``accelerate`` rather than HF Trainer or TRL, because the things this recipe must guarantee are
easiest to see and test when written out: the batch plan is a pure function of (seed, step), so a resumed run
replays exactly the batches an uninterrupted one would; the loss is the mean over every label token of the
effective batch (micro-batches, gradient accumulation and processes included); the best checkpoint is chosen
from the validation losses the log shows; and the same code runs in one process or under ``accelerate launch``
(DDP, DeepSpeed, FSDP). See docs/training.md.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from safemix.errors import InputError, input_error
from safemix.files import canonical_json, sha256_file, sha256_text, write_dir_atomic
from safemix.models.adapters import AdapterInfo
from safemix.models.dtypes import Dtype, check_device_options, keep_4bit_layers_trainable, resolve_dtype
from safemix.models.loading import load_base_model, load_tokenizer
from safemix.models.resolve import model_fingerprint, resolve_model
from safemix.progress import progress_bar
from safemix.prompts import get_template
from safemix.records import Example
from safemix.run_files import TRAIN_LOG
from safemix.train.checkpoint import (
    ADAPTER_SUBDIR,
    CHECKPOINTS_DIR,
    TrainerState,
    checkpoint_dir,
    latest_checkpoint,
    load_checkpoint,
    prune_checkpoints,
    register_adapter_hooks,
    save_checkpoint,
)
from safemix.train.config import TrainConfig
from safemix.train.data import (
    IGNORE_INDEX,
    BatchPlan,
    Encoded,
    collate,
    encode_example,
    length_batches,
    padded_tokens,
    read_examples,
)
from safemix.train.outputs import train_log, write_run_files
from safemix.train.sharded import ShardedTrainingState, check_sharded_loading, sharded_lora_model
from safemix.versions import compute_environment

log = logging.getLogger(__name__)

MIXED_PRECISION = {"float32": "no", "bfloat16": "bf16", "float16": "fp16"}


@dataclass(frozen=True)
class TrainResult:
    """Where a finished run put its adapter, and what the log says about it."""

    adapter_dir: Path
    log: dict[str, Any]


def train(config: TrainConfig, out_dir: Path) -> TrainResult:
    """Fine-tune ``config.base_model`` with LoRA on ``config.train_file``; keep the best step by validation loss.

    Writes ``out_dir/adapter/`` (PEFT format plus ``safemix_adapter.json``), ``train_log.json``, ``loss.png``,
    ``train_config.yaml`` and ``manifest.json``. Running the same command again after a crash resumes from the
    last checkpoint; running it after a finished run returns that run.

    Raises:
        InputError: bad input files, a missing model, settings the hardware or process count cannot honour, or an
            ``out_dir`` that holds a run with other settings.
    """
    import torch
    from accelerate import Accelerator, PartialState
    from accelerate.state import AcceleratorState
    from accelerate.utils import set_seed

    out_dir = Path(out_dir)
    # Without CUDA, processes started by `accelerate launch` / torchrun join over gloo on the CPU.
    on_cpu = not torch.cuda.is_available()
    processes = PartialState(cpu=on_cpu)
    if not processes.is_main_process:
        logging.getLogger("safemix").setLevel(logging.WARNING)  # one process reports; the others stay quiet
    logging.getLogger("accelerate").setLevel(logging.WARNING)  # it logs every checkpoint file at INFO
    dtype = resolve_dtype(config.dtype, "cpu" if on_cpu else "cuda")
    check_device_options("cpu" if on_cpu else "cuda", dtype, config.load_in_4bit, config.load_in_8bit)

    # 1. Inputs: the mixture, the validation split and the base model, all checked before any weights load.
    train_file, val_file = _input_files(config)
    train_examples = read_examples(train_file)
    val_examples = read_examples(val_file)
    micro_batches_per_step = _micro_batches_per_step(config, processes.num_processes)
    with processes.main_process_first():  # a built-in model is prepared once, not once per process
        resolved = resolve_model(config.base_model)
    if config.sharded_loading:
        check_sharded_loading(config, processes.num_processes, resolved, dtype, processes.distributed_type.value)
    fingerprint = model_fingerprint(resolved)
    run_hash = _run_hash(config, train_file, val_file, fingerprint)
    finished = _finished_run(out_dir, run_hash)
    if finished is not None:
        log.info("%s already holds this finished run (best step %s); nothing to do", out_dir, finished["best_step"])
        return TrainResult(out_dir / ADAPTER_SUBDIR, finished)

    # 2. Tokenise with the template generation will use.
    tokenizer = load_tokenizer(resolved)
    template = get_template(config.template, tokenizer)
    train_set = _encode(train_examples, config, template, tokenizer)
    val_set = _encode(val_examples, config, template, tokenizer)
    _check_loss_tokens(config, train_set, val_set)

    # 3. Model, optimizer, schedule, under accelerate. Its mixed-precision state is per process and fixed once set;
    # forget it (the process group in PartialState stays) so that runs with another dtype can follow in one process.
    AcceleratorState._reset_state()
    accelerator = Accelerator(
        cpu=on_cpu,
        gradient_accumulation_steps=micro_batches_per_step // processes.num_processes,
        mixed_precision=MIXED_PRECISION[dtype],
        step_scheduler_with_optimizer=False,  # stepped by hand, once per optimizer step
    )
    set_seed(config.seed)
    if config.sharded_loading:
        model = sharded_lora_model(config, resolved, _lora_config(config), accelerator.device.type, dtype)
    else:
        model = _lora_model(config, resolved, str(accelerator.device), dtype)
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=config.learning_rate, weight_decay=config.weight_decay
    )
    plan = BatchPlan(
        [len(e.input_ids) for e in train_set], config.micro_batch_size, micro_batches_per_step, config.seed,
        config.length_grouping,
    )
    total_steps = config.max_steps or plan.steps_for_epochs(config.epochs)
    scheduler = _linear_schedule(optimizer, config.warmup_steps, total_steps)
    if config.sharded_loading:
        # FSDP2 already shards the model: accelerate keeps the accumulation and RNG states, and checkpoints the
        # adapter, optimizer and schedule through these objects (safemix.train.sharded).
        accelerator.register_for_checkpointing(ShardedTrainingState(model, optimizer), scheduler)
    else:
        _tell_deepspeed_the_micro_batch(accelerator, config.micro_batch_size)
        model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
        register_adapter_hooks(accelerator)

    # 4. Resume from the last checkpoint, or record the base model's validation loss at step 0.
    state = _resume_or_start(accelerator, out_dir, run_hash)
    if not state.val_history:
        state.record_val_loss(0, evaluate(model, accelerator, val_set, config.micro_batch_size, tokenizer.pad_token_id))
    log.info(
        "training %s on %d examples (%d validation), %d steps of %d examples; step %d; validation loss %.4f",
        config.base_model, len(train_set), len(val_set), total_steps, config.batch_size, state.step,
        state.val_history[-1]["loss"],
    )

    # 5. Train; validate and checkpoint every eval_steps and at the end; keep the latest and the best checkpoint.
    model.train()  # from_pretrained returns eval mode; LoRA dropout must be on
    with progress_bar(total_steps, "train", "step") as bar:
        bar.update(state.step)
        while state.step < total_steps:
            _train_step(model, optimizer, scheduler, accelerator, plan, train_set, state, config, tokenizer.pad_token_id)
            bar.update(1)
            bar.set_postfix(loss=f"{state.train_history[-1]['loss']:.3f}")
            if state.step % config.eval_steps == 0 or state.step == total_steps:
                val_loss = evaluate(model, accelerator, val_set, config.micro_batch_size, tokenizer.pad_token_id)
                is_best = state.record_val_loss(state.step, val_loss)
                info = _adapter_info(config, fingerprint, state.step, val_loss)
                save_checkpoint(accelerator, model, state, out_dir, info, sharded=config.sharded_loading)
                prune_checkpoints(accelerator, out_dir, {state.step, state.best_step or state.step})
                log.info("step %d: validation loss %.4f%s", state.step, val_loss, " (best so far)" if is_best else "")

    # 6. The best checkpoint's adapter becomes out_dir/adapter; the log, plot and manifest complete the run.
    facts = {
        "dtype": dtype,
        "n_train": len(train_set),
        "n_val": len(val_set),
        "n_processes": accelerator.num_processes,
        "micro_batches_per_step": micro_batches_per_step,
        "total_steps": total_steps,
        "examples_at_cutoff_len": sum(len(e.input_ids) == config.cutoff_len for e in train_set),
    }
    if accelerator.is_main_process:
        best_adapter = checkpoint_dir(out_dir, state.best_step or state.step) / ADAPTER_SUBDIR
        write_dir_atomic(out_dir / ADAPTER_SUBDIR, lambda tmp: shutil.copytree(best_adapter, tmp, dirs_exist_ok=True))
        inputs = {
            "train_file": {"path": str(train_file), "sha256": sha256_file(train_file)},
            "val_file": {"path": str(val_file), "sha256": sha256_file(val_file)},
            "base_model": {"name": config.base_model, "fingerprint": fingerprint},
        }
        write_run_files(out_dir, state, config.model_dump(mode="json"), facts, inputs,
                        compute_environment(str(accelerator.device)))
        shutil.rmtree(out_dir / CHECKPOINTS_DIR)
    accelerator.wait_for_everyone()
    summary = train_log(state, facts)
    log.info(
        "best step %s (validation loss %.4f); %.0f real tokens/s, padding %.1f%%; adapter in %s",
        summary["best_step"], summary["best_val_loss"], summary["real_tokens_per_second"] or 0.0,
        100 * summary["padding_fraction"], out_dir / ADAPTER_SUBDIR,
    )
    return TrainResult(out_dir / ADAPTER_SUBDIR, summary)


TrainStatus = Literal["absent", "partial", "finished", "stale"]


def train_status(config: TrainConfig, out_dir: Path) -> TrainStatus:
    """What ``out_dir`` holds for this run, without loading weights: nothing, a checkpoint to resume from, the
    finished run, or a run with other settings or inputs (``stale``)."""
    out_dir = Path(out_dir)
    if not out_dir.exists():
        return "absent"
    train_file, val_file = _input_files(config)
    run_hash = _run_hash(config, train_file, val_file, model_fingerprint(resolve_model(config.base_model)))
    try:
        finished = _finished_run(out_dir, run_hash)
    except InputError:
        return "stale"
    if finished is not None:
        return "finished"
    return "partial" if latest_checkpoint(out_dir) is not None else "absent"


def _micro_batches_per_step(config: TrainConfig, num_processes: int) -> int:
    """Micro-batches in one optimizer step over all processes; each process must get the same number."""
    per_step, remainder = divmod(config.batch_size, config.micro_batch_size)
    if remainder or per_step % num_processes:
        raise InputError(
            f"train.batch_size {config.batch_size} must be a multiple of train.micro_batch_size "
            f"{config.micro_batch_size} x {num_processes} process(es)"
        )
    return per_step


def _input_files(config: TrainConfig) -> tuple[Path, Path]:
    if config.train_file is None or config.val_file is None:
        raise InputError("train.train_file and train.val_file must both be set (--train FILE --val FILE)")
    return config.train_file, config.val_file


def _run_hash(config: TrainConfig, train_file: Path, val_file: Path, fingerprint: str) -> str:
    """Identity of a run: the settings, the input files' bytes and the base model. A rerun must match it.

    The input files count by content, never by path: a run directory that was moved or copied is the same run.
    ``sharded_loading`` counts only when on (its LoRA weights start from another draw): off, a run is what it was
    before the setting existed, so adapters trained then are not trained again.
    """
    left_out = {"train_file", "val_file"} | (set() if config.sharded_loading else {"sharded_loading"})
    identity = {
        "config": config.model_dump(mode="json", exclude=left_out),
        "train_sha256": sha256_file(train_file),
        "val_sha256": sha256_file(val_file),
        "base_model": fingerprint,
    }
    return sha256_text(canonical_json(identity))[:16]


def _finished_run(out_dir: Path, run_hash: str) -> dict[str, Any] | None:
    """The log of a finished run of the same settings in ``out_dir``; an error if it holds another run."""
    log_path = out_dir / TRAIN_LOG
    found = [json.loads(log_path.read_text(encoding="utf-8"))] if log_path.is_file() else []
    checkpoint = latest_checkpoint(out_dir)
    if checkpoint is not None:
        found.append({"run_hash": TrainerState.read(checkpoint / "trainer_state.json").run_hash})
    for record in found:
        if record["run_hash"] != run_hash:
            raise input_error(
                out_dir,
                f"holds a run with other settings or inputs (run hash {record['run_hash']}, this one {run_hash}); "
                "use another --out",
            )
    return found[0] if log_path.is_file() else None


def _encode(examples: list[Example], config: TrainConfig, template: Any, tokenizer: Any) -> list[Encoded]:
    return [encode_example(e, template, tokenizer, config.cutoff_len, config.train_on_inputs) for e in examples]


def _check_loss_tokens(config: TrainConfig, train_set: list[Encoded], val_set: list[Encoded]) -> None:
    """Refuse a validation set with nothing to score; warn about training examples that teach nothing."""
    if sum(e.n_loss_tokens for e in val_set) == 0:
        raise input_error(str(config.val_file), f"no example has answer tokens within cutoff_len {config.cutoff_len}")
    silent = sum(e.n_loss_tokens == 0 for e in train_set)
    if silent:
        log.warning("%d training examples have no answer tokens within cutoff_len %d", silent, config.cutoff_len)


def _lora_model(config: TrainConfig, resolved: Path | str, device: str, dtype: Dtype) -> Any:
    """Load the base model and wrap it with fresh LoRA adapters (only their weights train)."""
    from peft import get_peft_model, prepare_model_for_kbit_training

    # On a CPU, bfloat16 means autocast (accelerate's mixed precision) over float32 weights.
    weights_dtype = "float32" if device == "cpu" else dtype
    model = load_base_model(
        resolved, dtype=weights_dtype, device=device, load_in_4bit=config.load_in_4bit, load_in_8bit=config.load_in_8bit
    )
    model.config.use_cache = False  # the KV cache only costs memory during training
    if config.load_in_4bit or config.load_in_8bit:
        keep_4bit_layers_trainable(model)  # else validation on a CPU would switch off the gradient through them
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=config.gradient_checkpointing)
    elif config.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    try:
        with warnings.catch_warnings():  # peft 0.21 reads a property transformers 5 deprecates; nothing to act on
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            return get_peft_model(model, _lora_config(config))
    except ValueError as err:  # peft: "Target modules {...} not found in the base model"
        raise InputError(f"train.lora.target_modules {config.lora.target_modules}: {err}") from None


def _lora_config(config: TrainConfig) -> Any:
    """The ``peft.LoraConfig`` of ``config.lora``."""
    from peft import LoraConfig

    return LoraConfig(r=config.lora.r, lora_alpha=config.lora.alpha, lora_dropout=config.lora.dropout,
                      target_modules=config.lora.target_modules, bias="none", task_type="CAUSAL_LM")


def _linear_schedule(optimizer: Any, warmup_steps: int, total_steps: int) -> Any:
    """Linear warm-up to the peak learning rate, then linear decay to 0 at ``total_steps`` (HF's 'linear')."""
    from torch.optim.lr_scheduler import LambdaLR

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return LambdaLR(optimizer, factor)


def _tell_deepspeed_the_micro_batch(accelerator: Any, micro_batch_size: int) -> None:
    """DeepSpeed reads the micro-batch size from a prepared DataLoader; this recipe batches by hand."""
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    if plugin is not None:
        plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = micro_batch_size


def _resume_or_start(accelerator: Any, out_dir: Path, run_hash: str) -> TrainerState:
    checkpoint = latest_checkpoint(out_dir)
    if checkpoint is None:
        return TrainerState(run_hash)
    state = load_checkpoint(accelerator, checkpoint)
    state.resumed_at.append(state.step)
    log.info("resuming from %s", checkpoint)
    return state


def token_loss_sum(model: Any, batch: dict[str, Any]) -> Any:
    """Summed cross-entropy of every label token (each position predicts the next token)."""
    import torch.nn.functional as F

    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    # Shift the labels left rather than the logits right: slicing the logits would copy batch x length x vocab.
    next_tokens = F.pad(batch["labels"][:, 1:], (0, 1), value=IGNORE_INDEX)
    return F.cross_entropy(
        logits.flatten(0, 1).float(), next_tokens.flatten(), ignore_index=IGNORE_INDEX, reduction="sum"
    )


def _train_step(
    model: Any, optimizer: Any, scheduler: Any, accelerator: Any, plan: BatchPlan, train_set: list[Encoded],
    state: TrainerState, config: TrainConfig, pad_token_id: int,
) -> None:
    """One optimizer step over ``plan.step(state.step)``; this process takes every n-th micro-batch."""
    import torch

    started = time.perf_counter()
    batches = plan.step(state.step)
    step_loss_tokens = max(1, sum(train_set[i].n_loss_tokens for batch in batches for i in batch))
    # accelerate divides each backward by the accumulation steps and DDP averages over processes; scaling by
    # their product (= micro-batches per step) over the step's label tokens makes the gradient the mean over
    # every label token of the effective batch, as if it had been one forward pass.
    scale = len(batches) / step_loss_tokens
    loss_sum = torch.zeros((), device=accelerator.device)
    for indices in batches[accelerator.process_index :: accelerator.num_processes]:
        with accelerator.accumulate(model):
            examples = [train_set[i] for i in indices]
            batch = collate(examples, pad_token_id, accelerator.device, config.pad_to_multiple_of)
            batch_loss = token_loss_sum(model, batch)
            accelerator.backward(batch_loss * scale)
        loss_sum += batch_loss.detach()
    if config.max_grad_norm is not None:
        accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
    learning_rate = scheduler.get_last_lr()[0]
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad()
    step_loss = accelerator.reduce(loss_sum, reduction="sum").item() / step_loss_tokens

    state.step += 1
    state.train_history.append({"step": state.step, "loss": step_loss, "learning_rate": learning_rate})
    state.real_tokens += sum(len(train_set[i].input_ids) for batch in batches for i in batch)
    state.padded_tokens += sum(padded_tokens([len(train_set[i].input_ids) for i in batch], config.pad_to_multiple_of)
                               for batch in batches)
    state.train_seconds += time.perf_counter() - started


def evaluate(model: Any, accelerator: Any, val_set: list[Encoded], micro_batch_size: int, pad_token_id: int) -> float:
    """Mean loss per label token over the validation set, shared among the processes."""
    import torch

    batches = length_batches([len(e.input_ids) for e in val_set], micro_batch_size)
    mine = batches[accelerator.process_index :: accelerator.num_processes]
    rounds = -(-len(batches) // accelerator.num_processes)
    totals = torch.zeros(2, device=accelerator.device, dtype=torch.float64)
    model.eval()
    with torch.no_grad():
        for round_index in range(rounds):
            # FSDP and ZeRO-3 need every process in every forward pass: a process without a batch left
            # repeats one and counts it zero times.
            weight = 1.0 if round_index < len(mine) else 0.0
            examples = [val_set[i] for i in (mine[round_index] if weight else batches[0])]
            loss = token_loss_sum(model, collate(examples, pad_token_id, accelerator.device))
            totals[0] += weight * loss.double()
            totals[1] += weight * sum(e.n_loss_tokens for e in examples)
    model.train()
    totals = accelerator.reduce(totals, reduction="sum")
    mean_loss: float = (totals[0] / totals[1]).item()
    return mean_loss


def _adapter_info(config: TrainConfig, fingerprint: str, step: int, val_loss: float) -> AdapterInfo:
    import safemix

    return AdapterInfo(
        base_model=config.base_model,
        base_model_fingerprint=fingerprint,
        template=config.template,
        train_on_inputs=config.train_on_inputs,
        cutoff_len=config.cutoff_len,
        step=step,
        val_loss=val_loss,
        safemix_version=safemix.__version__,
    )
