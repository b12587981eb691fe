"""Leave-one-model-out agreement of the refusal judge with XSTest's human labels, against the baselines.

For each of XSTest's three labelled models: train the head on the other two models' completions plus the
extra data (never the held-out model's), and compare its binary refusal call (refusal = full or partial) with
the human label on the held-out model; XSTest's own string-match and GPT-4 classifier labels on the same rows
are the baselines. Writes the table (default docs/refusal-judge-lomo.md) and prints it.

    .venv/bin/python benchmarks/refusal_judge_lomo.py [--data-dir DIR] [--cache-dir DIR] [--no-extra]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from safemix.data.catalog import default_data_dir, get_source, locate
from safemix.data.readers import read_rows
from safemix.scoring.cache import default_cache_root
from safemix.scoring.encoder import SentenceEncoder, encoder_dir
from safemix.scoring.judge import HeadTraining, leave_one_model_out
from safemix.scoring.judge_data import load_judge_data

DOC = Path(__file__).resolve().parents[1] / "docs" / "refusal-judge-lomo.md"


def gpt4_binary_agreement(model: str, data_dir: Path) -> float:
    """Binary agreement of XSTest's GPT-4 classifier labels with the human labels for one model."""
    name = f"xstest-completions-{model}-gpteval"
    columns = get_source(name).columns
    rows = read_rows(locate(name, data_dir, download=False), "csv")
    refused = [(not r.values[columns["label"]].startswith("1_"), not r.values[columns["baseline_label"]].startswith("1_"))
               for r in rows]
    return sum(human == gpt4 for human, gpt4 in refused) / len(refused)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--cache-dir", type=Path, help="embedding cache (default $SAFEMIX_SCORE_CACHE/embeddings)")
    parser.add_argument("--no-extra", action="store_true", help="train on XSTest's human labels only")
    parser.add_argument("--out", type=Path, default=DOC, help="markdown file to write (default docs/refusal-judge-lomo.md)")
    args = parser.parse_args()
    data_dir = default_data_dir(args.data_dir)
    examples, _ = load_judge_data(data_dir, extra=not args.no_extra)
    encoder = SentenceEncoder(encoder_dir(), cache_dir=args.cache_dir or default_cache_root() / "embeddings")
    training = HeadTraining()
    results = leave_one_model_out(encoder, examples, training)
    n_extra = sum(e.group == "extra" for e in examples)
    lines = [
        "# Refusal judge: leave-one-model-out on XSTest's human labels",
        "",
        f"Produced by `benchmarks/refusal_judge_lomo.py{' --no-extra' if args.no_extra else ''}` "
        f"({len(examples) - n_extra} human-labelled XSTest completions, 450 per model, + {n_extra} extra examples; "
        f"each fold trains on two models' 900 completions + the extra examples; head: {training}).",
        "Binary agreement: refusal (full or partial) vs compliance, against the human label, on the held-out "
        "model's 450 completions, which the head never saw.",
        "",
        "| held-out model | n | refusal judge | string match (XSTest) | GPT-4 judge (XSTest) | judge, 3-class | partial refusals found |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(f"| {r.held_out} | {r.n} | **{r.binary_agreement:.4f}** | {r.strmatch_binary_agreement:.4f} | "
                     f"{gpt4_binary_agreement(r.held_out, data_dir):.4f} | {r.three_class_agreement:.4f} | "
                     f"{r.partial_refusals_found}/{r.partial_refusals} |")
    mean = sum(r.binary_agreement for r in results) / len(results)
    lines += ["", f"Mean binary agreement of the judge: {mean:.4f}; lowest: {min(r.binary_agreement for r in results):.4f}.",
              "Responses of the held-out model whose exact text also occurs in the training data: "
              + ", ".join(f"{r.held_out} {r.n_texts_also_in_training}" for r in results) + ".", ""]
    args.out.write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
