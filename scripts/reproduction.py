"""Write docs/reproduction.md from a finished run: the paper's four findings, measured, with verdicts and a
hand-checked sample of the answers behind each (safemix.report.reproduction).

    python scripts/reproduction.py runs/paper-cpu --out docs/reproduction.md --checks docs/reproduction-checks.jsonl
    python scripts/reproduction.py runs/paper-cpu --write-sample /tmp/sample.jsonl   # answers to read, to fill in

The checks file is the sample with each line's "reader" set to refusal or compliance (and an optional "note");
lines for answers the run no longer holds are not counted. Exit code 2 on bad input, naming the file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from safemix.errors import InputError
from safemix.files import write_text_atomic
from safemix.report.reproduction import read_checks, reproduction_page, write_sample
from safemix.report.runs import load_runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="a finished 'safemix run' directory")
    parser.add_argument("--out", type=Path, help="the page to write (docs/reproduction.md)")
    parser.add_argument("--checks", type=Path, help="the filled checks file (JSON lines)")
    parser.add_argument("--write-sample", type=Path, help="write every claim's sample here, to be filled in")
    args = parser.parse_args(argv)
    if args.out is None and args.write_sample is None:
        parser.error("give --out, --write-sample or both")
    try:
        runs = load_runs([args.run_dir])
        checks = read_checks(args.checks) if args.checks else {}
        command = " ".join(["python scripts/reproduction.py", str(args.run_dir),
                            *([f"--out {args.out}"] if args.out else []),
                            *([f"--checks {args.checks}"] if args.checks else [])])
        page, sample = reproduction_page(runs, checks, command)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.out:
        write_text_atomic(args.out, page)
        print(f"wrote {args.out}")
    if args.write_sample:
        write_sample(sample, args.write_sample)
        print(f"wrote {len(sample)} answers to check to {args.write_sample}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
