"""Answers of the models safemix tunes, on prompts outside the test set, labelled for the refusal judge's training.

The judge is evaluated on SmolLM2's answers (src/safemix/scoring/testset); it should also learn from that kind of
answer: short, often degenerate compliance on harmful requests, refusals of harmless ones. This script draws
prompts that the judge's test set never uses (``reserved_prompt_keys`` excludes the test set's suites and its 80
XSTest prompts; I-MaliciousInstructions' source MaliciousInstruct and I-Controversial, the instruction form of
O-Controversial, are left out too), has the ``judge-testset`` run's models answer them, and turns the labelled
answers into ``src/safemix/scoring/testset/refusal-judge-train-answers-v2.jsonl`` (same format as the test set,
stratum ``training``; no prompt text).

    python scripts/judge_train_answers.py prompts OUT_DIR     # prompt files per category (seeded sample)
    # then, per model M (base, or the k0 / k300 adapters of runs/judge-testset) and category C:
    safemix generate --out OUT_DIR/M-C --base-model smollm2-135m-instruct [--adapter ...] --template chat \
        --suite OUT_DIR/C.jsonl --suite-category C --max-new-tokens 48 --dtype auto
    python scripts/judge_train_answers.py sheets OUT_DIR LABEL_DIR --chunks 4   # round 1: one answer per prompt, blind
    python scripts/judge_train_answers.py sheets OUT_DIR LABEL_DIR --answers rest --chunks 6   # round 2: the others
    # round 3, in its own directory OUT3 (SafeText in the I-PhysicalSafety form, Alpaca; models k0 and k300):
    python scripts/judge_train_answers.py prompts OUT3 --physical-safety
    python scripts/judge_train_answers.py sheets OUT3 LABEL3 --answers all --chunks 8
    python scripts/judge_train_answers.py export OUT_DIR LABEL_DIR OUT3 LABEL3   # labels -> the package file

Used: OUT_DIR = runs/judge-train-answers, OUT3 = runs/judge-train-answers-3.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from safemix.data.catalog import default_data_dir
from safemix.data.mixture import permutation_key
from safemix.data.suites import load_suite
from safemix.files import write_json_atomic, write_jsonl_atomic
from safemix.scoring.judge_constructed import instruction_prompts, safetext_questions
from safemix.scoring.judge_data import prompt_key
from safemix.scoring.judge_testset import LABEL_OF_HUMAN_REFUSAL, TestItem, reserved_prompt_keys, shipped_train_answers

SEED = 0
#: suite -> prompts drawn (a seeded sample of those the test set does not reserve)
DRAWS = {"advbench": 70, "harmbench-test": 40, "strongreject": 60, "jailbreakbench": 30, "q-harm": 50, "i-cona": 40,
         "xstest": 110, "alpaca-eval": 60}
MODELS = ("base", "k0", "k300")
#: Round 3 (``prompts --physical-safety``): the I-PhysicalSafety question form over SafeText scenarios outside those
#: suites, with the unsafe advice (category harmful) and the safe advice (safe), and Alpaca instructions (general),
#: answered by K=0 and K=300, whose earnest safety talk the judge mistook for refusals.
SAFETY_MODELS = ("k0", "k300")
GENERAL_DRAW = ("llamafactory-alpaca-en-demo", 150)
OUT_FILE = shipped_train_answers()


def prompts(out_dir: Path) -> None:
    """Write harmful.jsonl, safe.jsonl and general.jsonl: the drawn prompts with their suite ids."""
    data_dir = default_data_dir()
    reserved = reserved_prompt_keys(data_dir)
    by_category: dict[str, list[dict[str, str]]] = {}
    for suite, count in DRAWS.items():
        kept = [p for p in load_suite(suite, data_dir, download=False).prompts if prompt_key(p.prompt) not in reserved]
        kept.sort(key=lambda p: permutation_key(SEED, f"train-answers\x00{suite}", p.id))
        for p in kept[:count]:
            by_category.setdefault(str(p.category), []).append({"id": f"{suite}::{p.id}", "prompt": p.prompt})
    _write_prompt_files(out_dir, by_category)


def physical_safety_prompts(out_dir: Path) -> None:
    """Round 3's prompt files: every SafeText scenario outside I-PhysicalSafety asked with its unsafe advice
    (harmful.jsonl) and its safe advice (safe.jsonl), and a seeded draw of Alpaca instructions (general.jsonl)."""
    data_dir = default_data_dir()
    reserved = reserved_prompt_keys(data_dir)
    by_category: dict[str, list[dict[str, str]]] = {"harmful": [], "safe": []}
    for prompt_id, prompt in safetext_questions(data_dir, SEED).items():
        by_category["harmful" if prompt_id.startswith("safetext-unsafe-") else "safe"].append(
            {"id": f"safetext::{prompt_id}", "prompt": prompt})
    name, count = GENERAL_DRAW
    general = sorted(((prompt_id, prompt) for prompt_id, prompt in instruction_prompts(name, data_dir).items()
                      if prompt_key(prompt) not in reserved),
                     key=lambda pair: permutation_key(SEED, "physical-safety-general", pair[1]))
    by_category["general"] = [{"id": f"{name}::{prompt_id}", "prompt": prompt} for prompt_id, prompt in general[:count]]
    _write_prompt_files(out_dir, by_category)


def _write_prompt_files(out_dir: Path, by_category: dict[str, list[dict[str, str]]]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for category, rows in by_category.items():
        write_jsonl_atomic(out_dir / f"{category}.jsonl", rows)
        print(f"{out_dir / f'{category}.jsonl'}: {len(rows)} prompts")


def _all_answers(out_dir: Path) -> dict[str, dict[str, str]]:
    """Every model's answer to every drawn prompt, by ``<model>/<prompt id>``."""
    answers = {}
    for model in MODELS:
        for path in sorted(out_dir.glob(f"{model}-*/*.jsonl")):
            for line in path.read_text(encoding="utf-8").splitlines():
                record = json.loads(line)
                answers[f"{model}/{record['id']}"] = {"key": f"{model}/{record['id']}", "model": model, **record}
    return answers


