"""Time the paper-sized mixture build: 20,000 general examples plus K in {0, 100, 300, 500, 1000, 1500, 2000}.

The paper's 20k alpaca-cleaned subset is not in the offline mirror, so 20,000 distinct general examples are
synthesised. The safety source is the paper's 2,483 examples when a data directory is found (else
synthesised too), and the contamination guard checks every catalog evaluation suite found there.
Target: under 10 s on a 2-core machine. Prints the wall time of each step and the total.

    python benchmarks/build_mixture.py [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from safemix.data.catalog import default_data_dir, get_source, local_path
from safemix.data.mixture import build_mixtures
from safemix.data.sources import SourceSpec

N_GENERAL = 20_000
K_VALUES = [0, 100, 300, 500, 1000, 1500, 2000]
VAL_SIZE = 500
TARGET_S = 10.0


def synthesise(path: Path, n: int, kind: str) -> None:
    """Write ``n`` distinct Alpaca-style examples of realistic length."""
    filler = "This sentence makes the answer about as long as a typical Alpaca response. " * 6
    rows = [
        {"instruction": f"{kind} instruction number {i}: explain topic {i % 977} in detail.",
         "input": "" if i % 3 else f"Context for item {i}.", "output": f"Answer {i}. {filler}"}
        for i in range(n)
    ]
    path.write_text(json.dumps(rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=None)
    args = parser.parse_args()
    data_dir = default_data_dir(args.data_dir)

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        synthesise(tmp_path / "general.json", N_GENERAL + VAL_SIZE, "General")
        safety_file = local_path(get_source("paper-safety"), data_dir) if data_dir else None
        if safety_file is None:
            synthesise(tmp_path / "safety.json", 2483, "Safety")
            safety = SourceSpec(path=tmp_path / "safety.json")
        else:
            safety = SourceSpec(name="paper-safety")
        print(f"general: {N_GENERAL} + {VAL_SIZE} validation synthesised; safety: {safety.label}; data dir: {data_dir}")

        start = time.perf_counter()
        manifest = build_mixtures(SourceSpec(path=tmp_path / "general.json"), safety, N_GENERAL, K_VALUES,
                                  tmp_path / "out", val_size=VAL_SIZE, seed=0, data_dir=data_dir)
        elapsed_s = time.perf_counter() - start

    rows = sum(info["rows"] for info in manifest["outputs"].values())
    print(f"suites checked by the contamination guard: {len(manifest['contamination_guard']['suites_checked'])}")
    print(f"wrote {len(manifest['outputs'])} files, {rows} lines")
    print(f"build_s={elapsed_s:.2f} target_s={TARGET_S:.0f} target_over_build={TARGET_S / elapsed_s:.2f}")


if __name__ == "__main__":
    main()
