"""What a finished training run leaves besides the adapter: the log, the loss plot, the config and a manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

import safemix
from safemix.files import atomic_writer, write_json_atomic, write_text_atomic
from safemix.run_files import DIRECTORY_MANIFEST, TRAIN_LOG, TrainManifest, write_manifest
from safemix.train.checkpoint import TrainerState
from safemix.versions import package_versions

LOSS_PLOT = "loss.png"
CONFIG_FILE = "train_config.yaml"


def train_log(state: TrainerState, facts: dict[str, Any]) -> dict[str, Any]:
    """The content of ``train_log.json``: the best step, the loss history and the throughput figures."""
    total_tokens = state.padded_tokens
    return {
        "run_hash": state.run_hash,
        "steps": state.step,
        "best_step": state.best_step,
        "best_val_loss": state.best_val_loss,
        "train_loss": state.train_history,
        "val_loss": state.val_history,
        "real_tokens": state.real_tokens,
        "padding_tokens": total_tokens - state.real_tokens,
        "padding_fraction": (total_tokens - state.real_tokens) / total_tokens if total_tokens else 0.0,
        "train_seconds": state.train_seconds,
        "resumed_at_steps": state.resumed_at,
        "real_tokens_per_second": state.real_tokens / state.train_seconds if state.train_seconds else None,
        **facts,
    }


def write_loss_plot(path: Path, state: TrainerState, title: str) -> None:
    """Plot training loss per step and validation loss per evaluation, marking the best step."""
    import matplotlib

    matplotlib.use("Agg")  # no display; the plot goes to a file
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4), dpi=100)
    axes.plot([r["step"] for r in state.train_history], [r["loss"] for r in state.train_history], label="train")
    axes.plot([r["step"] for r in state.val_history], [r["loss"] for r in state.val_history], "o-", label="validation")
    if state.best_step is not None:
        axes.axvline(state.best_step, color="grey", linestyle=":", label=f"best step {state.best_step}")
    axes.set_xlabel("optimizer step")
    axes.set_ylabel("loss (mean per token)")
    axes.set_title(title)
    axes.legend()
    figure.tight_layout()
    with atomic_writer(path, "wb") as handle:
        figure.savefig(handle, format="png", metadata={"Software": None})
    plt.close(figure)


def write_run_files(
    out_dir: Path, state: TrainerState, resolved_config: dict[str, Any], facts: dict[str, Any], inputs: dict[str, Any],
    environment: dict[str, Any],
) -> None:
    """Write the config, loss plot, manifest and, last (it marks the run complete), ``train_log.json``.

    ``environment`` (:func:`safemix.versions.compute_environment`) goes into the manifest only: it explains
    differences between machines and takes no part in the run hash.
    """
    header = f"# resolved safemix train config, run hash {state.run_hash}\n"
    write_text_atomic(out_dir / CONFIG_FILE, header + yaml.safe_dump({"train": resolved_config}, sort_keys=False))
    write_loss_plot(out_dir / LOSS_PLOT, state, f"{resolved_config['base_model']} on {Path(str(resolved_config['train_file'])).name}")
    write_manifest(out_dir / DIRECTORY_MANIFEST, TrainManifest(
        safemix_version=safemix.__version__,
        run_hash=state.run_hash,
        settings=resolved_config,
        inputs=inputs,
        outputs={"adapter": "adapter/", "log": TRAIN_LOG, "plot": LOSS_PLOT, "config": CONFIG_FILE},
        versions=package_versions(("torch", "transformers", "peft", "accelerate")),
        environment=environment,
    ))
    write_json_atomic(out_dir / TRAIN_LOG, train_log(state, facts))
