"""The command line as a user meets it: exit codes, one-line errors, no torch on the fast paths."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from safemix.run_files import mixture_config_hash
from tests.conftest import TEST_DATA, run_cli

GOOD = TEST_DATA / "good"
BAD = TEST_DATA / "bad"


@pytest.mark.parametrize("args", [["--help"], ["validate", "configs/demo-data.yaml"], ["data", "ls"]])
def test_fast_paths_do_not_import_torch(args: list[str]) -> None:
    code = (
        "import sys\nfrom safemix.cli import main\n"
        f"try:\n    main({args!r})\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
        "heavy = [m for m in ('torch', 'transformers', 'datasets') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parents[2])
    assert result.returncode == 0, result.stderr


def test_validate_reports_every_error_and_exits_2(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("name: x\ndata:\n  general: nosuchsource\n  safety: paper-safety\n  n_general: ten\n  n_safety: [0]\nextra: 1\n")
    result = run_cli("validate", str(config))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"{config}: data.general: unknown catalog source 'nosuchsource'; 'safemix data ls' lists them",
        f"{config}: data.n_general: Input should be a valid integer, unable to parse string as an integer",
        f"{config}: extra: Extra inputs are not permitted",
    ]


def test_validate_ok_with_override() -> None:
    result = run_cli("validate", "configs/demo-data.yaml", "--set", "data.n_general=100")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("configs/demo-data.yaml: ok (config hash ")


def test_data_ls_lists_the_catalog() -> None:
    result = run_cli("data", "ls", "--kind", "prompts")
    assert result.returncode == 0, result.stderr
    names = [line.split()[0] for line in result.stdout.splitlines()[1:]]
    assert {"i-malicious-instructions", "xstest", "advbench", "strongreject"} <= set(names)
    assert "paper-safety" not in names


def _build_args(out: Path, general: str = str(GOOD / "general.json"), n_safety: str = "0,5") -> list[str]:
    return ["data", "build", "--general", general, "--safety", str(GOOD / "safety.jsonl"),
            "--n-general", "20", "--n-safety", n_safety, "--val-size", "5", "--out", str(out)]


def test_build_writes_mixtures_config_and_manifest(tmp_path: Path) -> None:
    result = run_cli(*_build_args(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "config.yaml", "manifest.json", "mixture-0.jsonl", "mixture-5.jsonl", "val.jsonl"
    ]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    resolved = yaml.safe_load((tmp_path / "out" / "config.yaml").read_text())
    assert manifest["config_hash"] == mixture_config_hash(resolved["data"], resolved["seed"])  # as the pipeline's


def test_build_from_config_with_flag_and_set_overrides(tmp_path: Path) -> None:
    config = tmp_path / "exp.yaml"
    config.write_text(f"name: t\ndata:\n  general: {GOOD / 'general.json'}\n  safety: {GOOD / 'safety.jsonl'}\n"
                      "  n_general: 50\n  n_safety: [1]\n")
    result = run_cli("data", "build", "--config", str(config), "--n-general", "10", "--set", "data.n_safety=[2, 3]",
                     "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "out").glob("mixture-*")) == ["mixture-2.jsonl", "mixture-3.jsonl"]
    assert len((tmp_path / "out" / "mixture-3.jsonl").read_text().splitlines()) == 13


BAD_BUILDS = {
    "invalid_json.json": "line 2, column 22: invalid JSON: Expecting ',' delimiter",
    "missing_output.json": "record 1: field 'output' is missing",
    "wrong_type.jsonl": "line 2: field 'output' must be a string, got number",
    "empty.json": "file is empty",
    "latin1.json": "line 1: not valid UTF-8 (byte 0xe9 at offset 21)",
}


@pytest.mark.parametrize("name", sorted(BAD_BUILDS))
def test_bad_input_file_exits_2_with_one_line_and_writes_nothing(name: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_cli(*_build_args(out, general=str(BAD / name)))
    assert result.returncode == 2
    assert result.stderr == f"safemix: error: {BAD / name}: {BAD_BUILDS[name]}\n"
    assert not out.exists()


@pytest.mark.parametrize(
    ("n_safety", "message"),
    [
        ("0,abc", "--n-safety '0,abc': expected comma-separated non-negative integers, e.g. 0,100,300"),
        ("0,-1", "--n-safety '0,-1': values must be >= 0"),
        ("5,5", "--n-safety '5,5': values must be distinct"),
        ("", "--n-safety '': expected comma-separated non-negative integers, e.g. 0,100,300"),
    ],
)
def test_bad_k_list(n_safety: str, message: str, tmp_path: Path) -> None:
    result = run_cli(*_build_args(tmp_path / "out", n_safety=n_safety))
    assert (result.returncode, result.stderr) == (2, f"safemix: error: {message}\n")


def test_unknown_catalog_name(tmp_path: Path) -> None:
    result = run_cli(*_build_args(tmp_path / "out", general="alpaca-clean"))
    assert result.returncode == 2
    assert result.stderr == (
        "safemix: error: command line: data.general: unknown catalog source 'alpaca-clean'; "
        "did you mean alpaca-cleaned, alpaca-eval, i-alpaca?\n"
    )


def test_failed_rebuild_keeps_earlier_output(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert run_cli(*_build_args(out)).returncode == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    result = run_cli(*_build_args(out, general=str(BAD / "missing_output.json")))
    assert result.returncode == 2
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    result = run_cli("--debug", *_build_args(tmp_path / "out", general=str(BAD / "empty.json")))
    assert result.returncode != 0
    assert "Traceback" in result.stderr and "InputError" in result.stderr


def test_fetch_unknown_name_downloads_nothing() -> None:
    result = run_cli("data", "fetch", "paper-safety", "nosuch")
    assert (result.returncode, result.stderr) == (2, "safemix: error: unknown catalog source 'nosuch'; 'safemix data ls' lists them\n")


def test_fetch_present_source_prints_its_local_path(data_dir: Path) -> None:
    result = run_cli("data", "fetch", "paper-safety", env={"SAFEMIX_DATA_DIR": str(data_dir)})
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"paper-safety: {data_dir / 'safety-tuned-llamas/training/safety_only_data_Instructions.json'}\n"


def test_data_show_gives_origin_checksum_and_local_copy(data_dir: Path) -> None:
    result = run_cli("data", "show", "xstest", "--data-dir", str(data_dir))
    assert result.returncode == 0, result.stderr
    lines = dict(line.split(": ", 1) for line in result.stdout.splitlines())
    assert lines["kind"] == "prompts" and lines["rows"] == "450"
    assert lines["origin"].startswith("https://raw.githubusercontent.com/paul-rottger/exaggerated-safety/")
    assert lines["local"] == str(data_dir / "xstest" / "xstest_prompts.csv")


def test_set_names_dotted_config_keys_for_scorer_judge_and_rewriter_settings(caplog: pytest.LogCaptureFixture) -> None:
    from safemix.cli import tool_settings

    full = tool_settings({"model": "m", "device": None}, ["winrate.judge.max_new_tokens=32", "winrate.judge.a.b=1"],
                         "winrate.judge")
    assert full == {"model": "m", "max_new_tokens": 32, "a.b": 1}
    assert not caplog.records
    assert tool_settings({}, ["max_tokens=256"], "scoring.llm-judge") == {"max_tokens": 256}  # the earlier short form
    assert [record.getMessage() for record in caplog.records] == [
        "--set max_tokens=256: write --set scoring.llm-judge.max_tokens=256 (the short form is deprecated)"]
