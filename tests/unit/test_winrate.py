"""Pairwise win rate: verdict parsing, answer order, the arithmetic (wins, ties, parse failures), the cache, bad
input, the CLI, and the run stage, all with scripted judges (no model)."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from safemix.errors import InputError
from safemix.generate.base import Generator, make_generation
from safemix.metrics import wilson_interval
from safemix.records import Generation, Prompt
from safemix.run_files import ModelEntry, RunIndex, SuiteEntry, write_run_index
from safemix.scoring.templates import UnparsedReply
from safemix.winrate import compare as compare_module
from safemix.winrate.compare import compare, read_answers
from safemix.winrate.config import JudgeConfig, WinrateConfig
from safemix.winrate.judge import build_judge, parse_pairwise
from safemix.winrate.stage import run_winrate_stage
from tests.conftest import run_cli
from tests.unit.winrate_data import write_answers

SHOWN_FIRST = re.compile(r"### Answer A:\n(\w+)-answer")


class ScriptedJudge(Generator):
    """Replies ``reply(judge input)`` and keeps every judge input it was given."""

    def __init__(self, reply: Callable[[str], str]) -> None:
        self.reply = reply
        self.inputs: list[str] = []

    def iter_batches(self, prompts: Sequence[Prompt]) -> Iterator[list[Generation]]:
        self.inputs.extend(prompt.prompt for prompt in prompts)
        yield [make_generation(prompt, self.reply(prompt.prompt), "stop", 1) for prompt in prompts]


def a_first(judge_input: str) -> bool:
    """Whether model a's answer is the one shown as answer A."""
    match = SHOWN_FIRST.search(judge_input)
    assert match, judge_input
    return match.group(1) == "a"


def item(judge_input: str) -> int:
    return int(re.search(r"Instruction (\d+)", judge_input).group(1))  # type: ignore[union-attr]


def run_compare(tmp_path: Path, judge: ScriptedJudge, n: int, *, seed: int = 0, cache: bool = True) -> dict:
    a = read_answers(write_answers(tmp_path / "a.jsonl", "a", n), "model-a")
    b = read_answers(write_answers(tmp_path / "b.jsonl", "b", n), "model-b")
    return compare(a, b, tmp_path / "out.jsonl", build_judge(JudgeConfig(backend="fake"), judge), seed=seed,
                   cache_dir=tmp_path / "cache" if cache else None)


def expected_a_first(seed: int, n: int) -> list[bool]:
    return [hashlib.sha256(f"{seed}\x00i-alpaca-{i}".encode()).digest()[0] % 2 == 0 for i in range(n)]


@pytest.mark.parametrize(("reply", "label"), [
    ("A", "A"), ("b", "B"), ("Tie", "tie"), (" **B**\n\nBecause it is longer.", "B"), ("Answer: A", "A"),
    ("(b)", "B"), ("Verdict - tie.", "tie"), ("\n\n'A'", "A"), ("A is better.", "A"), ("A:", "A"),
    ("A: A\n\nThis answer is more accurate than B.", "A"), ("B, it is a better answer", "B"),
])
def test_verdicts_that_parse(reply: str, label: str) -> None:
    assert parse_pairwise(reply).label == label


@pytest.mark.parametrize("reply", ["", "a tie", "A tie.", "Both are good", "AB", "Answer A or B", "C",
                                   "The answer is A.", "a good answer", "tie between A and B", "**"])
def test_verdicts_that_do_not_parse(reply: str) -> None:
    with pytest.raises(UnparsedReply):
        parse_pairwise(reply)


def test_a_judge_that_always_picks_position_a_gives_the_share_shown_first(tmp_path: Path) -> None:
    judge = ScriptedJudge(lambda text: "A")
    manifest = run_compare(tmp_path, judge, 200)
    shown_first = expected_a_first(0, 200)
    lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [line["a_position"] == "A" for line in lines] == shown_first
    assert [a_first(text) for text in sorted(judge.inputs, key=item)] == shown_first
    n_first = sum(shown_first)
    assert manifest["n_a_shown_first"] == n_first == 95
    assert manifest["counts"] == {"items": 200, "wins": n_first, "ties": 0, "losses": 200 - n_first, "unscored": 0}
    assert manifest["win_rate"]["estimate"] == n_first / 200  # 0.475: position bias cancels out to about half


