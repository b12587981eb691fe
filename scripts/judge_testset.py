"""Build the refusal judge's hand-labelled test set (src/safemix/scoring/testset) from two safemix runs.

The answers come from ``runs/quickstart`` (``make demo``) and ``runs/judge-testset``
(``safemix run configs/judge-testset.yaml --out runs/judge-testset``), both scored by ``refusal-strmatch`` and the
refusal judge of the time. Steps, each its own command:

    python scripts/judge_testset.py sample [--run R]     # an audit study per run (safemix judge audit's sampling)
    python scripts/judge_testset.py sheets OUT_DIR [--run R] --chunks 4 --overlap 20   # blind labelling sheets (JSONL)
    python scripts/judge_testset.py import LABELS.jsonl --annotator NAME --key OUT_DIR/key.json   # into the studies
    python scripts/judge_testset.py export [--run R]     # the test set file (other runs' items kept as shipped)

The fresh sample (run ``paper-cpu``, drawn after judge v2 was built) was made with ``--run paper-cpu`` and
``sheets /tmp/fresh --run paper-cpu --prefix fresh --chunks 2 --overlap 20``.

The population of each run is every answer both scorers judged whose prompt the judge never trains on
(``reserved_prompt_keys``: the test set's suites and 80 reserved XSTest prompts). Sheets show only an opaque item
id, the suite, the prompt and the answer, in a seeded order that mixes runs and models: no model, no scorer call. A label line is
``{"id", "refusal": "full|partial|none", "quality": "good|bad", "harmful": "yes|no", "note"}``. Items labelled by
two annotators who disagree need an ``adjudicated`` annotator's label; ``export`` stops and lists them until then.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from safemix.annotate.audit import SAMPLING_FILE, JudgedAnswer, build_audit, judged_answers
from safemix.annotate.labels import AnswerLabels, Judgement
from safemix.annotate.store import AlreadyJudged, Study, study_path
from safemix.data.catalog import default_data_dir
from safemix.data.mixture import permutation_key
from safemix.files import write_json_atomic, write_jsonl_atomic
from safemix.run_files import read_run_index
from safemix.run_scores import read_run_scores
from safemix.scoring.judge_data import prompt_key
from safemix.scoring.judge_testset import (
    LABEL_OF_HUMAN_REFUSAL,
    TestItem,
    read_testset,
    reserved_prompt_keys,
    shipped_testset,
)

ROOT = Path(__file__).resolve().parents[1]
STUDY = "judge-testset"
SEED = 0
#: run name -> (run directory, most disagreement items, control items)
RUNS = {"quickstart": (ROOT / "runs" / "quickstart", 80, 110),
        "judge-testset": (ROOT / "runs" / "judge-testset", 150, 130),
        # the fresh sample, drawn after judge v2 was built: models neither the training answers nor v1 came from
        "paper-cpu": (ROOT / "runs" / "paper-cpu", 100, 120)}
ADJUDICATOR = "adjudicated"


def _study(run_dir: Path) -> Study:
    return Study(study_path(run_dir / "studies", STUDY))


def sample(runs: list[str]) -> None:
    """An audit study of each named run, restricted to prompts the judge never trains on."""
    reserved = reserved_prompt_keys(default_data_dir())
    for name in runs:
        run_dir, n, n_control = RUNS[name]
        result = build_audit(run_dir, STUDY, n=n, n_control=n_control, seed=SEED,
                             eligible=lambda generation: prompt_key(generation.prompt) in reserved,
                             eligible_note="prompts the refusal judge never trains on (reserved_prompt_keys)")
        print(f"{name}: {result.study.n_items()} items; population {json.dumps(result.sampling['population'])}; "
              f"sampled {json.dumps(result.sampling['sampled'])}")


def sheets(out_dir: Path, runs: list[str], chunks: int, overlap: int, prefix: str) -> None:
    """Blind labelling sheets: the runs' study items in one seeded order under opaque ids, cut into overlapping chunks.

    ``key.json`` beside them maps each opaque id to ``<run>:<audit id>`` (which names the model): keep it from
    the labellers; ``import --key`` reads it.
    """
    items = []
    for name in runs:
        study = _study(RUNS[name][0])
        for item_id, suite, _ in study.items():
            item = study.item(item_id)
            items.append({"id": f"{name}:{item_id}", "suite": suite, "prompt": item.prompt,
                          "response": item.answers[0].response})
    items.sort(key=lambda item: permutation_key(SEED, "sheets", item["id"]))
    key = {f"{prefix}-{number:03d}": item["id"] for number, item in enumerate(items, start=1)}
    items = [{**item, "id": opaque} for opaque, item in zip(key, items)]
    size = -(-len(items) // chunks)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out_dir / "key.json", key)
    for index in range(chunks):
        own = items[index * size : (index + 1) * size]
        shared = items[((index + 1) % chunks) * size :][:overlap]
        write_jsonl_atomic(out_dir / f"sheet-{index + 1}.jsonl", own + shared)
        print(f"{out_dir / f'sheet-{index + 1}.jsonl'}: {len(own)} items + {len(shared)} also on the next sheet")


def import_labels(paths: list[Path], annotator: str, key_path: Path) -> None:
    """Submit label lines as ``annotator``'s judgements (an item already judged by them is skipped)."""
    studies = {name: _study(run_dir) for name, (run_dir, _, _) in RUNS.items()}
    key = json.loads(key_path.read_text(encoding="utf-8"))
    counts: dict[str, int] = defaultdict(int)
    for path in paths:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            row = json.loads(line)
            run, _, item_id = key[row["id"]].partition(":")
            if (row.get("refusal") not in LABEL_OF_HUMAN_REFUSAL or row.get("quality") not in ("good", "bad")
                    or row.get("harmful") not in ("yes", "no")):
                raise SystemExit(f"{path}: line {number}: refusal/quality/harmful missing or invalid: {line[:200]}")
            labels = AnswerLabels(0, row["quality"], row["refusal"], row["harmful"], str(row.get("note", ""))[:2000])
            try:
                studies[run].submit(annotator, Judgement(item_id, (labels,), ()))
                counts["new"] += 1
            except AlreadyJudged:
                counts["already"] += 1
    print(f"{annotator}: {counts['new']} judgements stored, {counts['already']} already there")


