"""compute_environment: what manifests record about the machine (CPU, bfloat16 support, torch threads, device).

torch is replaced by a stand-in so that these tests stay fast and can play any machine.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from safemix import versions
from safemix.versions import compute_environment, cpu_model_name

X86_CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu avx512f avx512_bf16 amx_tile

processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8480+
"""
ARM_CPUINFO = """processor\t: 0
BogoMIPS\t: 243.75
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics
CPU implementer\t: 0x41
"""


def fake_torch(*, threads: int = 3, avx512_bf16: bool = False, amx: bool = False, cuda: bool = False) -> SimpleNamespace:
    """The few torch functions compute_environment calls, answering as the given machine would."""
    return SimpleNamespace(
        __version__="9.9.9+test",
        get_num_threads=lambda: threads,
        cpu=SimpleNamespace(_is_avx512_bf16_supported=lambda: avx512_bf16, _is_amx_tile_supported=lambda: amx),
        cuda=SimpleNamespace(is_available=lambda: cuda, get_device_name=lambda device: f"Test GPU ({device})"),
    )


@pytest.fixture
def on_test_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """Name the CPU 'Test CPU' and the architecture 'x86_64', whatever runs the tests."""
    monkeypatch.setattr(versions, "cpu_model_name", lambda: "Test CPU")
    monkeypatch.setattr(versions.platform, "machine", lambda: "x86_64")


def test_the_cpu_name_is_the_first_model_name_in_cpuinfo(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(X86_CPUINFO)
    assert cpu_model_name(cpuinfo) == "Intel(R) Xeon(R) Platinum 8480+"


@pytest.mark.parametrize("content", [ARM_CPUINFO, None], ids=["no-model-name", "no-cpuinfo"])
def test_without_a_model_name_the_platform_names_the_processor(
    content: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    if content is not None:
        cpuinfo.write_text(content)
    monkeypatch.setattr(versions.platform, "processor", lambda: "arm")
    monkeypatch.setattr(versions.platform, "machine", lambda: "aarch64")
    assert cpu_model_name(cpuinfo) == "arm"
    monkeypatch.setattr(versions.platform, "processor", lambda: "")  # as on most Linux systems
    assert cpu_model_name(cpuinfo) == "aarch64"


@pytest.mark.usefixtures("on_test_cpu")
def test_a_cpu_run_records_the_cpu_its_bfloat16_support_and_the_thread_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", fake_torch(threads=3))
    assert compute_environment("cpu") == {
        "cpu": "Test CPU", "machine": "x86_64", "cpu_native_bfloat16": False, "torch": "9.9.9+test",
        "torch_threads": 3, "device": "cpu", "gpu": None,
    }


@pytest.mark.usefixtures("on_test_cpu")
@pytest.mark.parametrize(("avx512_bf16", "amx"), [(True, False), (False, True), (True, True)])
def test_avx512_bf16_or_amx_is_native_bfloat16(avx512_bf16: bool, amx: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", fake_torch(avx512_bf16=avx512_bf16, amx=amx))
    assert compute_environment("cpu")["cpu_native_bfloat16"] is True


@pytest.mark.usefixtures("on_test_cpu")
def test_a_gpu_run_names_the_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", fake_torch(cuda=True))
    environment = compute_environment("cuda:1")
    assert (environment["device"], environment["gpu"]) == ("cuda:1", "Test GPU (cuda:1)")
    monkeypatch.setitem(sys.modules, "torch", fake_torch(cuda=False))
    assert compute_environment("cuda")["gpu"] is None  # asked for, not there: nothing to name
    monkeypatch.setitem(sys.modules, "torch", fake_torch(cuda=True))
    assert compute_environment("cpu")["gpu"] is None  # a GPU in the machine but not used


def test_the_record_goes_into_a_json_manifest_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", fake_torch(threads=2, amx=True))
    environment = compute_environment("cpu")
    assert json.loads(json.dumps(environment)) == environment
    assert environment["cpu"] == cpu_model_name() != ""