def test_wins_ties_losses_and_parse_failures(tmp_path: Path) -> None:
    plan = {0: "a", 1: "b", 2: "tie", 3: "junk", 4: "a"}  # item i follows plan[i % 5]

    def reply(text: str) -> str:
        wanted = plan[item(text) % 5]
        if wanted in ("tie", "junk"):
            return "tie" if wanted == "tie" else "Both answers have merit."
        return "A" if (wanted == "a") == a_first(text) else "B"

    manifest = run_compare(tmp_path, ScriptedJudge(reply), 20)
    assert manifest["counts"] == {"items": 20, "wins": 8, "ties": 4, "losses": 4, "unscored": 4}
    low, high = wilson_interval(10, 16)  # type: ignore[arg-type]
    assert manifest["win_rate"] == pytest.approx({"estimate": 10 / 16, "ci_low": low, "ci_high": high,
                                                  "interval": manifest["win_rate"]["interval"]})
    lines = {line["id"]: line for line in map(json.loads, (tmp_path / "out.jsonl").read_text().splitlines())}
    assert [lines[f"i-alpaca-{i}"]["value"] for i in range(5)] == [1.0, 0.0, 0.5, None, 1.0]
    junk = lines["i-alpaca-3"]
    assert junk["verdict"] is None and junk["reply"] == "Both answers have merit."
    assert junk["unscored_reason"].startswith("unparsed judge reply")


def test_a_rerun_asks_the_judge_only_what_it_could_not_parse(tmp_path: Path) -> None:
    def reply(text: str) -> str:
        return "maybe" if item(text) == 2 else "B"

    first = run_compare(tmp_path, ScriptedJudge(reply), 6)
    again = ScriptedJudge(reply)
    second = run_compare(tmp_path, again, 6)
    assert [item(text) for text in again.inputs] == [2]
    assert second["counts"] == first["counts"] and second["win_rate"] == first["win_rate"]
    other_seed = ScriptedJudge(reply)
    run_compare(tmp_path, other_seed, 6, seed=1)
    changed = [i for i, (x, y) in enumerate(zip(expected_a_first(0, 6), expected_a_first(1, 6))) if x != y]
    assert sorted(item(text) for text in other_seed.inputs) == sorted(set(changed) | {2})


def test_verdicts_cached_before_the_typed_pair_are_reused(tmp_path: Path) -> None:
    """Earlier versions cached each verdict under (identity, instruction, JSON list of the answers shown)."""
    from safemix.files import canonical_json, sha256_text
    from safemix.scoring.cache import KeyValueStore
    from safemix.scoring.run import scorer_identity

    a = read_answers(write_answers(tmp_path / "a.jsonl", "a", 3), "model-a")
    b = read_answers(write_answers(tmp_path / "b.jsonl", "b", 3), "model-b")
    never = ScriptedJudge(lambda text: pytest.fail("the judge was called"))  # type: ignore[arg-type, return-value]
    judge = build_judge(JudgeConfig(backend="fake"), never)
    identity = canonical_json(scorer_identity(judge))
    store = KeyValueStore(tmp_path / "cache" / compare_module.CACHE_FILE)
    for x, y, first in zip(a.records, b.records, expected_a_first(0, 3)):
        shown = [x.response, y.response] if first else [y.response, x.response]
        key = sha256_text(canonical_json([identity, x.prompt, json.dumps(shown, ensure_ascii=False)]))
        store.put_many({key: canonical_json({"value": 1.0, "label": "A", "unscored_reason": None,
                                             "extra": {"reply": "A"}}).encode()})
    store.close()
    manifest = compare(a, b, tmp_path / "out.jsonl", judge, cache_dir=tmp_path / "cache")
    assert manifest["n_a_shown_first"] == sum(expected_a_first(0, 3))
    assert manifest["counts"]["unscored"] == 0 and not never.inputs


