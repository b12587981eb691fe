"""Training data without torch: label masking on a hand-built example, the batch plan, mixture reading, settings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from safemix.config import ConfigError, load_train_settings
from safemix.errors import InputError
from safemix.prompts import AlpacaTemplate
from safemix.records import Example
from safemix.train.data import IGNORE_INDEX, BatchPlan, encode_example, length_batches, padded_tokens, read_examples


class CharTokenizer:
    """One token per character (its code point); BOS = 1 when special tokens are added; EOS = 2."""

    eos_token_id = 2

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
        return {"input_ids": ([1] if add_special_tokens else []) + [ord(c) for c in text]}


class TinyTemplate(AlpacaTemplate):
    """A two-character prompt, so the expected ids can be written out by hand."""

    def prompt(self, instruction: str, input: str = "") -> str:
        return f"{instruction}:"


EXAMPLE = Example(id="g-0", source="g", category="general", instruction="Q", output="ab")
# BOS, 'Q', ':' | 'a', 'b', EOS
IDS = [1, ord("Q"), ord(":"), ord("a"), ord("b"), 2]


def test_train_on_inputs_labels_every_token() -> None:
    encoded = encode_example(EXAMPLE, TinyTemplate(), CharTokenizer(), cutoff_len=256, train_on_inputs=True)
    assert encoded.input_ids == IDS
    assert encoded.labels == IDS
    assert encoded.n_loss_tokens == 5  # nothing predicts the first token


def test_answer_only_masks_the_prompt_including_bos() -> None:
    encoded = encode_example(EXAMPLE, TinyTemplate(), CharTokenizer(), cutoff_len=256, train_on_inputs=False)
    assert encoded.input_ids == IDS
    assert encoded.labels == [IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX, ord("a"), ord("b"), 2]
    assert encoded.n_loss_tokens == 3


def test_cutoff_truncates_ids_and_labels_together_and_drops_the_eos() -> None:
    encoded = encode_example(EXAMPLE, TinyTemplate(), CharTokenizer(), cutoff_len=4, train_on_inputs=False)
    assert encoded.input_ids == IDS[:4]
    assert encoded.labels == [IGNORE_INDEX] * 3 + [ord("a")]
    cut_in_prompt = encode_example(EXAMPLE, TinyTemplate(), CharTokenizer(), cutoff_len=2, train_on_inputs=False)
    assert cut_in_prompt.n_loss_tokens == 0


def test_chat_prompts_are_tokenised_without_extra_special_tokens() -> None:
    chat_like = TinyTemplate(add_special_tokens=False)
    encoded = encode_example(EXAMPLE, chat_like, CharTokenizer(), cutoff_len=256, train_on_inputs=True)
    assert encoded.input_ids == IDS[1:]


LENGTHS = [3, 50, 7, 48, 5, 51, 9, 47, 4, 49, 6, 10, 8, 46]  # 8 short and 6 long, interleaved


def test_batch_plan_covers_each_example_once_per_epoch_and_is_a_function_of_seed_and_step() -> None:
    plan = BatchPlan(LENGTHS, micro_batch_size=2, micro_batches_per_step=7, seed=3, length_grouping=True)
    assert plan.micro_batches_per_epoch == 7
    for step in (0, 1, 2):
        assert sorted(i for batch in plan.step(step) for i in batch) == list(range(len(LENGTHS)))
    again = BatchPlan(LENGTHS, micro_batch_size=2, micro_batches_per_step=7, seed=3, length_grouping=True)
    assert again.step(2) == plan.step(2)
    assert plan.step(0) != plan.step(1)  # a new permutation every epoch
    other_seed = BatchPlan(LENGTHS, micro_batch_size=2, micro_batches_per_step=7, seed=4, length_grouping=True)
    assert other_seed.step(0) != plan.step(0)


def test_steps_run_across_epoch_boundaries() -> None:
    plan = BatchPlan(LENGTHS, micro_batch_size=4, micro_batches_per_step=3, seed=0, length_grouping=True)
    assert plan.micro_batches_per_epoch == 4  # 14 examples: 4 + 4 + 4 + 2
    assert plan.steps_for_epochs(3) == 4  # 12 micro-batches
    epoch0, epoch1 = plan._epoch(0), plan._epoch(1)
    assert plan.step(1) == [epoch0[3], epoch1[0], epoch1[1]]


def test_length_grouping_cuts_padding_but_keeps_the_batch_order_random() -> None:
    def padding(plan: BatchPlan) -> int:
        return sum(padded_tokens([LENGTHS[i] for i in batch]) - sum(LENGTHS[i] for i in batch) for batch in plan.step(0))

    grouped = BatchPlan(LENGTHS, micro_batch_size=2, micro_batches_per_step=7, seed=0, length_grouping=True)
    random_order = BatchPlan(LENGTHS, micro_batch_size=2, micro_batches_per_step=7, seed=0, length_grouping=False)
    assert padding(grouped) < padding(random_order) / 4
    longest = [max(LENGTHS[i] for i in batch) for batch in grouped.step(0)]
    assert longest != sorted(longest) and longest != sorted(longest, reverse=True)
    for batch in grouped.step(0):
        assert len({LENGTHS[i] > 20 for i in batch}) == 1  # short with short, long with long


def test_length_batches_for_evaluation() -> None:
    assert length_batches([5, 1, 3, 2], 3) == [[1, 3, 2], [0]]


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_read_examples_accepts_a_mixture(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "mixture-0.jsonl", [EXAMPLE.model_dump()])
    assert read_examples(path) == [EXAMPLE]


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([{"instruction": "Hi", "input": "", "output": "Hello"}], "line 1: not a mixture record: id: Field required"),
        ([{**EXAMPLE.model_dump(), "category": "other"}], "line 1: not a mixture record: category: Input should be 'general' or 'safety'"),
        ([{**EXAMPLE.model_dump(), "extra": 1}], "line 1: not a mixture record: extra: Extra inputs are not permitted"),
        ([], "file is empty"),
    ],
)
def test_read_examples_names_the_line_and_field(tmp_path: Path, rows: list[Any], message: str) -> None:
    path = write_jsonl(tmp_path / "m.jsonl", rows)
    with pytest.raises(InputError) as err:
        read_examples(path)
    assert str(err.value) == f"{path}: {message}"


def test_train_settings_from_flags_and_overrides() -> None:
    flags = {"train.base_model": "m", "train.train_file": "t.jsonl", "train.val_file": "v.jsonl", "train.cutoff_len": 128}
    config = load_train_settings(None, flags, ["train.lora.r=16", "train.cutoff_len=64"])
    assert (config.lora.r, config.lora.alpha, config.cutoff_len, config.learning_rate) == (16, 16, 64, 3e-4)
    assert (config.batch_size, config.micro_batch_size, config.lora.target_modules) == (128, 4, ["q_proj", "v_proj"])


def test_train_settings_from_an_experiment_file_take_its_seed(tmp_path: Path) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text(
        "seed: 7\ndata: {general: llamafactory-alpaca-en-demo, safety: paper-safety, n_general: 10, n_safety: [0]}\n"
        "train: {base_model: m, train_file: t.jsonl, val_file: v.jsonl, template: chat}\n",
        encoding="utf-8",
    )
    config = load_train_settings(path, {"train.max_steps": 20})
    assert (config.seed, config.template, config.max_steps) == (7, "chat", 20)


def test_train_settings_errors_carry_dotted_paths() -> None:
    flags = {"train.base_model": "m", "train.train_file": "t", "train.val_file": "v"}
    with pytest.raises(ConfigError, match=r"^command line: train.lora.dropout: Input should be less than 1"):
        load_train_settings(None, flags, ["train.lora.dropout=1.5"])
    with pytest.raises(ConfigError, match="^command line: train: load_in_4bit and load_in_8bit: choose one$"):
        load_train_settings(None, {**flags, "train.load_in_4bit": True, "train.load_in_8bit": True})
    with pytest.raises(InputError, match=r"^command line: train.val_file is not set \(give --val FILE\)"):
        load_train_settings(None, {"train.base_model": "m", "train.train_file": "t"})


def test_training_data_and_settings_import_no_torch() -> None:
    code = "import sys, safemix.train.data, safemix.train.config, safemix.config; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def test_pad_to_multiple_of_rounds_the_width_up() -> None:
    assert padded_tokens([5, 9, 3]) == 27
    assert padded_tokens([5, 9, 3], pad_to_multiple_of=8) == 48
    assert padded_tokens([16, 2], pad_to_multiple_of=8) == 32
