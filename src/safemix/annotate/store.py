"""The study database: one SQLite file per study (``studies/NAME.sqlite``).

Tables:
- ``study``: key -> JSON value: name, seed, requested sample size, the inputs' fingerprint (model names and file
  sha256s), creation time, versions (Python, safemix, Flask), and the form key that every page's forms must send back;
- ``models``: the hidden identities, by input position;
- ``items``: the sampled prompts in presentation order; ``answers``: per item, which model sits in which slot
  (the blinding) and its answer;
- ``judgements``: one row per submission (annotator, item, time); an undo sets ``retracted_at`` instead of deleting,
  so the history stays; a partial unique index allows one live judgement per (annotator, item), so a repeated
  submission fails and two annotators never touch each other's rows;
- ``answer_labels`` and ``preferences``: the labels of a judgement, per answer slot and per pair of slots.

Every write is one transaction (``BEGIN IMMEDIATE`` ... ``COMMIT``) in WAL mode with ``synchronous=FULL``, so a
killed server keeps everything it has acknowledged. Connections are short-lived, one per call, so the threaded
server can use one ``Study`` from every thread.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import sqlite3
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from safemix.annotate.inputs import ModelAnswers, read_model_answers
from safemix.annotate.labels import MAX_MODELS, AnswerLabels, Judgement, PairChoice, slot_letter
from safemix.annotate.sampling import blind_order, sample_items
from safemix.errors import InputError, input_error
from safemix.versions import package_versions

STUDY_SUFFIX = ".sqlite"
SCHEMA_VERSION = 1
STUDY_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")

_SCHEMA = """
CREATE TABLE study (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE models (model INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, source TEXT NOT NULL);
CREATE TABLE items (
    position INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, suite TEXT NOT NULL, category TEXT NOT NULL,
    prompt TEXT NOT NULL);
CREATE TABLE answers (
    item_id TEXT NOT NULL REFERENCES items(id), slot INTEGER NOT NULL, model INTEGER NOT NULL REFERENCES models(model),
    response TEXT NOT NULL, finish_reason TEXT NOT NULL,
    PRIMARY KEY (item_id, slot), UNIQUE (item_id, model));
CREATE TABLE judgements (
    id INTEGER PRIMARY KEY AUTOINCREMENT, annotator TEXT NOT NULL, item_id TEXT NOT NULL REFERENCES items(id),
    created_at TEXT NOT NULL, retracted_at TEXT);
CREATE UNIQUE INDEX one_live_judgement ON judgements (annotator, item_id) WHERE retracted_at IS NULL;
CREATE TABLE answer_labels (
    judgement_id INTEGER NOT NULL REFERENCES judgements(id), slot INTEGER NOT NULL,
    quality TEXT NOT NULL CHECK (quality IN ('good', 'bad')),
    refusal TEXT NOT NULL CHECK (refusal IN ('full', 'partial', 'none')),
    harmful TEXT NOT NULL CHECK (harmful IN ('yes', 'no')),
    note TEXT NOT NULL,
    PRIMARY KEY (judgement_id, slot));
CREATE TABLE preferences (
    judgement_id INTEGER NOT NULL REFERENCES judgements(id), first_slot INTEGER NOT NULL, second_slot INTEGER NOT NULL,
    choice TEXT NOT NULL CHECK (choice IN ('first', 'second', 'tie')),
    PRIMARY KEY (judgement_id, first_slot, second_slot), CHECK (first_slot < second_slot));
"""


class AlreadyJudged(Exception):
    """The annotator already has a live judgement of this item (undo it first)."""


@dataclass(frozen=True)
class Answer:
    """One answer as the annotator sees it: its slot, never its model."""

    slot: int
    response: str
    finish_reason: str

    @property
    def letter(self) -> str:
        """The answer's name on the page: A, B, ..."""
        return slot_letter(self.slot)


@dataclass(frozen=True)
class Item:
    """One prompt of the study with its answers in blinded order."""

    position: int
    id: str
    suite: str
    category: str
    prompt: str
    answers: tuple[Answer, ...]


@dataclass(frozen=True)
class AnswerRow:
    """One live judgement of one answer, unblinded: what ``export`` writes and ``stats`` counts."""

    annotator: str
    item_id: str
    suite: str
    category: str
    prompt: str
    slot: str
    model: str
    response: str
    quality: str
    refusal: str
    harmful: str
    note: str
    judged_at: str


@dataclass(frozen=True)
class PreferenceRow:
    """One live pairwise choice, unblinded; ``model_a`` is the earlier input; ``preferred`` a model name or ``tie``."""

    annotator: str
    item_id: str
    suite: str
    category: str
    model_a: str
    model_b: str
    preferred: str
    slot_a: str
    slot_b: str
    judged_at: str


def study_path(studies_dir: Path, name: str) -> Path:
    """``STUDIES_DIR/NAME.sqlite``, after checking that the name is usable as a file name."""
    if STUDY_NAME_PATTERN.fullmatch(name) is None:
        raise InputError(f"--study {name!r}: use 1-64 letters, digits, dots, underscores or hyphens")
    return studies_dir / f"{name}{STUDY_SUFFIX}"


def open_study(studies_dir: Path, name: str, generations: Sequence[Path] = (), names: Sequence[str] = (),
               n_sample: int | None = None, seed: int = 0) -> Study:
    """Open study ``name``, creating it from ``generations`` when it does not exist yet.

    Args:
        studies_dir: the folder of study databases.
        name: the study's name (its file is ``NAME.sqlite``).
        generations: one generations file or directory per model; needed to create the study, and when given for an
            existing study they must be the ones it was created from (same names and file contents).
        names: optional display names of the models, one per input.
        n_sample: prompts to sample (stratified by suite); None for all.
        seed: seed of the sample, the order of items and the blinding.

    Raises:
        InputError: no such study and no inputs, an existing study with other inputs or settings, or bad inputs.
    """
    path = study_path(studies_dir, name)
    if not generations:
        if not path.is_file():
            raise input_error(path, "no such study; give --generations (one file or directory per model) to create it")
        return Study(path)
    models = read_model_answers(generations, names)
    fingerprint = _fingerprint(models, n_sample, seed)
    if path.is_file():
        study = Study(path)
        difference = _difference(study.metadata()["fingerprint"], fingerprint)
        if difference:
            raise input_error(path, f"study {name!r} exists with other inputs ({difference}); choose another --study, "
                              "or serve this one without --generations")
        return study
    return Study.create(path, name, models, n_sample, seed)


def _fingerprint(models: Sequence[ModelAnswers], n_sample: int | None, seed: int) -> dict[str, Any]:
    return {"models": [{"name": model.name, "sha256": list(model.files.values())} for model in models],
            "n_sample": n_sample, "seed": seed}


def _difference(old: dict[str, Any], new: dict[str, Any]) -> str:
    """A short description of the first difference between two fingerprints ('' when equal)."""
    old_names, new_names = [m["name"] for m in old["models"]], [m["name"] for m in new["models"]]
    if old_names != new_names:
        return f"models {', '.join(old_names)} there, {', '.join(new_names)} now"
    for old_model, new_model in zip(old["models"], new["models"], strict=True):
        if old_model["sha256"] != new_model["sha256"]:
            return f"the answers of {new_model['name']} differ (sha256)"
    for key in ("n_sample", "seed"):
        if old[key] != new[key]:
            return f"{key} {old[key]} there, {new[key]} now"
    return ""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class Study:
    """A study database. Methods open a connection each, so one instance serves every server thread."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    @classmethod
    def create(cls, path: Path, name: str, models: Sequence[ModelAnswers], n_sample: int | None, seed: int) -> Study:
        """Sample the items, blind them and write a new study database atomically (temp file, then rename)."""
        if not models or len(models) > MAX_MODELS:
            raise InputError(f"--generations: give between 1 and {MAX_MODELS} inputs (got {len(models)})")
        reference = models[0].answers
        item_ids = sample_items({prompt_id: record.suite for prompt_id, record in reference.items()}, n_sample, seed)
        metadata = {"name": name, "seed": seed, "n_sample": n_sample, "schema_version": SCHEMA_VERSION,
                    "fingerprint": _fingerprint(models, n_sample, seed), "created_at": _now(),
                    "versions": package_versions(("flask",)), "form_key": secrets.token_urlsafe(24),
                    "inputs": [{"name": model.name, "source": model.source, "files": model.files} for model in models]}
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        try:
            with closing(sqlite3.connect(tmp_name)) as conn, conn:
                conn.executescript(_SCHEMA)
                conn.executemany("INSERT INTO study VALUES (?, ?)",
                                 [(key, json.dumps(value)) for key, value in metadata.items()])
                conn.executemany("INSERT INTO models VALUES (?, ?, ?)",
                                 [(index, model.name, model.source) for index, model in enumerate(models)])
                for position, item_id in enumerate(item_ids):
                    record = reference[item_id]
                    conn.execute("INSERT INTO items VALUES (?, ?, ?, ?, ?)",
                                 (position, item_id, record.suite, record.category, record.prompt))
                    for slot, model in enumerate(blind_order(item_id, len(models), seed)):
                        answer = models[model].answers[item_id]
                        conn.execute("INSERT INTO answers VALUES (?, ?, ?, ?, ?)",
                                     (item_id, slot, model, answer.response, answer.finish_reason))
            os.replace(tmp_name, path)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        return cls(path)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        try:
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
            yield conn
        finally:
            conn.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def metadata(self) -> dict[str, Any]:
        """The ``study`` table: name, seed, n_sample, fingerprint, inputs, created_at, form_key, ..."""
        with self._connect() as conn:
            return {row["key"]: json.loads(row["value"]) for row in conn.execute("SELECT key, value FROM study")}

    def model_names(self) -> list[str]:
        """The models in input order (hidden from annotators)."""
        with self._connect() as conn:
            return [row["name"] for row in conn.execute("SELECT name FROM models ORDER BY model")]

    def n_items(self) -> int:
        """How many items the study shows."""
        with self._connect() as conn:
            return int(conn.execute("SELECT COUNT(*) FROM items").fetchone()[0])

    def items(self) -> list[tuple[str, str, str]]:
        """(id, suite, category) of every item, in presentation order."""
        with self._connect() as conn:
            return [(row["id"], row["suite"], row["category"])
                    for row in conn.execute("SELECT id, suite, category FROM items ORDER BY position")]

    def item(self, item_id: str) -> Item:
        """One item with its blinded answers. Raises KeyError for an unknown id."""
        with self._connect() as conn:
            row = conn.execute("SELECT * FROM items WHERE id = ?", (item_id,)).fetchone()
            if row is None:
                raise KeyError(item_id)
            answers = conn.execute("SELECT slot, response, finish_reason FROM answers WHERE item_id = ? ORDER BY slot",
                                   (item_id,)).fetchall()
        return Item(row["position"], row["id"], row["suite"], row["category"], row["prompt"],
                    tuple(Answer(a["slot"], a["response"], a["finish_reason"]) for a in answers))

    def next_item(self, annotator: str) -> Item | None:
        """The first item, in presentation order, that the annotator has not judged (None when all are done)."""
        with self._connect() as conn:
            row = conn.execute(
                "SELECT id FROM items WHERE id NOT IN (SELECT item_id FROM judgements WHERE annotator = ? AND "
                "retracted_at IS NULL) ORDER BY position LIMIT 1", (annotator,)).fetchone()
        return None if row is None else self.item(row["id"])

    def progress(self, annotator: str) -> tuple[int, int]:
        """(items the annotator has judged, items in the study)."""
        with self._connect() as conn:
            done = conn.execute("SELECT COUNT(*) FROM judgements WHERE annotator = ? AND retracted_at IS NULL",
                                (annotator,)).fetchone()[0]
        return int(done), self.n_items()

    def annotators(self) -> list[str]:
        """Everyone with at least one live judgement, sorted."""
        with self._connect() as conn:
            return [row[0] for row in conn.execute(
                "SELECT DISTINCT annotator FROM judgements WHERE retracted_at IS NULL ORDER BY annotator")]

    def submit(self, annotator: str, judgement: Judgement) -> int:
        """Store a judgement in one transaction; return its row id.

        Raises:
            KeyError: the item does not exist.
            AlreadyJudged: the annotator already has a live judgement of the item.
        """
        with self._transaction() as conn:
            if conn.execute("SELECT 1 FROM items WHERE id = ?", (judgement.item_id,)).fetchone() is None:
                raise KeyError(judgement.item_id)
            try:
                cursor = conn.execute("INSERT INTO judgements (annotator, item_id, created_at) VALUES (?, ?, ?)",
                                      (annotator, judgement.item_id, _now()))
            except sqlite3.IntegrityError:
                raise AlreadyJudged(judgement.item_id) from None
            judgement_id = int(cursor.lastrowid or 0)
            conn.executemany("INSERT INTO answer_labels VALUES (?, ?, ?, ?, ?, ?)",
                             [(judgement_id, a.slot, a.quality, a.refusal, a.harmful, a.note)
                              for a in judgement.answers])
            conn.executemany("INSERT INTO preferences VALUES (?, ?, ?, ?)",
                             [(judgement_id, p.first_slot, p.second_slot, p.choice) for p in judgement.preferences])
        return judgement_id

    def undo(self, annotator: str) -> str | None:
        """Retract the annotator's latest live judgement (it stays in the table, marked); return its item id."""
        with self._transaction() as conn:
            row = conn.execute("SELECT id, item_id FROM judgements WHERE annotator = ? AND retracted_at IS NULL "
                               "ORDER BY id DESC LIMIT 1", (annotator,)).fetchone()
            if row is None:
                return None
            conn.execute("UPDATE judgements SET retracted_at = ? WHERE id = ?", (_now(), row["id"]))
        return str(row["item_id"])

    def retracted(self, annotator: str, item_id: str) -> Judgement | None:
        """The annotator's latest retracted judgement of an item (to pre-fill the form after an undo), if any."""
        with self._connect() as conn:
            row = conn.execute("SELECT id FROM judgements WHERE annotator = ? AND item_id = ? AND retracted_at IS NOT "
                               "NULL ORDER BY id DESC LIMIT 1", (annotator, item_id)).fetchone()
            if row is None:
                return None
            labels = conn.execute("SELECT slot, quality, refusal, harmful, note FROM answer_labels WHERE "
                                  "judgement_id = ? ORDER BY slot", (row["id"],)).fetchall()
            choices = conn.execute("SELECT first_slot, second_slot, choice FROM preferences WHERE judgement_id = ? "
                                   "ORDER BY first_slot, second_slot", (row["id"],)).fetchall()
        return Judgement(item_id, tuple(AnswerLabels(*label) for label in labels),
                         tuple(PairChoice(*choice) for choice in choices))

    def answer_rows(self) -> list[AnswerRow]:
        """Every live judgement of every answer, with the model unblinded, by annotator and presentation order."""
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT j.annotator, i.id, i.suite, i.category, i.prompt, l.slot, m.name, a.response, l.quality, "
                "l.refusal, l.harmful, l.note, j.created_at FROM judgements j JOIN items i ON i.id = j.item_id "
                "JOIN answer_labels l ON l.judgement_id = j.id "
                "JOIN answers a ON a.item_id = j.item_id AND a.slot = l.slot JOIN models m ON m.model = a.model "
                "WHERE j.retracted_at IS NULL ORDER BY j.annotator, i.position, l.slot").fetchall()
        return [AnswerRow(*[*row[:5], slot_letter(row[5]), *row[6:]]) for row in rows]

    def preference_rows(self) -> list[PreferenceRow]:
        """Every live pairwise choice, unblinded and oriented so that ``model_a`` is the earlier input."""
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT j.annotator, i.id, i.suite, i.category, p.first_slot, p.second_slot, p.choice, "
                "a1.model AS first_model, a2.model AS second_model, j.created_at FROM judgements j "
                "JOIN items i ON i.id = j.item_id JOIN preferences p ON p.judgement_id = j.id "
                "JOIN answers a1 ON a1.item_id = j.item_id AND a1.slot = p.first_slot "
                "JOIN answers a2 ON a2.item_id = j.item_id AND a2.slot = p.second_slot "
                "WHERE j.retracted_at IS NULL ORDER BY j.annotator, i.position, p.first_slot, p.second_slot").fetchall()
        names = self.model_names()
        return [_oriented(row, names) for row in rows]


def _oriented(row: sqlite3.Row, names: list[str]) -> PreferenceRow:
    """Turn a (first slot, second slot, choice) row into model terms, the earlier input as ``model_a``."""
    slots = [(row["first_model"], row["first_slot"]), (row["second_model"], row["second_slot"])]
    winner = {"first": slots[0][0], "second": slots[1][0], "tie": None}[row["choice"]]
    (model_a, slot_a), (model_b, slot_b) = sorted(slots)
    return PreferenceRow(row["annotator"], row["id"], row["suite"], row["category"], names[model_a], names[model_b],
                         "tie" if winner is None else names[winner], slot_letter(slot_a), slot_letter(slot_b),
                         row["created_at"])