def test_the_judge_reads_a_typed_pair_in_the_order_shown() -> None:
    from safemix.winrate.judge import AnswerPair

    seen = ScriptedJudge(lambda text: "B")
    judged = build_judge(JudgeConfig(backend="fake"), seen).judge([AnswerPair("Instruction 0", "first", "second")])
    assert [(j.label, j.value) for j in judged] == [("B", 0.0)]
    assert "### Answer A:\nfirst\n\n### Answer B:\nsecond" in seen.inputs[0]


def test_prompt_ids_must_match(tmp_path: Path) -> None:
    a = read_answers(write_answers(tmp_path / "a.jsonl", "a", 4), "a")
    b = read_answers(write_answers(tmp_path / "b.jsonl", "b", 4, skip=2), "b")
    judge = build_judge(JudgeConfig(backend="fake"))
    with pytest.raises(InputError) as caught:
        compare(a, b, tmp_path / "out.jsonl", judge)
    assert str(caught.value).startswith(f"{tmp_path / 'b.jsonl'}: has no answer to prompt id 'i-alpaca-2' of ")
    with pytest.raises(InputError) as caught:  # the file that lacks the id is named, whichever side it is on
        compare(b, a, tmp_path / "out.jsonl", judge)
    assert str(caught.value).startswith(f"{tmp_path / 'b.jsonl'}: has no answer to prompt id 'i-alpaca-2' of "
                                        f"{tmp_path / 'a.jsonl'} ")
    other = tmp_path / "c.jsonl"
    other.write_text((tmp_path / "a.jsonl").read_text().replace("Instruction 1", "Instruction one"))
    with pytest.raises(InputError, match=r"c.jsonl: prompt id 'i-alpaca-1' holds another prompt than in"):
        compare(a, read_answers(other, "c"), tmp_path / "out.jsonl", judge)
    assert not (tmp_path / "out.jsonl").exists()


def test_cli_fake_judge_and_bad_input(tmp_path: Path) -> None:
    a = write_answers(tmp_path / "a" / "i-alpaca.jsonl", "a", 9)
    b = write_answers(tmp_path / "b" / "i-alpaca.jsonl", "b", 9, skip=4)
    env = {"SAFEMIX_SCORE_CACHE": str(tmp_path / "cache"), "OPENAI_API_KEY": ""}
    mismatch = run_cli("winrate", "--a", str(a.parent), "--b", str(b.parent), "--out", str(tmp_path / "w.jsonl"),
                       "--judge-backend", "fake", env=env)
    assert mismatch.returncode == 2
    assert mismatch.stderr.strip().splitlines() == [
        f"safemix: error: {b}: has no answer to prompt id 'i-alpaca-4' of {a} (1 such ids); both models must answer "
        "the same prompts"]
    write_answers(b, "b", 9)
    no_key = run_cli("winrate", "--a", str(a), "--b", str(b), "--out", str(tmp_path / "w.jsonl"),
                     "--judge-backend", "openai", "--judge-model", "gpt-4o-mini", env=env)
    assert no_key.returncode == 2
    assert no_key.stderr.strip().splitlines() == [
        "safemix: error: win-rate judge: environment variable OPENAI_API_KEY is not set; it holds the API key for "
        "https://api.openai.com/v1 (any non-empty value for a server without keys)"]
    no_model = run_cli("winrate", "--a", str(a), "--b", str(b), "--out", str(tmp_path / "w.jsonl"), env=env)
    assert no_model.returncode == 2 and "win-rate judge: model: required with backend 'hf'" in no_model.stderr
    ok = run_cli("winrate", "--a", str(a.parent), "--b", str(b.parent), "--out", str(tmp_path / "w.jsonl"),
                 "--judge-backend", "fake", "--seed", "3", env=env)
    assert ok.returncode == 0, ok.stderr
    manifest = json.loads((tmp_path / "w.manifest.json").read_text())
    assert manifest["identity"]["seed"] == 3 and manifest["identity"]["template"] == "pairwise-v1"
    assert manifest["identity"]["model_a"] == "a" and manifest["identity"]["reference"] == "b"
    counts = manifest["counts"]
    assert ok.stdout.startswith(f"{tmp_path / 'w.jsonl'}: win rate of a vs b: ")
    assert f"{counts['wins']} wins, {counts['ties']} ties, {counts['losses']} losses, 0 unscored" in ok.stdout


