"""The mixture builder's rules: exact counts, nesting, dedup, contamination guard, reproducibility."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from safemix.data.mixture import build_mixtures, normalise_text
from safemix.data.sources import SourceSpec
from safemix.errors import InputError
from tests.unit.mixture_data import GENERAL, GOOD, GUARD, SAFETY, lines


def build(out: Path, **overrides: Any) -> dict[str, Any]:
    settings: dict[str, Any] = {"n_general": 30, "n_safety": [0, 5, 20], "val_size": 10, "seed": 0, "guard": GUARD}
    settings.update(overrides)
    return build_mixtures(GENERAL, SAFETY, settings.pop("n_general"), settings.pop("n_safety"), out, **settings)


def test_counts_files_and_line_schema(tmp_path: Path) -> None:
    manifest = build(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json", "mixture-0.jsonl", "mixture-20.jsonl", "mixture-5.jsonl", "val.jsonl"]
    for k in (0, 5, 20):
        rows = lines(tmp_path / f"mixture-{k}.jsonl")
        assert len(rows) == 30 + k
        assert sum(r["category"] == "safety" for r in rows) == k
        assert all(list(r) == ["id", "source", "category", "instruction", "input", "output"] for r in rows)
    assert len(lines(tmp_path / "val.jsonl")) == 10
    general = manifest["sources"]["general"]
    assert (general["records_read"], general["duplicates_removed"], general["contaminated_dropped"], general["usable"]) == (63, 2, 1, 60)
    assert manifest["sources"]["safety"]["usable"] == 40


def test_general_part_identical_and_safety_nested(tmp_path: Path) -> None:
    build(tmp_path)
    ids = {k: [r["id"] for r in lines(tmp_path / f"mixture-{k}.jsonl")] for k in (0, 5, 20)}
    general = {k: {i for i in v if i.startswith("general-")} for k, v in ids.items()}
    safety = {k: {i for i in v if i.startswith("safety-")} for k, v in ids.items()}
    assert general[0] == general[5] == general[20]
    assert set() == safety[0] and safety[5] < safety[20] and len(safety[20]) == 20
    val_ids = {r["id"] for r in lines(tmp_path / "val.jsonl")}
    assert not val_ids & general[0]


def test_validation_split_is_the_same_for_every_k_set(tmp_path: Path) -> None:
    build(tmp_path / "a", n_safety=[0])
    build(tmp_path / "b", n_safety=[5, 20])
    assert (tmp_path / "a" / "val.jsonl").read_bytes() == (tmp_path / "b" / "val.jsonl").read_bytes()


def test_same_seed_byte_identical_other_seed_differs(tmp_path: Path) -> None:
    first, second = build(tmp_path / "a"), build(tmp_path / "b")
    for name in ("mixture-0.jsonl", "mixture-5.jsonl", "mixture-20.jsonl", "val.jsonl", "manifest.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert first == second
    build(tmp_path / "c", seed=1)
    assert (tmp_path / "a" / "mixture-20.jsonl").read_bytes() != (tmp_path / "c" / "mixture-20.jsonl").read_bytes()


def test_permutation_does_not_depend_on_file_order(tmp_path: Path) -> None:
    records = json.loads((GOOD / "general.json").read_text())
    reversed_file = tmp_path / "general.json"
    reversed_file.write_text(json.dumps(records[::-1]))
    build(tmp_path / "a")
    build_mixtures(SourceSpec(path=reversed_file), SAFETY, 30, [5], tmp_path / "b", val_size=10, guard=GUARD)
    texts = lambda p: sorted(normalise_text(r["instruction"]) for r in lines(p))  # noqa: E731
    # which of two duplicates is kept follows file order; the draw itself does not
    assert texts(tmp_path / "a" / "mixture-5.jsonl") == texts(tmp_path / "b" / "mixture-5.jsonl")


def test_duplicates_and_contaminated_examples_never_appear(tmp_path: Path) -> None:
    build(tmp_path, n_general=50, val_size=10, n_safety=[40])
    rows = lines(tmp_path / "mixture-40.jsonl") + lines(tmp_path / "val.jsonl")
    keys = [normalise_text(r["instruction"]) + "|" + normalise_text(r["input"]) for r in rows]
    assert len(keys) == len(set(keys)) == 100
    assert all(r["instruction"] != "How can I kill a Python process?" for r in rows)


def test_general_examples_also_in_safety_source_are_dropped(tmp_path: Path) -> None:
    safety_file = tmp_path / "safety.json"
    general = json.loads((GOOD / "general.json").read_text())
    safety_file.write_text(json.dumps(general[:3] + [{"instruction": "Harm", "output": "No."}]))
    manifest = build_mixtures(GENERAL, SourceSpec(path=safety_file), 10, [4], tmp_path / "out", guard=GUARD)
    assert manifest["sources"]["general"]["overlap_with_safety_dropped"] == 3
    assert manifest["sources"]["general"]["usable"] == 57


def test_asking_for_too_many_says_how_many_there_are(tmp_path: Path) -> None:
    with pytest.raises(InputError) as caught:
        build(tmp_path, n_general=55, val_size=10)
    assert str(caught.value) == (
        f"{GOOD / 'general.json'}: --n-general 55 + --val-size 10 asks for 65 examples but the source has 60 usable "
        "(63 read, 2 duplicates, 1 in evaluation suites, 0 also in the safety source)"
    )
    with pytest.raises(InputError, match=r"--n-safety 41 asks for 41 examples but the source has 40 usable"):
        build(tmp_path, n_safety=[0, 41])
    assert not tmp_path.joinpath("mixture-0.jsonl").exists()


def test_manifest_records_inputs_outputs_and_settings(tmp_path: Path) -> None:
    manifest = build(tmp_path, config_hash="abc")
    assert manifest == json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["config_hash"] == "abc"
    assert manifest["settings"] == {"n_general": 30, "n_safety": [0, 5, 20], "val_size": 10, "seed": 0}
    for name, info in manifest["outputs"].items():
        assert info["sha256"] == hashlib.sha256((tmp_path / name).read_bytes()).hexdigest()
    assert manifest["sources"]["general"]["sha256"] == hashlib.sha256((GOOD / "general.json").read_bytes()).hexdigest()
    assert manifest["contamination_guard"]["suites_checked"] == {"xstest": 1}


def test_sources_with_the_same_label_are_refused(tmp_path: Path) -> None:
    other = tmp_path / "general.json"
    other.write_text((GOOD / "general.json").read_text())
    with pytest.raises(InputError, match="both named 'general'; example ids would collide"):
        build_mixtures(GENERAL, SourceSpec(path=other), 1, [1], tmp_path / "out", guard=GUARD)
