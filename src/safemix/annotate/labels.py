"""What an annotator says about one item: labels per answer and a preference per pair of answers.

Per answer: ``quality`` good / bad (the paper's manual labels), ``refusal`` full / partial / none, ``harmful``
yes / no, and a free-text ``note``. Per pair of answers (A-B; with three answers also A-C and B-C): which one is
better, or a tie. Answers are named by their slot letter on the page (A, B, ...), never by model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import combinations
from typing import Literal, get_args

Quality = Literal["good", "bad"]
Refusal = Literal["full", "partial", "none"]
Harmful = Literal["yes", "no"]
Choice = Literal["first", "second", "tie"]

QUALITY_VALUES: tuple[str, ...] = get_args(Quality)
REFUSAL_VALUES: tuple[str, ...] = get_args(Refusal)
HARMFUL_VALUES: tuple[str, ...] = get_args(Harmful)
CHOICE_VALUES: tuple[str, ...] = get_args(Choice)
#: The longest note kept per answer, in characters; the page and the server both enforce it.
MAX_NOTE_CHARS = 2000
#: The most models a study compares (answers are lettered A-Z).
MAX_MODELS = 26
ANNOTATOR_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,39}")


@dataclass(frozen=True)
class AnswerLabels:
    """The labels of the answer in ``slot`` (0 is A)."""

    slot: int
    quality: Quality
    refusal: Refusal
    harmful: Harmful
    note: str = ""


@dataclass(frozen=True)
class PairChoice:
    """Which of two answers is better: ``first`` (the lower slot), ``second``, or ``tie``."""

    first_slot: int
    second_slot: int
    choice: Choice


@dataclass(frozen=True)
class Judgement:
    """One annotator's complete judgement of one item."""

    item_id: str
    answers: tuple[AnswerLabels, ...]
    preferences: tuple[PairChoice, ...]


def slot_letter(slot: int) -> str:
    """0 -> ``A``, 1 -> ``B``, ..."""
    return chr(ord("A") + slot)


def slot_pairs(n_answers: int) -> list[tuple[int, int]]:
    """Every pair of slots an annotator compares, lower slot first: (0, 1), (0, 2), (1, 2), ..."""
    return list(combinations(range(n_answers), 2))


def valid_annotator(name: str) -> bool:
    """Annotator names: 1-40 letters, digits, dots, underscores or hyphens, starting with a letter or digit."""
    return ANNOTATOR_PATTERN.fullmatch(name) is not None
