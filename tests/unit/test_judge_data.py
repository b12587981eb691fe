"""The refusal judge's data: stance filters, constructed examples, the held-out prompts and the test set file."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest

from safemix.errors import InputError
from safemix.scoring.judge_constructed import degenerate_answer, refusal_of, safetext_questions, task_phrase
from safemix.scoring.judge_data import load_judge_data, prompt_key, read_refusal_direction
from safemix.scoring.judge_testset import (
    POPULATION_SIZES,
    population_accuracy,
    read_testset,
    reserved_prompt_keys,
    reserved_xstest_ids,
    resolve_prompts,
    shipped_testset,
    shipped_train_answers,
)
from safemix.scoring.judge_testset import (
    TestItem as LabelledItem,  # not a test class
)
from safemix.scoring.strmatch import is_prefix_refusal


def test_task_phrase_turns_instructions_into_verb_phrases_and_skips_questions() -> None:
    assert task_phrase("Write a haiku about the first snow.") == "write a haiku about the first snow"
    assert task_phrase("What is the capital of France?") is None
    assert task_phrase("How to bake bread") is None
    assert task_phrase("Summarise this:\nlong text") is None


def test_constructed_refusals_are_seeded_and_never_answer() -> None:
    assert refusal_of("Write a poem about rain.", random.Random(3)) == refusal_of("Write a poem about rain.", random.Random(3))
    texts = {refusal_of("Write a poem about rain.", random.Random(seed)) for seed in range(60)}
    assert len(texts) > 20
    # many carry no stock prefix: these are the refusals string match misses
    assert sum(not is_prefix_refusal(t) for t in texts) > 5


def test_degenerate_answers_repeat_a_phrase_or_echo_the_prompt() -> None:
    rng = random.Random(0)
    for _ in range(20):
        text = degenerate_answer("Name a colour.", "Blue is a calm colour of the sky.", rng)
        words = text.split()
        assert len(words) > len(set(words)) or text.count("Name a colour.") >= 2


def test_prompt_key_ignores_case_and_spacing() -> None:
    assert prompt_key(" Hello,  World! ") == prompt_key("hello, world!")
    assert prompt_key("hello world") != prompt_key("hello there")


def _completions(path: Path, items: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"completions": items}))
    return path


def test_refusal_direction_keeps_only_answers_whose_stance_matches_the_steering(tmp_path: Path) -> None:
    path = _completions(tmp_path / "gemma" / "completions" / "harmless_actadd_evaluations.json", [
        {"prompt": "Name a fruit.", "response": "I cannot provide that."},
        {"prompt": "Name a bird.", "response": "A robin."},
        {"prompt": "Name a tree.", "response": "  "},
    ])
    examples = read_refusal_direction(path)
    assert [(e.prompt, e.label) for e in examples] == [("Name a fruit.", "full_refusal")]
    assert examples[0].source == "refusal-direction:gemma/harmless_actadd" and examples[0].group == "stance"


def test_an_unknown_refusal_direction_run_is_an_input_error(tmp_path: Path) -> None:
    path = _completions(tmp_path / "m" / "completions" / "other_run_evaluations.json", [])
    with pytest.raises(InputError, match="unknown refusal-direction run 'other_run'"):
        read_refusal_direction(path)


def test_a_bad_test_set_line_is_an_input_error_naming_the_line(tmp_path: Path) -> None:
    good = {"id": "a", "run": "r", "model": "base", "suite": "s", "category": "harmful", "prompt_id": "p",
            "prompt_key": "0" * 64, "response": "No.", "label": "full_refusal", "strata": ["control"]}
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps({**good, "label": "refused"}) + "\n")
    with pytest.raises(InputError, match="line 2.*label"):
        read_testset(path)


def test_the_shipped_test_set_is_large_labelled_and_sampled_as_documented() -> None:
    items = read_testset()
    assert len(items) >= 400
    assert len({item.id for item in items}) == len(items)
    assert {stratum for item in items for stratum in item.strata} == {"disagreement", "control"}
    assert sum("control" in item.strata for item in items) >= 200
    assert {item.run for item in items} == {"quickstart", "judge-testset", "paper-cpu"}
    assert sum(item.run == "paper-cpu" for item in items) >= 200  # the fresh sample, drawn after v2 was built
    assert shipped_testset().with_name("README.md").is_file() and shipped_testset().with_name("LABELLING.md").is_file()


def test_no_prompt_of_the_test_set_is_trained_on(data_dir: Path) -> None:
    reserved = reserved_prompt_keys(data_dir)
    assert {item.prompt_key for item in read_testset()} <= reserved
    assert len(reserved_xstest_ids(data_dir)) == 80
    data = load_judge_data(data_dir, exclude=reserved)
    assert not any(prompt_key(e.prompt) in reserved for e in data.examples)
    assert data.n_excluded > 0


def test_the_stance_data_pairs_harmful_and_benign_topics_with_both_stances(data_dir: Path) -> None:
    data = load_judge_data(data_dir)
    by_source = Counter((e.source.split(":")[0] if e.source.startswith("constructed") else e.source.split("/")[-1], e.label)
                        for e in data.examples if e.group == "stance")
    harmful_refused = by_source[("paper-safety", "full_refusal")] + by_source[("jailbreakbench_baseline", "full_refusal")]
    harmful_complied = by_source[("jailbreakbench_ablation", "full_compliance")] + by_source[("jailbreakbench_actadd", "full_compliance")]
    benign_refused = by_source[("harmless_actadd", "full_refusal")] + by_source[("constructed", "full_refusal")]
    assert min(harmful_refused, harmful_complied, benign_refused) > 800
    again = load_judge_data(data_dir)
    assert [(e.prompt, e.response, e.label) for e in again.examples] == [(e.prompt, e.response, e.label) for e in data.examples]


def test_the_tuned_model_answers_resolve_their_prompts_from_suites_and_sources(data_dir: Path) -> None:
    items = read_testset(shipped_train_answers())
    prompts = resolve_prompts(items, data_dir)
    assert {"xstest", "advbench", "safetext", "llamafactory-alpaca-en-demo"} <= {item.suite for item in items}
    by_id = {item.prompt_id: prompt for item, prompt in zip(items, prompts)}
    assert by_id["safetext-unsafe-0"].startswith(("Explain why", "Describe why", "Write a reason why"))
    assert safetext_questions(data_dir) == safetext_questions(data_dir)  # the question forms are seeded
    # round 3's SafeText scenarios are not those of the I-PhysicalSafety suites the test set draws from
    assert not {prompt_key(prompt) for prompt in prompts} & reserved_prompt_keys(data_dir)


def _item(run: str, number: int, strata: list[str]) -> LabelledItem:
    return LabelledItem(id=f"{run}:m/p-{number}", run=run, model="m", suite="s", category="safe", prompt_id=f"p-{number}",
                    prompt_key="k", response="r", label="full_compliance", strata=strata)  # type: ignore[arg-type]


def test_population_accuracy_counts_the_census_whole_and_weights_the_control_sample() -> None:
    run = "quickstart"  # 800 answers
    census = [_item(run, i, ["disagreement"]) for i in range(40)]
    control = [_item(run, 100 + i, ["control"]) for i in range(50)]
    both = [_item(run, 200, ["disagreement", "control"])]  # counted once, in the census
    items = census + control + both
    correct = [i < 10 for i in range(40)] + [i < 45 for i in range(50)] + [False]
    stats = population_accuracy(items, correct, [run])
    # 10 of the 41 disagreements are right; 90% of the other 759 answers, as in the control sample
    assert stats["n"] == POPULATION_SIZES[run]
    assert stats["accuracy"] == pytest.approx((10 + 759 * 0.9) / 800)
    assert stats["ci_low"] < stats["accuracy"] < stats["ci_high"]
    assert stats == population_accuracy(items, correct, [run])  # seeded


def test_population_accuracy_interval_reaches_the_estimate_when_every_sampled_answer_is_right() -> None:
    items = [_item("quickstart", i, ["control"]) for i in range(30)]
    stats = population_accuracy(items, [True] * 30, ["quickstart"])
    assert stats["accuracy"] == stats["ci_high"] == 1.0
    assert stats["ci_low"] < 0.97
