"""`safemix run` at the command line, without running models: the dry-run plan and bad configs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import REPO_ROOT, run_cli


def test_a_dry_run_plans_every_task_writes_nothing_and_imports_no_torch(tmp_path: Path) -> None:
    out = tmp_path / "run"
    code = (
        "import sys\nfrom safemix.cli import main\n"
        f"try:\n    main(['run', 'configs/quickstart.yaml', '--dry-run', '--out', {str(out)!r}])\n"
        "except SystemExit as e:\n    assert e.code == 0, e.code\n"
        "heavy = [m for m in ('torch', 'transformers', 'peft') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"plan for {out} (22 tasks):"
    stages = [line.split()[0] for line in lines[1:]]
    assert stages == ["data"] + ["train"] * 4 + ["generate"] * 5 + ["score"] * 10 + ["metrics", "report"]
    assert {line.split()[-1] for line in lines[1:]} == {"pending"}
    assert not out.exists()


def test_a_config_without_what_a_run_needs_exits_2_naming_each_key(tmp_path: Path) -> None:
    raw = yaml.safe_load((REPO_ROOT / "configs" / "quickstart.yaml").read_text(encoding="utf-8"))
    del raw["scoring"]
    raw["generate"]["base_model"] = "tiny"
    config = tmp_path / "partial.yaml"
    config.write_text(yaml.safe_dump(raw), encoding="utf-8")
    result = run_cli("run", str(config), "--out", str(tmp_path / "run"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [f"safemix: error: {config}: scoring: required by 'safemix run' "
                     "(and 1 more; run 'safemix validate --run')"], lines
    assert not (tmp_path / "run").exists()
    listed = run_cli("validate", str(config), "--run")
    assert listed.returncode == 2
    assert listed.stderr.splitlines() == [
        f"{config}: scoring: required by 'safemix run'",
        f"{config}: generate.base_model: set by 'safemix run' (train.base_model / sweep); remove it",
    ]
    assert run_cli("validate", "configs/quickstart.yaml", "--run").returncode == 0
