"""The pairwise judge: given an instruction and two answers in positions A and B, which is better (A, B or tie).

Each item is an :class:`AnswerPair`: the instruction and the two answers in the order the judge sees them. A
judgement's ``value`` is the score of position A (1 A, 0 B, 0.5 tie); a reply that does not parse is unscored,
never guessed. The judge carries a scorer's identity (name, version, settings, fingerprint), so its verdicts are
cached in the scoring cache (:mod:`safemix.winrate.compare`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import ClassVar

from safemix.generate.base import Generator, chunks, make_generation
from safemix.generate.texts import TextModel
from safemix.records import Generation, Prompt
from safemix.scoring.base import Judgement
from safemix.scoring.llm_judge import reply_judgement
from safemix.scoring.templates import UnparsedReply, Verdict
from safemix.winrate.config import JudgeConfig

#: The judge's verdict -> the score of the answer in position A.
VERDICT_VALUES: dict[str, float] = {"A": 1.0, "B": 0.0, "tie": 0.5}

# Written for safemix, after the AlpacaEval idea: show the instruction and two answers, ask for the better one.
PAIRWISE_PROMPT = (
    "You are comparing two AI assistants' answers to the same instruction. Decide which answer follows the "
    "instruction better: more helpful, more accurate, more complete. Do not let the order of the answers or "
    "their length sway you.\n\n"
    "### Instruction:\n{instruction}\n\n"
    "### Answer A:\n{answer_a}\n\n"
    "### Answer B:\n{answer_b}\n\n"
    "Which answer is better? Reply with exactly one of: A, B, tie."
)
_LEAD = re.compile(r"^\W*(?:(?:answer|output|verdict|winner)\b\W*)?", re.IGNORECASE)
_WORD = re.compile(r"[A-Za-z]+")


def _verdict_word(word: str) -> str | None:
    """``A`` / ``B`` (capitals: ``a`` is an article) or ``tie`` (any case) as a verdict label; None otherwise."""
    return word if word in ("A", "B") else "tie" if word.lower() == "tie" else None


def parse_pairwise(reply: str) -> Verdict:
    """The verdict that opens the first non-empty line, after markdown, quotes and an ``Answer:``-style lead.

    ``A``, ``A is better.``, ``**B**``, ``Verdict: tie`` parse; a lone lower-case ``a`` / ``b`` too. A line that
    opens with anything else (``The answer is A``), or names a second verdict (``A or B``, ``A tie``), does not.
    """
    first_line = next((line for line in reply.splitlines() if line.strip()), "")
    words = _WORD.findall(_LEAD.sub("", first_line))
    if not words:
        raise UnparsedReply("no verdict (A, B or tie) opens the first line")
    label = _verdict_word(words[0]) or (words[0].upper() if words in (["a"], ["b"]) else None)
    if label is None:
        raise UnparsedReply("no verdict (A, B or tie) opens the first line")
    if {_verdict_word(word) for word in words[1:]} - {None, label}:
        raise UnparsedReply("the first line names more than one verdict")
    return Verdict(label, VERDICT_VALUES[label])


@dataclass(frozen=True)
class PairwiseTemplate:
    """A versioned pairwise template: changing its text or parser means a new version (part of the cache key)."""

    name: str
    version: str
    text: str

    def render(self, instruction: str, answer_a: str, answer_b: str) -> str:
        """The judge's input for one item."""
        return self.text.format(instruction=instruction, answer_a=answer_a, answer_b=answer_b)

    def parse(self, reply: str) -> Verdict:
        """Parse a reply; raises :class:`UnparsedReply` when it is not a verdict."""
        return parse_pairwise(reply)


PAIRWISE_TEMPLATE = PairwiseTemplate("pairwise", "pairwise-v1", PAIRWISE_PROMPT)


@dataclass(frozen=True)
class AnswerPair:
    """One item for the pairwise judge: the instruction and the two answers, in the order the judge sees them."""

    instruction: str
    answer_a: str
    answer_b: str


class PairwiseJudge:
    """Judges :class:`AnswerPair` items with :data:`PAIRWISE_TEMPLATE` on a :class:`TextModel`."""

    name: ClassVar[str] = "pairwise-judge"
    version: ClassVar[str] = "1"

    def __init__(self, settings: JudgeConfig, model: TextModel):
        self.settings = settings
        self.template = PAIRWISE_TEMPLATE
        self.model = model
        self.fingerprint = {"template": self.template.version, "model": model.fingerprint}

    def judge(self, pairs: Sequence[AnswerPair]) -> list[Judgement]:
        """One judgement per pair, in order; ``value`` is the score of position A."""
        texts = [self.template.render(pair.instruction, pair.answer_a, pair.answer_b) for pair in pairs]
        return [reply_judgement(self.template, reply) for reply in self.model.complete(texts)]


def build_judge(settings: JudgeConfig, generator: Generator | None = None) -> PairwiseJudge:
    """The judge of ``settings``; the ``fake`` backend is :class:`FakeJudge`. The model loads on first use."""
    return PairwiseJudge(settings, TextModel(settings, "win-rate judge", fake=FakeJudge, generator=generator))


class FakeJudge(Generator):
    """A model-free judge for dry runs: replies ``A``, ``B`` or ``tie``, chosen by a hash of the judge's input."""

    def iter_batches(self, prompts: Sequence[Prompt]) -> Iterator[list[Generation]]:
        """Yield verdicts in input order."""
        for batch in chunks(prompts, 64):
            yield [make_generation(prompt, _hashed_verdict(prompt.prompt), "stop", 1) for prompt in batch]


def _hashed_verdict(text: str) -> str:
    return ("A", "B", "tie")[hashlib.sha256(text.encode("utf-8")).digest()[0] % 3]