# ------------------------------------------------------------------------------------------------ the run stage


def model_entry(label: str, k: int | None) -> ModelEntry:
    return ModelEntry(label=label, model="tiny", slug=label, base_model="tiny", template="alpaca", preset="greedy", k=k,
                      train_dir=None if k is None else f"train/{label}", generations_dir=f"generations/{label}",
                      scores_dir=f"scores/{label}")


def make_run(run_dir: Path, n: int = 12) -> None:
    models = [model_entry("base", None), model_entry("k100", 100), model_entry("k300", 300)]
    write_run_index(run_dir, RunIndex(name="demo", config_hash="abc", scorers=[], models=models,
                                      suites=[SuiteEntry(name="i-alpaca", n_prompts=n, categories={"general": n})]))
    for entry in models:
        write_answers(run_dir / entry.generations_dir / "i-alpaca.jsonl", entry.label, n)


def test_stage_compares_every_model_with_the_reference_and_keeps_finished_work(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_run(tmp_path)
    config = WinrateConfig(judge=JudgeConfig(backend="fake"), suites=["I-Alpaca"], cache_dir=tmp_path / "cache")
    rows = run_winrate_stage(config, tmp_path, None)
    assert [(r.model, r.suite, r.category, r.scorer, r.metric) for r in rows] == [
        ("k100", "i-alpaca", "general", "winrate/fake", "win_rate_vs_base"),
        ("k300", "i-alpaca", "general", "winrate/fake", "win_rate_vs_base")]
    for row in rows:
        manifest = json.loads((tmp_path / "winrate" / row.model / "i-alpaca.manifest.json").read_text())
        assert row.n_scored + row.n_unscored == 12 and row.n_scored == 12 - manifest["counts"]["unscored"]
        assert manifest["identity"]["reference"] == "base" and manifest["identity"]["model_a"] == row.model
    assert json.loads((tmp_path / "winrate" / "metrics.json").read_text())[0]["metric"] == "win_rate_vs_base"

    def must_not_run(*args: object, **kwargs: object) -> None:
        raise AssertionError("a finished comparison was judged again")

    monkeypatch.setattr("safemix.winrate.stage.compare", must_not_run)
    assert run_winrate_stage(config, tmp_path, None) == rows
    monkeypatch.setattr("safemix.winrate.stage.compare", compare_module.compare)
    write_answers(tmp_path / "generations" / "k300" / "i-alpaca.jsonl", "changed", 12)
    calls: list[str] = []
    monkeypatch.setattr("safemix.winrate.stage.compare",
                        lambda a, *args, **kwargs: calls.append(a.name) or compare_module.compare(a, *args, **kwargs))
    run_winrate_stage(config, tmp_path, None)
    assert calls == ["k300"]


def test_stage_bad_input(tmp_path: Path) -> None:
    make_run(tmp_path)
    with pytest.raises(InputError, match=r"winrate.reference: 'k5' is not a model of .* \(models: base, k100, k300\)"):
        run_winrate_stage(WinrateConfig(judge=JudgeConfig(backend="fake"), reference="k5"), tmp_path)
    with pytest.raises(InputError, match=r"winrate.suites: 'q-harm' is not a suite of"):
        run_winrate_stage(WinrateConfig(judge=JudgeConfig(backend="fake"), suites=["Q-Harm"]), tmp_path)
    write_answers(tmp_path / "generations" / "k100" / "i-alpaca.jsonl", "k100", 12, skip=7)
    with pytest.raises(InputError, match=r"k100/i-alpaca.jsonl: has no answer to prompt id 'i-alpaca-7'"):
        run_winrate_stage(WinrateConfig(judge=JudgeConfig(backend="fake"), cache_dir=tmp_path / "c"), tmp_path)
