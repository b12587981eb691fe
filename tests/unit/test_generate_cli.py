"""``safemix suites`` and ``safemix generate`` as a user meets them: output, exit codes, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, run_cli


def run_without_torch(args: list[str]) -> subprocess.CompletedProcess[str]:
    """Run the CLI in a fresh interpreter and fail if torch, transformers or datasets got imported."""
    code = (
        "import sys\nfrom safemix.cli import main\n"
        f"try:\n    main({args!r})\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
        "heavy = [m for m in ('torch', 'transformers', 'datasets') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT)


def test_suites_lists_sizes_without_importing_torch(data_dir: Path) -> None:
    result = run_without_torch(["suites", "--data-dir", str(data_dir)])
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines()[1:]}
    assert rows["i-malicious-instructions"][1:6] == ["I-MaliciousInstructions", "98", "2", "harmful", "98"]
    assert rows["xstest"][1:8] == ["-", "450", "0", "safe", "250,", "harmful", "200"]
    assert rows["o-controversial"][1:4] == ["O-Controversial", "40", "0"]


def test_fake_generation_does_not_import_torch(tmp_path: Path, data_dir: Path) -> None:
    args = ["generate", "--backend", "fake", "--base-model", "m", "--suite", "i-alpaca", "--data-dir", str(data_dir),
            "--out", str(tmp_path / "out"), "--quiet"]
    result = run_without_torch(args)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # --quiet: no progress bar, no info logs
    assert len((tmp_path / "out" / "i-alpaca.jsonl").read_text().splitlines()) == 50


def test_prints_one_line_per_suite_file(tmp_path: Path, data_dir: Path) -> None:
    result = run_cli("generate", "--backend", "fake", "--base-model", "m", "--suite", "I-Alpaca", "--suite", "q-harm",
                     "--data-dir", str(data_dir), "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"{tmp_path / 'out' / 'i-alpaca.jsonl'}: 50 answers",
                                          f"{tmp_path / 'out' / 'q-harm.jsonl'}: 100 answers"]
    assert "prompt/s" in result.stderr  # the progress bar shows a rate


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--suite", "q-harmm"], "command line: generate.suites.0: unknown suite 'q-harmm' (did you mean q-harm?); "
                                 "known suites: i-malicious-instructions, i-cona, "),
        (["--suite", "{empty}", "--suite-category", "safe"], "{empty}: file is empty"),
        (["--suite", "{header}", "--suite-category", "safe"], "{header}: holds a header but no records"),
        (["--suite", "{header}"], "command line: generate.suites.0: suite file {header}: give its category, harmful, "
                                  "safe or general (--suite-category, or 'category' in the config)"),
        (["--suite", "i-alpaca", "--preset", "beam"], "command line: generate.preset: unknown preset 'beam'; "
                                                      "known presets: greedy, paper"),
        ([], "generate.suites: name at least one suite (--suite NAME); 'safemix suites' lists them"),
        (["--suite", "i-alpaca", "--backend", "openai", "--adapter", "{header}"], "--adapter: the openai backend cannot "
                                                                                  "load adapters; serve the adapter"),
    ],
)
def test_bad_input_exits_2_with_one_line(args: list[str], message: str, tmp_path: Path) -> None:
    empty, header = tmp_path / "empty.jsonl", tmp_path / "header.csv"
    empty.write_text("\n")
    header.write_text("prompt\n")
    args = [arg.format(empty=empty, header=header) for arg in args]
    result = run_cli("generate", "--backend", "fake", "--base-model", "m", *args, "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("safemix: error: " + message.format(empty=empty, header=header))


def test_other_settings_exit_2_unless_overwrite(tmp_path: Path, data_dir: Path) -> None:
    base = ["generate", "--backend", "fake", "--base-model", "m", "--suite", "i-alpaca", "--data-dir", str(data_dir),
            "--out", str(tmp_path / "out"), "--quiet"]
    assert run_cli(*base).returncode == 0
    refused = run_cli(*base, "--max-new-tokens", "7")
    assert refused.returncode == 2
    assert refused.stderr.strip() == (f"safemix: error: {tmp_path / 'out'}: holds a run with other settings "
                                      "(decoding.max_new_tokens: 128 -> 7); use --overwrite or another --out")
    assert run_cli(*base, "--max-new-tokens", "7", "--overwrite").returncode == 0
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["settings"]["decoding"]["max_new_tokens"] == 7


def test_generate_section_of_an_experiment_file(tmp_path: Path, data_dir: Path) -> None:
    config = tmp_path / "exp.yaml"
    config.write_text("name: t\ndata:\n  general: llamafactory-alpaca-en-demo\n  safety: paper-safety\n"
                      "  n_general: 10\n  n_safety: [0]\n"
                      "generate:\n  backend: fake\n  base_model: m\n  suites: [I-Controversial]\n  preset: paper\n")
    result = run_cli("generate", "--config", str(config), "--set", "generate.decoding.max_new_tokens=5",
                     "--data-dir", str(data_dir), "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    settings = json.loads((tmp_path / "out" / "manifest.json").read_text())["settings"]
    assert (settings["decoding"]["num_beams"], settings["decoding"]["max_new_tokens"]) == (4, 5)
    assert run_cli("validate", str(config)).returncode == 0
