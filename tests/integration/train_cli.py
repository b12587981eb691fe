"""Running `safemix train` (and the other commands) in the test process, on the tiny model and mixture."""

from __future__ import annotations

from pathlib import Path

import pytest

from safemix.cli import main

#: A few quick optimiser steps: two micro-batches per step, a short warm-up, a learning rate that moves the tiny model.
SHORT_RUN = ("--batch-size", "8", "--micro-batch-size", "4", "--warmup-steps", "2", "--learning-rate", "1e-2", "--quiet")


def train_args(tiny_model_dir: Path, tiny_mixture: tuple[Path, Path], out: Path, *extra: str) -> list[str]:
    """The command line of a short training run of the tiny model on the tiny mixture into ``out``."""
    train_file, val_file = tiny_mixture
    return ["train", "--base-model", str(tiny_model_dir), "--train", str(train_file), "--val", str(val_file),
            "--out", str(out), *SHORT_RUN, *extra]


def run_main(*args: str) -> int:
    """Run the CLI in this process (no second torch import); return its exit code."""
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    return exit_info.value.code
