"""Capability benchmarks without a model: config, task YAMLs and their prompts, data checks, resume, metric rows,
the report section, and the errors a user meets (lm-eval missing, a data file missing, an unknown task)."""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path
from typing import Any

import jinja2
import pytest
import yaml
from pydantic import ValidationError

from safemix.capability.config import TASK_SOURCES, CapabilityConfig, default_cache_dir, resolve_source
from safemix.capability.local_tasks import (
    check_local_file,
    local_data_file,
    shipped_task_text,
    write_local_task,
)
from safemix.capability.run import finished_task, require_lm_eval, samples_file
from safemix.capability.stage import metric_rows
from safemix.cli import main
from safemix.config import validate_config
from safemix.data.catalog import get_source
from safemix.errors import InputError
from safemix.files import sha256_file, write_json_atomic
from safemix.metrics import wilson_interval
from safemix.report.capability import capability_section
from safemix.run_files import ModelEntry, RunIndex, write_run_index

EXPERIMENT = {"name": "x", "data": {"general": "llamafactory-alpaca-en-demo", "safety": "paper-safety", "n_general": 10,
                                   "n_safety": [0, 5]}}


def run_main(*args: str) -> tuple[int, str, str]:
    """The command line in this process: exit code, stdout, stderr."""
    import contextlib
    import io

    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr), pytest.raises(SystemExit) as exit:
        main(list(args))
    return int(exit.value.code or 0), stdout.getvalue(), stderr.getvalue()


def test_defaults_are_the_papers_three_tasks_zero_shot() -> None:
    config = CapabilityConfig()
    assert (config.tasks, config.num_fewshot, config.limit, config.source) == (
        ["piqa", "boolq", "openbookqa"], 0, None, None)


