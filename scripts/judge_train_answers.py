"""Answers of the models safemix tunes, on prompts outside the test set, labelled for the refusal judge's training.

The judge is evaluated on SmolLM2's answers (src/safemix/scoring/testset); it should also learn from that kind of
answer: short, often degenerate compliance on harmful requests, refusals of harmless ones. This script draws
prompts that the judge's test set never uses (``reserved_prompt_keys`` excludes the test set's suites and its 80
XSTest prompts; I-MaliciousInstructions' source MaliciousInstruct and I-Controversial, the instruction form of
O-Controversial, are left out too), has the ``judge-testset`` run's models answer them, and turns the labelled
answers into ``src/safemix/scoring/testset/refusal-judge-train-answers-v1.jsonl`` (same format as the test set,
stratum ``training``; no prompt text).

    python scripts/judge_train_answers.py prompts OUT_DIR     # prompt files per category (seeded sample)
    # then, per model M (base, or the k0 / k300 adapters of runs/judge-testset) and category C:
    safemix generate --out OUT_DIR/M-C --base-model smollm2-135m-instruct [--adapter ...] --template chat \
        --suite OUT_DIR/C.jsonl --suite-category C --max-new-tokens 48 --dtype auto
    python scripts/judge_train_answers.py sheets OUT_DIR LABEL_DIR --chunks 4   # one answer per prompt, blind
    python scripts/judge_train_answers.py export OUT_DIR LABEL_DIR             # labels -> the package file
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from safemix.data.catalog import default_data_dir
from safemix.data.mixture import permutation_key
from safemix.data.suites import load_suite
from safemix.files import write_json_atomic, write_jsonl_atomic
from safemix.scoring.judge_data import prompt_key
from safemix.scoring.judge_testset import LABEL_OF_HUMAN_REFUSAL, TestItem, reserved_prompt_keys, shipped_testset

SEED = 0
#: suite -> prompts drawn (a seeded sample of those the test set does not reserve)
DRAWS = {"advbench": 70, "harmbench-test": 40, "strongreject": 60, "jailbreakbench": 30, "q-harm": 50, "i-cona": 40,
         "xstest": 110, "alpaca-eval": 60}
MODELS = ("base", "k0", "k300")
OUT_FILE = shipped_testset().with_name("refusal-judge-train-answers-v1.jsonl")


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
    out_dir.mkdir(parents=True, exist_ok=True)
    for category, rows in by_category.items():
        write_jsonl_atomic(out_dir / f"{category}.jsonl", rows)
        print(f"{out_dir / f'{category}.jsonl'}: {len(rows)} prompts")


def _answers(out_dir: Path) -> list[dict[str, str]]:
    """One answer per prompt: the model for each prompt chosen by a seeded draw (each model answers a third)."""
    by_model = {}
    for model in MODELS:
        rows = {}
        for path in sorted(out_dir.glob(f"{model}-*/*.jsonl")):
            for line in path.read_text(encoding="utf-8").splitlines():
                record = json.loads(line)
                rows[record["id"]] = record
        by_model[model] = rows
    chosen = []
    for index, prompt_id in enumerate(sorted(by_model[MODELS[0]], key=lambda i: permutation_key(SEED, "model", i))):
        model = MODELS[index % len(MODELS)]
        record = by_model[model][prompt_id]
        chosen.append({"key": f"{model}/{prompt_id}", "model": model, **record})
    return chosen


def sheets(out_dir: Path, label_dir: Path, chunks: int) -> None:
    """Blind sheets (opaque ids) of the chosen answers, and key.json mapping ids back."""
    answers = _answers(out_dir)
    answers.sort(key=lambda a: permutation_key(SEED, "sheets", a["key"]))
    key = {f"train-{n:03d}": a["key"] for n, a in enumerate(answers, start=1)}
    rows = [{"id": opaque, "suite": a["suite"], "prompt": a["prompt"], "response": a["response"]}
            for opaque, a in zip(key, answers)]
    size = -(-len(rows) // chunks)
    label_dir.mkdir(parents=True, exist_ok=True)
    for index in range(chunks):
        write_jsonl_atomic(label_dir / f"train-sheet-{index + 1}.jsonl", rows[index * size : (index + 1) * size])
    write_json_atomic(out_dir / "key.json", key)
    print(f"{len(rows)} answers on {chunks} sheets in {label_dir}")


def export(out_dir: Path, label_dir: Path) -> None:
    """Labelled answers into the package file (TestItem lines, stratum ``training``)."""
    key = json.loads((out_dir / "key.json").read_text(encoding="utf-8"))
    answers = {a["key"]: a for a in _answers(out_dir)}
    # the prompt files' ids ("<suite>::<prompt id>"), by prompt text (generate numbers file prompts itself)
    source_id = {row["prompt"]: row["id"] for path in sorted(out_dir.glob("*.jsonl"))
                 for row in map(json.loads, path.read_text(encoding="utf-8").splitlines())}
    items = []
    for path in sorted(label_dir.glob("train-labels-*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            answer = answers[key[row["id"]]]
            suite, _, prompt_id = source_id[answer["prompt"]].partition("::")
            items.append(TestItem(id=f"train:{answer['model']}/{prompt_id}", run="judge-testset", model=answer["model"], suite=suite,
                                  category=answer["category"], prompt_id=prompt_id, prompt_key=prompt_key(answer["prompt"]),
                                  response=answer["response"], label=LABEL_OF_HUMAN_REFUSAL[row["refusal"]], strata=["training"],
                                  note=str(row.get("note", ""))))
    items.sort(key=lambda item: item.id)
    write_jsonl_atomic(OUT_FILE, [item.model_dump(mode="json") for item in items])
    print(f"{OUT_FILE}: {len(items)} labelled answers")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("prompts").add_argument("out_dir", type=Path)
    sheet = commands.add_parser("sheets")
    sheet.add_argument("out_dir", type=Path)
    sheet.add_argument("label_dir", type=Path)
    sheet.add_argument("--chunks", type=int, default=4)
    exported = commands.add_parser("export")
    exported.add_argument("out_dir", type=Path)
    exported.add_argument("label_dir", type=Path)
    args = parser.parse_args()
    if args.command == "prompts":
        prompts(args.out_dir)
    elif args.command == "sheets":
        sheets(args.out_dir, args.label_dir, args.chunks)
    else:
        export(args.out_dir, args.label_dir)


if __name__ == "__main__":
    main()
