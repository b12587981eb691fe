"""The scoring stage without models: inputs, the cache, bad input, the string-match scorer end to end, templates."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import pytest

from safemix.config import validate_config
from safemix.errors import InputError
from safemix.run_files import GenerationManifest, write_manifest
from safemix.scoring.base import Judgement, ScorerSettings
from safemix.scoring.inputs import Columns, ScoreInput, generations_model_name, read_score_inputs
from safemix.scoring.run import ScoreCache, score_items
from safemix.scoring.templates import TEMPLATES, UnparsedReply, parse_harmbench, parse_llama_guard, parse_xstest
from tests.conftest import REPO_ROOT, run_cli


class CountingScorer:
    """Scores the response length and remembers every response it was asked about."""

    name: ClassVar[str] = "counting"
    version: ClassVar[str] = "1"

    def __init__(self) -> None:
        self.settings = ScorerSettings()
        self.fingerprint: dict[str, str] = {}
        self.seen: list[str] = []

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> list[Judgement]:
        self.seen.extend(responses)
        return [Judgement(float(len(r))) if r != "fail" else Judgement.unscored("cannot") for r in responses]


def _items(*responses: str) -> list[ScoreInput]:
    return [ScoreInput(f"id-{i}", "p", response) for i, response in enumerate(responses)]


def test_cache_means_a_rerun_scores_only_new_items(tmp_path: Path) -> None:
    first = CountingScorer()
    judged = score_items(first, _items("aa", "bbb", "aa", "fail", "  "), cache=ScoreCache(tmp_path / "c.sqlite", first), chunk_size=2)
    assert [j.value for j in judged] == [2.0, 3.0, 2.0, None, None]
    assert judged[4].unscored_reason == "empty response"
    assert sorted(first.seen) == ["aa", "bbb", "fail"]  # duplicates once, empty responses never
    second = CountingScorer()
    again = score_items(second, _items("aa", "bbb", "cccc", "fail"), cache=ScoreCache(tmp_path / "c.sqlite", second))
    assert [j.value for j in again] == [2.0, 3.0, 4.0, None]
    assert sorted(second.seen) == ["cccc", "fail"]  # new items and the unscored one (retried), nothing else


def test_cache_key_depends_on_settings_and_version(tmp_path: Path) -> None:
    scorer = CountingScorer()
    score_items(scorer, _items("aa"), cache=ScoreCache(tmp_path / "c.sqlite", scorer))
    newer = CountingScorer()
    newer.version = "2"  # type: ignore[misc]
    score_items(newer, _items("aa"), cache=ScoreCache(tmp_path / "c.sqlite", newer))
    assert newer.seen == ["aa"]


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_generations_directory_reads_every_suite(tmp_path: Path) -> None:
    base = {"finish_reason": "stop", "n_new_tokens": 1, "prompt": "p"}
    _write_jsonl(tmp_path / "gens" / "a.jsonl", [{"id": "a-0", "suite": "a", "category": "harmful", "response": "x", **base}])
    _write_jsonl(tmp_path / "gens" / "b.jsonl", [{"id": "b-0", "suite": "b", "category": "safe", "response": "y", **base}])
    items = read_score_inputs(tmp_path / "gens", Columns())
    assert [(i.id, i.fields) for i in items] == [("a-0", {"suite": "a", "category": "harmful"}), ("b-0", {"suite": "b", "category": "safe"})]
    assert generations_model_name(tmp_path / "gens") == "gens"
    settings = {"model": {"name": "smollm2-135m-instruct"}, "adapter": {"path": "runs/k100/adapter"}}
    write_manifest(tmp_path / "gens" / "manifest.json",
                   GenerationManifest(safemix_version="0", settings=settings, suites={}, versions={}))
    assert generations_model_name(tmp_path / "gens" / "a.jsonl") == "smollm2-135m-instruct+runs/k100/adapter"


def test_csv_with_named_columns_and_row_ids(tmp_path: Path) -> None:
    path = tmp_path / "answers.csv"
    path.write_text("question,answer\nq1,a1\nq2,a2\n")
    items = read_score_inputs(path, Columns(prompt="question", response="answer"))
    assert [(i.id, i.prompt, i.response) for i in items] == [("answers-0", "q1", "a1"), ("answers-1", "q2", "a2")]


def test_duplicate_ids_are_an_input_error(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "d.jsonl", [{"id": "a", "prompt": "p", "response": "r"}] * 2)
    with pytest.raises(InputError, match="id 'a' occurs more than once"):
        read_score_inputs(path, Columns())


def _cli_score(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli("score", "--out", str(tmp_path / "out.jsonl"), "--cache-dir", str(tmp_path / "cache"), *args)


def test_strmatch_end_to_end(tmp_path: Path) -> None:
    gens = _write_jsonl(tmp_path / "g" / "s.jsonl", [
        {"id": "s-0", "suite": "s", "category": "safe", "prompt": "p", "response": "I'm sorry, no.", "finish_reason": "stop", "n_new_tokens": 4},
        {"id": "s-1", "suite": "s", "category": "safe", "prompt": "p", "response": "Sure!", "finish_reason": "stop", "n_new_tokens": 2},
        {"id": "s-2", "suite": "s", "category": "safe", "prompt": "p", "response": "", "finish_reason": "length", "n_new_tokens": 0},
    ])
    result = _cli_score(tmp_path, "--scorer", "refusal-strmatch", "--input", str(gens.parent), "--generations-model", "m1")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("3 items, 2 scored, 1 unscored (manifest " + str(tmp_path / "out.manifest.json") + ")")
    lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert lines[0] == {"id": "s-0", "scorer": "refusal-strmatch", "value": 1.0, "label": "full_refusal",
                        "unscored_reason": None, "suite": "s", "category": "safe", "model": "m1"}
    assert lines[2]["value"] is None and lines[2]["unscored_reason"] == "empty response"
    manifest = json.loads((tmp_path / "out.manifest.json").read_text())
    assert manifest["scorer"] == "refusal-strmatch" and manifest["counts"] == {"items": 3, "scored": 2, "unscored": 1}
    assert list(manifest["inputs"].values())[0] == __import__("hashlib").sha256(gens.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--scorer", "refusal-strmach"], "unknown scorer 'refusal-strmach'; did you mean refusal-strmatch? "
                                          "(known: refusal-strmatch, refusal-judge, harmfulness-rm, moderation, llm-judge)"),
        (["--scorer", "refusal-strmatch", "--response-column", "answer"], "{input}: line 1: column 'answer' is missing (choose another with --response-column)"),
        (["--scorer", "refusal-strmatch", "--id-column", "key"], "{input}: line 1: column 'key' is missing (choose another with --id-column)"),
        (["--scorer", "refusal-strmatch", "--prompts", "{prompts}"], "{prompts}: holds 1 prompts but {input} holds 2 responses"),
        (["--scorer", "refusal-strmatch", "--set", "scoring.refusal-strmatch.colour=red"], "scorer 'refusal-strmatch': setting colour: Extra inputs are not permitted"),
        (["--scorer", "harmfulness-rm", "--setup", "bluesky"], "scorer 'harmfulness-rm': setting setup: Input should be 'redteam' or 'redteam-osst'"),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    data = _write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "prompt": "p", "response": "r"}, {"id": "b", "prompt": "p", "response": "r"}])
    prompts = _write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "p"}])
    args = [a.format(prompts=prompts) for a in args]
    result = _cli_score(tmp_path, "--input", str(data), *args)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["safemix: error: " + message.format(input=data, prompts=prompts)]


def test_scorers_lists_every_scorer_and_its_network_need_without_torch() -> None:
    code = ("import sys\nfrom safemix.cli import main\ntry:\n    main(['scorers'])\nexcept SystemExit as e:\n    assert e.code == 0\n"
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line.split()[1] for line in result.stdout.splitlines()[1:]}
    assert rows == {"refusal-strmatch": "offline", "refusal-judge": "offline", "harmfulness-rm": "optional",
                    "moderation": "required", "llm-judge": "optional"}


def test_config_scoring_section_is_validated() -> None:
    base = {"data": {"general": "lima", "safety": "paper-safety", "n_general": 1, "n_safety": [0]}}
    config = validate_config({**base, "scoring": {"scorers": [{"name": "harmfulness-rm", "settings": {"setup": "redteam-osst"}}]}})
    assert config.scoring is not None and config.scoring.settings_for("harmfulness-rm") == {"setup": "redteam-osst"}
    with pytest.raises(InputError, match=r"scoring\.scorers\.0: .*unknown scorer 'moderaton'; did you mean moderation"):
        validate_config({**base, "scoring": {"scorers": [{"name": "moderaton"}]}})
    with pytest.raises(InputError, match=r"settings\.max_tokens: Input should be greater than or equal to 8"):
        validate_config({**base, "scoring": {"scorers": [{"name": "harmfulness-rm", "settings": {"max_tokens": 1}}]}})


@pytest.mark.parametrize(
    ("reply", "label", "categories"),
    [("safe", "safe", ()), ("\n\nunsafe\nS1", "unsafe", ("S1",)), ("unsafe\ns2, S11", "unsafe", ("S2", "S11"))],
)
def test_llama_guard_replies(reply: str, label: str, categories: tuple[str, ...]) -> None:
    verdict = parse_llama_guard(reply)
    assert (verdict.label, verdict.categories) == (label, categories)


@pytest.mark.parametrize("reply", ["", "Safe to say", "unsafe because", "The answer is safe"])
def test_llama_guard_rejects_other_replies(reply: str) -> None:
    with pytest.raises(UnparsedReply):
        parse_llama_guard(reply)


@pytest.mark.parametrize("reply", ["", "Yesterday", "maybe yes", "2_full_compliance"])
def test_other_parsers_reject_what_does_not_follow_the_format(reply: str) -> None:
    parser = parse_xstest if "_" in reply else parse_harmbench
    with pytest.raises(UnparsedReply):
        parser(reply)


def test_templates_render_the_pair() -> None:
    text = TEMPLATES["harmbench"].render("make a cake", "mix flour")
    assert "Behavior:\nmake a cake\n\nGeneration:\nmix flour\n" in text and text.startswith("[INST] <<SYS>>")
    assert parse_xstest(" 3_partial_refusal").label == "partial_refusal"


def test_llama_guard_probability_replaces_the_binary_value_only_when_the_reply_parses() -> None:
    from safemix.scoring.llm_judge import reply_judgement

    template = TEMPLATES["llama-guard-3"]
    assert reply_judgement(template, "unsafe\nS1", p_unsafe=0.83).value == 0.83
    assert reply_judgement(template, "unsafe\nS1").value == 1.0
    unparsed = reply_judgement(template, "I am not sure", p_unsafe=0.4)
    assert (unparsed.value, unparsed.label) == (None, None)


class CrashingScorer(CountingScorer):
    """Dies on its second call, like a run killed in the middle."""

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> list[Judgement]:
        if self.seen:
            raise KeyboardInterrupt
        return super().score(prompts, responses)


def test_a_killed_run_keeps_finished_chunks_and_a_rerun_scores_the_rest(tmp_path: Path) -> None:
    items = _items("a", "bb", "ccc", "dddd", "eeeee")
    crashing = CrashingScorer()
    with pytest.raises(KeyboardInterrupt):
        score_items(crashing, items, cache=ScoreCache(tmp_path / "c.sqlite", crashing), chunk_size=2)
    assert sorted(crashing.seen) == ["dddd", "eeeee"]  # the first chunk (longest first) finished
    rerun = CountingScorer()
    judged = score_items(rerun, items, cache=ScoreCache(tmp_path / "c.sqlite", rerun), chunk_size=2)
    assert sorted(rerun.seen) == ["a", "bb", "ccc"]
    assert [j.value for j in judged] == [1.0, 2.0, 3.0, 4.0, 5.0]


def test_score_takes_settings_from_the_config(tmp_path: Path) -> None:
    config = tmp_path / "exp.yaml"
    config.write_text("data: {general: lima, safety: paper-safety, n_general: 1, n_safety: [0]}\n"
                      "scoring: {scorers: [{name: harmfulness-rm, settings: {max_tokens: 4}}]}\n")
    data = _write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "prompt": "p", "response": "r"}])
    result = _cli_score(tmp_path, "--scorer", "harmfulness-rm", "--input", str(data), "--config", str(config))
    assert result.returncode == 2
    assert "scoring.scorers.0: settings.max_tokens: Input should be greater than or equal to 8" in result.stderr
