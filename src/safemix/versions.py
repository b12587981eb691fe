"""What every manifest records about the software and machine that made it.

:func:`package_versions` reads package metadata (nothing is imported). :func:`compute_environment` describes the
arithmetic: the CPU, its bfloat16 support, torch's version, thread count and device. These explain why the same
settings give slightly other numbers on another machine; they are recorded, never compared, so a run directory
copied to another machine is not redone because of them (docs/determinism.md).
"""

from __future__ import annotations

import importlib.metadata
import platform
from pathlib import Path
from typing import Any

import safemix

CPUINFO = Path("/proc/cpuinfo")


def package_versions(packages: tuple[str, ...]) -> dict[str, str]:
    """Python's and safemix's versions and each named package's installed version (``not installed`` if absent)."""
    versions = {"python": platform.python_version(), "safemix": safemix.__version__}
    for package in packages:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def cpu_model_name(cpuinfo: Path = CPUINFO) -> str:
    """The CPU's model name: the first ``model name`` line of ``/proc/cpuinfo`` where there is one (Linux on x86),
    else what :func:`platform.processor` or, failing that, :func:`platform.machine` says."""
    try:
        lines = cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        lines = []
    for line in lines:
        key, _, value = line.partition(":")
        if key.strip() == "model name" and value.strip():
            return value.strip()
    return platform.processor() or platform.machine() or "unknown"


def compute_environment(device: str) -> dict[str, Any]:
    """What makes the same model and settings compute slightly different numbers on another machine.

    Greedy answers and trained weights are byte-identical between runs on one machine, but bfloat16 matmul
    kernels differ between CPUs (native AVX512-BF16 / AMX or not) and the thread count changes how sums are split,
    so another machine may flip an occasional answer. Imports torch, so call it only where a model runs.

    Args:
        device: the torch device the model ran on (``cpu``, ``cuda``, ``cuda:1``).
    """
    import torch

    on_gpu = device.startswith("cuda") and torch.cuda.is_available()
    return {
        "cpu": cpu_model_name(),
        "machine": platform.machine(),
        "cpu_native_bfloat16": bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": device,
        "gpu": torch.cuda.get_device_name(device) if on_gpu else None,
    }