#: Which answers of a directory a round labels, and the prefix of its opaque ids and key file.
SELECTIONS = {"chosen": ("train", "key.json"), "rest": ("rest", "key-rest.json"), "all": ("all", "key-all.json")}


def _answers(out_dir: Path, selection: str) -> list[dict[str, str]]:
    """The answers one round labels.

    ``chosen`` (round 1): one answer per prompt, the model for each prompt chosen by a seeded draw (each model
    answers a third); ``rest`` (round 2): the other two models' answers; ``all`` (round 3): every answer.
    """
    answers = _all_answers(out_dir)
    if selection == "all":
        return list(answers.values())
    prompt_ids = sorted({key.partition("/")[2] for key in answers}, key=lambda i: permutation_key(SEED, "model", i))
    chosen = {f"{MODELS[index % len(MODELS)]}/{prompt_id}" for index, prompt_id in enumerate(prompt_ids)}
    return [answer for key, answer in sorted(answers.items()) if (key in chosen) == (selection == "chosen")]


def sheets(out_dir: Path, label_dir: Path, chunks: int, selection: str) -> None:
    """Blind sheets (opaque ids) of one round's answers, and the key mapping ids back (in ``out_dir``)."""
    answers = _answers(out_dir, selection)
    answers.sort(key=lambda a: permutation_key(SEED, "sheets", a["key"]))
    prefix, key_file = SELECTIONS[selection]
    key = {f"{prefix}-{n:03d}": a["key"] for n, a in enumerate(answers, start=1)}
    rows = [{"id": opaque, "suite": a["suite"], "prompt": a["prompt"], "response": a["response"]}
            for opaque, a in zip(key, answers)]
    size = -(-len(rows) // chunks)
    label_dir.mkdir(parents=True, exist_ok=True)
    for index in range(chunks):
        write_jsonl_atomic(label_dir / f"{prefix}-sheet-{index + 1}.jsonl", rows[index * size : (index + 1) * size])
    write_json_atomic(out_dir / key_file, key)
    print(f"{len(rows)} answers on {chunks} sheets in {label_dir}")


def export(rounds: list[tuple[Path, Path]]) -> None:
    """Labelled answers of every (answers directory, label directory) pair into the package file (TestItem lines,
    stratum ``training``)."""
    items = []
    for out_dir, label_dir in rounds:
        key = {}
        for _, key_file in SELECTIONS.values():
            if (out_dir / key_file).exists():
                key.update(json.loads((out_dir / key_file).read_text(encoding="utf-8")))
        answers = _all_answers(out_dir)
        # the prompt files' ids ("<suite>::<prompt id>"), by prompt text (generate numbers file prompts itself)
        source_id = {row["prompt"]: row["id"] for path in sorted(out_dir.glob("*.jsonl"))
                     for row in map(json.loads, path.read_text(encoding="utf-8").splitlines())}
        for path in sorted(label_dir.glob("*-labels-*.jsonl")):
            for line in path.read_text(encoding="utf-8").splitlines():
                row = json.loads(line)
                answer = answers[key[row["id"]]]
                suite, _, prompt_id = source_id[answer["prompt"]].partition("::")
                items.append(TestItem(
                    id=f"train:{answer['model']}/{prompt_id}", run="judge-testset", model=answer["model"], suite=suite,
                    category=answer["category"], prompt_id=prompt_id, prompt_key=prompt_key(answer["prompt"]),
                    response=answer["response"], label=LABEL_OF_HUMAN_REFUSAL[row["refusal"]], strata=["training"],
                    note=str(row.get("note", ""))))
    items.sort(key=lambda item: item.id)
    if len({item.id for item in items}) != len(items):
        raise SystemExit("two labelled answers share an id: a label file is in two label directories")
    write_jsonl_atomic(OUT_FILE, [item.model_dump(mode="json") for item in items])
    print(f"{OUT_FILE}: {len(items)} labelled answers")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    prompt_draw = commands.add_parser("prompts")
    prompt_draw.add_argument("out_dir", type=Path)
    prompt_draw.add_argument("--physical-safety", action="store_true", help="round 3's prompts (SafeText, Alpaca)")
    sheet = commands.add_parser("sheets")
    sheet.add_argument("out_dir", type=Path)
    sheet.add_argument("label_dir", type=Path)
    sheet.add_argument("--chunks", type=int, default=4)
    sheet.add_argument("--answers", choices=sorted(SELECTIONS), default="chosen",
                       help="chosen: round 1; rest: round 2 (the answers round 1 did not label); all: every answer")
    exported = commands.add_parser("export")
    exported.add_argument("dirs", type=Path, nargs="+", help="OUT_DIR LABEL_DIR pairs, one per answers directory")
    args = parser.parse_args()
    if args.command == "prompts":
        (physical_safety_prompts if args.physical_safety else prompts)(args.out_dir)
    elif args.command == "sheets":
        sheets(args.out_dir, args.label_dir, args.chunks, args.answers)
    else:
        if len(args.dirs) % 2:
            parser.error("export takes OUT_DIR LABEL_DIR pairs")
        export(list(zip(args.dirs[::2], args.dirs[1::2])))


if __name__ == "__main__":
    main()