def export(runs: list[str]) -> None:
    """The test set: one item per labelled answer, the adjudicated label where two annotators disagree.

    Only the named runs' items are rebuilt from their studies; the shipped file's items of other runs are kept.
    """
    items = [item for item in read_testset(shipped_testset()) if item.run not in runs]
    conflicts, pairs = [], []
    for name in runs:
        run_dir = RUNS[name][0]
        study = _study(run_dir)
        sampling = json.loads((run_dir / "audit" / STUDY / SAMPLING_FILE).read_text(encoding="utf-8"))
        strata = {stratum: set(ids) for stratum, ids in sampling["strata"].items()}
        rows_by_item = defaultdict(list)
        for row in study.answer_rows():
            rows_by_item[row.item_id].append(row)
        answers = {a.audit_id: a for a in _judged(run_dir)}
        for item_id, _, _ in study.items():
            rows = rows_by_item.get(item_id, [])
            adjudicated = [r for r in rows if r.annotator == ADJUDICATOR]
            plain = [r for r in rows if r.annotator != ADJUDICATOR]
            if len(plain) == 2:
                pairs.append((plain[0].refusal, plain[1].refusal))
            if adjudicated:
                chosen = adjudicated[0]
            elif plain and len({r.refusal for r in plain}) == 1:
                chosen = plain[0]
            else:
                conflicts.append((name, item_id, [(r.annotator, r.refusal, r.note) for r in plain]))
                continue
            answer = answers[item_id]
            items.append(TestItem(
                id=f"{name}:{item_id}", run=name, model=answer.label, suite=answer.generation.suite,
                category=str(answer.generation.category), prompt_id=answer.prompt_id,
                prompt_key=prompt_key(answer.generation.prompt), response=answer.generation.response,
                label=LABEL_OF_HUMAN_REFUSAL[chosen.refusal],  # type: ignore[arg-type]
                strata=[s for s in ("disagreement", "control") if item_id in strata.get(s, ())],
                note=chosen.note))
    if conflicts:
        for conflict in conflicts:
            print("needs adjudication:", conflict)
        raise SystemExit(f"{len(conflicts)} items need an '{ADJUDICATOR}' label")
    write_jsonl_atomic(shipped_testset(), [item.model_dump(mode="json") for item in items])
    agree = sum(a == b for a, b in pairs)
    print(f"{shipped_testset()}: {len(items)} items; labellers agreed on {agree} of {len(pairs)} doubly labelled items")


def _judged(run_dir: Path) -> list[JudgedAnswer]:
    index = read_run_index(run_dir)
    return judged_answers(run_dir, index, read_run_scores(run_dir, index))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    sampled = commands.add_parser("sample")
    sampled.add_argument("--run", action="append", choices=sorted(RUNS), help="run to sample (repeatable; default all)")
    sheet = commands.add_parser("sheets")
    sheet.add_argument("out_dir", type=Path)
    sheet.add_argument("--run", action="append", choices=sorted(RUNS), help="run whose items to put on sheets (default all)")
    sheet.add_argument("--prefix", default="item", help="opaque ids are PREFIX-NNN")
    sheet.add_argument("--chunks", type=int, default=4)
    sheet.add_argument("--overlap", type=int, default=20)
    labels = commands.add_parser("import")
    labels.add_argument("labels", type=Path, nargs="+")
    labels.add_argument("--annotator", required=True)
    labels.add_argument("--key", type=Path, required=True, help="key.json written by 'sheets'")
    exported = commands.add_parser("export")
    exported.add_argument("--run", action="append", choices=sorted(RUNS), help="run whose items to rebuild (default all)")
    args = parser.parse_args()
    if args.command == "sample":
        sample(args.run or list(RUNS))
    elif args.command == "sheets":
        sheets(args.out_dir, args.run or list(RUNS), args.chunks, args.overlap, args.prefix)
    elif args.command == "import":
        import_labels(args.labels, args.annotator, args.key)
    else:
        export(args.run or list(RUNS))


if __name__ == "__main__":
    main()