@pytest.mark.parametrize(("raw", "message"), [
    ({"tasks": ["hellaswag"]}, "Input should be 'piqa', 'boolq', 'openbookqa', 'arc_easy', 'arc_challenge' or "
                               "'winogrande'"),
    ({"tasks": ["piqa", "piqa"]}, r"values must be distinct \('piqa' repeats\)"),
    ({"tasks": []}, "List should have at least 1 item"),
    ({"limit": 0}, "Input should be greater than or equal to 1"),
    ({"num_fewshot": -1}, "Input should be greater than or equal to 0"),
    ({"source": "web"}, "Input should be 'local' or 'harness'"),
    ({"tasks": ["piqa"], "shots": 5}, "Extra inputs are not permitted"),
])
def test_bad_settings_are_refused(raw: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        CapabilityConfig.model_validate(raw)


def test_the_experiment_config_takes_a_capability_section() -> None:
    experiment = validate_config({**EXPERIMENT, "capability": {"tasks": ["arc_easy"], "limit": 50}})
    assert experiment.capability == CapabilityConfig(tasks=["arc_easy"], limit=50)
    assert validate_config(EXPERIMENT).capability is None


def test_source_is_local_when_the_files_are_there_or_downloads_are_off(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ("SAFEMIX_OFFLINE", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(variable, raising=False)
    empty, mirror = tmp_path / "empty", tmp_path / "mirror"
    empty.mkdir()
    (mirror / "capability-benchmarks").mkdir(parents=True)
    auto = CapabilityConfig()
    assert resolve_source(auto, mirror) == "local"
    assert resolve_source(auto, empty) == "harness"
    assert resolve_source(CapabilityConfig(source="local"), empty) == "local"
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    assert resolve_source(auto, empty) == "local"


def test_cache_dir_comes_from_the_config_then_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAFEMIX_LM_EVAL_CACHE", str(tmp_path / "env"))
    assert default_cache_dir(CapabilityConfig()) == tmp_path / "env"
    assert default_cache_dir(CapabilityConfig(cache_dir=tmp_path / "mine")) == tmp_path / "mine"


@pytest.mark.parametrize("task", sorted(TASK_SOURCES))
def test_every_task_ships_a_yaml_that_names_it_and_no_file(task: str) -> None:
    config = yaml.safe_load(shipped_task_text(task))
    assert config["task"] == task and config["dataset_path"] == "json" and config["test_split"] == "test"
    assert "dataset_kwargs" not in config  # the data file is added per run, from the data dir
    assert get_source(TASK_SOURCES[task]).kind == "multiple-choice"


def test_the_written_yaml_points_at_the_data_file(tmp_path: Path) -> None:
    data_file = tmp_path / "data" / "piqa.jsonl"
    path = write_local_task("piqa", data_file, tmp_path / "datasets", tmp_path / "tasks")
    written = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert path == tmp_path / "tasks" / "piqa.yaml"
    assert written["dataset_kwargs"] == {"data_files": {"test": str(data_file)},
                                         "cache_dir": str(tmp_path / "datasets")}
    assert {k: v for k, v in written.items() if k != "dataset_kwargs"} == yaml.safe_load(shipped_task_text("piqa"))


def render(task_text: str, field: str, doc: dict[str, Any]) -> Any:
    """A task field for one document, the way lm-eval 0.4.13 reads it: a list as it is, a column name, or a Jinja
    template (choices written as a Python list literal, targets as digits)."""
    value = yaml.safe_load(task_text)[field]
    if isinstance(value, list):
        return value
    if value in doc:
        return doc[value]
    text = jinja2.Template(value, keep_trailing_newline=True).render(**doc)
    if field == "doc_to_choice":
        return ast.literal_eval(text)
    return int(text) if field == "doc_to_target" else text


def rows(data_dir: Path, task: str, n: int) -> list[dict[str, Any]]:
    path = data_dir / get_source(TASK_SOURCES[task]).mirror_path
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()[:n]]


def as_harness_doc(task: str, row: dict[str, Any]) -> dict[str, Any]:
    """The Hugging Face record an LLM Foundry row was made from, as far as its fields tell (the inverse of LLM
    Foundry's formatting): the document lm-eval's built-in task reads."""
    labels = "ABCD"[: len(row["choices"])]
    if task == "piqa":
        return {"goal": row["query"].removeprefix("Question: ").removesuffix("\n"), "sol1": row["choices"][0],
                "sol2": row["choices"][1], "label": row["gold"]}
    if task == "boolq":
        passage, question = row["query"].removeprefix("Passage: ").rsplit("\nQuestion: ", 1)
        return {"passage": passage, "question": question.removesuffix("?"), "label": row["gold"]}
    choices = {"text": row["choices"], "label": list(labels)}
    if task == "openbookqa":
        return {"question_stem": row["query"], "choices": choices, "answerKey": labels[row["gold"]]}
    return {"question": row["query"].removeprefix("Question: "), "choices": choices, "answerKey": labels[row["gold"]]}


# lm-eval's own task files; arc_challenge includes arc_easy.yaml and changes only the dataset.
BUILTIN_YAML = {"piqa": "piqa/piqa.yaml", "boolq": "super_glue/boolq/default.yaml",
                "openbookqa": "openbookqa/openbookqa.yaml", "arc_easy": "arc/arc_easy.yaml",
                "arc_challenge": "arc/arc_easy.yaml"}


@pytest.mark.parametrize("task", sorted(BUILTIN_YAML))
def test_prompts_choices_and_targets_equal_the_harness_builtin_tasks(data_dir: Path, task: str) -> None:
    lm_eval = pytest.importorskip("lm_eval")
    builtin = (Path(lm_eval.__file__).parent / "tasks" / BUILTIN_YAML[task]).read_text(encoding="utf-8")
    ours = shipped_task_text(task)
    for row in rows(data_dir, task, 50):
        doc = as_harness_doc(task, row)
        for field in ("doc_to_text", "doc_to_choice", "doc_to_target"):
            assert render(ours, field, row) == render(builtin, field, doc), (task, field, row)
    metrics = [[m["metric"] for m in yaml.safe_load(text)["metric_list"]] for text in (ours, builtin)]
    assert metrics[0] == metrics[1]


def test_prompts_read_as_the_harness_writes_them(data_dir: Path) -> None:
    assert render(shipped_task_text("piqa"), "doc_to_text", rows(data_dir, "piqa", 1)[0]) == (
        "Question: How do I ready a guinea pig cage for it's new occupants?\nAnswer:")
    assert render(shipped_task_text("boolq"), "doc_to_text", rows(data_dir, "boolq", 1)[0]).endswith(
        "gasoline.\nQuestion: does ethanol take more energy make that produces?\nAnswer:")


def test_winogrande_scores_the_continuation_under_each_context(data_dir: Path) -> None:
    row, task_text = rows(data_dir, "winogrande", 1)[0], shipped_task_text("winogrande")
    assert render(task_text, "doc_to_text", row) == row["gold"]  # an index: lm-eval's multiple-input form
    assert render(task_text, "doc_to_choice", row) == row["context_options"]
    assert render(task_text, "doc_to_target", row) == "always got the easier cases."


def test_a_missing_data_file_names_the_file_and_the_fetch_command(tmp_path: Path) -> None:
    with pytest.raises(InputError) as err:
        local_data_file("openbookqa", tmp_path)
    assert str(err.value) == (f"{tmp_path / 'capability-benchmarks' / 'openbook_qa.jsonl'}: missing: capability task "
                              "'openbookqa' reads it; run 'safemix data fetch openbookqa' online (or set "
                              "capability.source: harness)")


def test_malformed_rows_are_named_by_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "piqa.jsonl"
    path.write_text('{"query": "q", "choices": ["a", "b"], "gold": 1}\n'
                    '{"query": "q", "choices": ["a", "b"], "gold": 2}\n')
    assert check_local_file("piqa", path, limit=1) == 2  # only the rows the run reads are checked
    with pytest.raises(InputError, match=r"piqa.jsonl: line 2: field 'gold' must be an index into 'choices' \(0..1\)"):
        check_local_file("piqa", path, limit=None)
    path.write_text('{"context_options": ["a", "b"], "gold": 0}\n')
    with pytest.raises(InputError, match="line 1: field 'continuation' is missing"):
        check_local_file("winogrande", path, limit=None)


def test_missing_lm_eval_names_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # makes 'import lm_eval' fail as if it were not installed
    with pytest.raises(InputError, match=r"run: pip install 'safemix\[eval\]'"):
        require_lm_eval()
    code, _, stderr = run_main("capability", "--base-model", "tiny", "--out", str(tmp_path / "out"))
    assert code == 2
    assert stderr == ("safemix: error: capability benchmarks need lm-evaluation-harness, which is not installed; "
                      "run: pip install 'safemix[eval]'\n")


def test_cli_unknown_task_lists_the_known_ones(tmp_path: Path) -> None:
    code, _, stderr = run_main("capability", "--base-model", "tiny", "--task", "hellaswag", "--out", str(tmp_path))
    assert code == 2
    assert stderr.strip() == ("safemix: error: command line: capability.tasks.0: Input should be 'piqa', 'boolq', "
                              "'openbookqa', 'arc_easy', 'arc_challenge' or 'winogrande'")


def test_cli_missing_data_file_exits_2_naming_it(tmp_path: Path) -> None:
    pytest.importorskip("lm_eval")
    empty = tmp_path / "data"
    empty.mkdir()
    code, _, stderr = run_main("capability", "--base-model", "tiny", "--task", "boolq", "--data-dir", str(empty),
                               "--set", "capability.source=local", "--out", str(tmp_path / "out"))
    assert code == 2
    assert stderr.startswith(f"safemix: error: {empty / 'capability-benchmarks' / 'boolq.jsonl'}: missing: ")
    assert "safemix data fetch boolq" in stderr and stderr.count("\n") == 1


def test_a_task_is_done_only_with_the_same_settings_and_an_intact_samples_file(tmp_path: Path) -> None:
    samples = samples_file(tmp_path, "piqa")
    samples.write_text('{"doc_id": 0, "acc": 1.0}\n')
    settings = {"task": "piqa", "limit": 8}
    entry = {"settings": settings, "samples_sha256": sha256_file(samples)}
    previous = {"tasks": {"piqa": entry}}
    assert finished_task(previous, "piqa", settings, tmp_path) == entry
    assert finished_task(previous, "piqa", {"task": "piqa", "limit": 9}, tmp_path) is None
    assert finished_task(previous, "boolq", settings, tmp_path) is None
    samples.write_text('{"doc_id": 0, "acc": 0.0}\n')
    assert finished_task(previous, "piqa", settings, tmp_path) is None


FAKE_RESULTS = {"results": [
    {"task": "piqa", "metric": "acc", "value": 0.6, "stderr": 0.05, "n": 200, "n_correct": 120},
    {"task": "piqa", "metric": "acc_norm", "value": 0.625, "stderr": 0.05, "n": 200, "n_correct": 125},
    {"task": "boolq", "metric": "acc", "value": 0.25, "stderr": 0.16, "n": 8, "n_correct": 2},
]}


def test_metric_rows_carry_wilson_intervals_from_the_correct_counts() -> None:
    rows = metric_rows(FAKE_RESULTS, "k100")
    assert [(r.model, r.suite, r.category, r.scorer, r.metric) for r in rows] == [
        ("k100", "piqa", "capability", "lm-eval", "acc"), ("k100", "piqa", "capability", "lm-eval", "acc_norm"),
        ("k100", "boolq", "capability", "lm-eval", "acc")]
    assert [(r.estimate, r.n_scored, r.n_unscored) for r in rows] == [(0.6, 200, 0), (0.625, 200, 0), (0.25, 8, 0)]
    assert (rows[2].ci_low, rows[2].ci_high) == wilson_interval(2, 8)
    assert rows[2].ci_low == pytest.approx(0.0715, abs=1e-4) and rows[2].ci_high == pytest.approx(0.5907, abs=1e-4)


def write_fake_run(run_dir: Path, with_capability: bool) -> None:
    """A run directory with a base model and two adapters, and (optionally) their capability metrics."""
    entries = [ModelEntry(label=label, model="tiny", slug=label, base_model="tiny", template="alpaca", preset="greedy",
                          k=k, train_dir=None if k is None else f"train/{label}",
                          generations_dir=f"generations/{label}", scores_dir=f"scores/{label}")
               for label, k in (("base", None), ("k0", 0), ("k100", 100))]
    write_run_index(run_dir, RunIndex(name="fake", config_hash="abc", suites=[], scorers=[], models=entries))
    if with_capability:
        from dataclasses import asdict

        rows = [row for label in ("base", "k0", "k100") for row in metric_rows(FAKE_RESULTS, label)]
        write_json_atomic(run_dir / "capability" / "metrics.json", [asdict(row) for row in rows])


def test_the_report_section_has_a_table_per_metric_and_a_plot(tmp_path: Path) -> None:
    write_fake_run(tmp_path, with_capability=True)
    section = capability_section([tmp_path])
    assert section is not None and section.title == "Capability benchmarks"
    assert [table.caption.split(":")[0] for table in section.tables] == ["acc", "acc_norm"]
    acc = section.tables[0]
    assert acc.columns == ["task", "n", "base", "K=0", "K=100"]
    assert [row[:3] for row in acc.rows] == [["boolq", "8", "0.250 [0.071, 0.591]"], ["piqa", "200", "0.600 [0.531, 0.665]"]]
    assert [figure.name for figure in section.figures] == ["capability-vs-k"]
    assert section.figures[0].png.startswith(b"\x89PNG")


def test_no_section_without_capability_metrics(tmp_path: Path) -> None:
    write_fake_run(tmp_path, with_capability=False)
    assert capability_section([tmp_path]) is None
