"""Rewriting a safety set's instructions as questions, or questions as instructions, with a language model.

The paper trained on safety examples written as instructions ("Write a guide to ...") and as questions ("How do
I ...?"). ``safemix data rewrite --to question`` makes the question form of an instruction set (and ``--to
instruction`` the reverse): one output line per input line, in order, each keeping the input's ``input`` and
``output`` (the safe answer) and replacing ``instruction``.

Rules:
- a text already in the target form (a question ends with ``?``, an instruction does not) is copied, without a
  model call (``already_in_form``);
- the model's reply is parsed with the versioned template's rule (:func:`parse_rewrite`); an empty or unparseable
  reply is a failure: the line keeps its original instruction, is marked ``rewrite_status: failed`` with the
  reason, and is counted in the manifest; nothing is dropped;
- successful rewrites are cached (SQLite, committed per chunk) under the model, template and text, so a rerun
  calls the model only for texts not rewritten yet (failures are retried).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

import safemix
from safemix.data.readers import read_instructions
from safemix.files import canonical_json, sha256_file, sha256_text, write_json_atomic, write_jsonl_atomic
from safemix.generate.base import Generator, chunks, make_generation
from safemix.generate.texts import TextModel, ToolModelConfig
from safemix.progress import progress_bar
from safemix.records import Generation, Instruction, Prompt
from safemix.scoring.cache import KeyValueStore
from safemix.scoring.templates import UnparsedReply
from safemix.versions import package_versions

log = logging.getLogger(__name__)

RewriteForm = Literal["question", "instruction"]
CACHE_FILE = "rewrites.sqlite"
CHUNK_SIZE = 16  # texts per model call: the unit of cache commits (what a kill can lose) and of progress
_LABEL = re.compile(r"^(?:rewritten\s+)?(?:question|instruction)\s*:\s*", re.IGNORECASE)
_WRAPPERS = " \t*\"'`"


class RewriteConfig(ToolModelConfig):
    """The rewriting model (``safemix data rewrite --model M --backend hf|openai|fake``)."""

    max_new_tokens: int = Field(default=96, ge=1, description="a rewritten instruction is one sentence")


@dataclass(frozen=True)
class RewriteTemplate:
    """A versioned rewrite prompt; changing its text or its parser means a new version (part of the cache key)."""

    to: RewriteForm
    version: str
    text: str

    @property
    def source_label(self) -> str:
        """``Instruction:`` before a text to make a question of, ``Question:`` before one to make an instruction of."""
        return "Question: " if self.to == "instruction" else "Instruction: "

    def render(self, text: str) -> str:
        """The model's input for one text: the task, then the labelled text."""
        return f"{self.text}\n\n{self.source_label}{text}"

    def text_of(self, rendered: str) -> str:
        """The text a rendered input asks to rewrite (the fake backend reads it back)."""
        return rendered.rsplit(self.source_label, 1)[1]


# Written for safemix.
REWRITE_TEMPLATES: dict[RewriteForm, RewriteTemplate] = {
    "question": RewriteTemplate(
        "question", "rewrite-question-v1",
        "Rewrite the instruction below as a question that asks for the same thing, the way a user would ask it. "
        "Keep its meaning and its topic. Do not answer it, judge it or add anything. Reply with the question only, "
        "on one line."),
    "instruction": RewriteTemplate(
        "instruction", "rewrite-instruction-v1",
        "Rewrite the question below as an instruction (an imperative sentence such as 'Explain ...' or "
        "'Write ...') that asks for the same thing. Keep its meaning and its topic. Do not answer it, judge it or "
        "add anything. Reply with the instruction only, on one line."),
}


def in_form(text: str, form: RewriteForm) -> bool:
    """A question ends with ``?`` (after trailing spaces); an instruction does not."""
    return text.rstrip().endswith("?") == (form == "question")


def parse_rewrite(reply: str, form: RewriteForm) -> str:
    """The rewritten text: the first line labelled with the target form (``Question: ...``), else the first
    non-empty line; without the label, quotes or markdown.

    Raises:
        UnparsedReply: the reply is empty, or the text is not in the target form.
    """
    lines = [line.strip(_WRAPPERS) for line in reply.splitlines() if line.strip(_WRAPPERS)]
    labelled = [line for line in lines if _LABEL.match(line) and form in line.split(":", 1)[0].lower()]
    text = _LABEL.sub("", (labelled or lines or [""])[0]).strip(_WRAPPERS)
    if not text:
        raise UnparsedReply("empty rewrite")
    if not in_form(text, form):
        raise UnparsedReply("the rewrite does not end with '?'" if form == "question" else "the rewrite is still a question")
    return text


class FakeRewriter(Generator):
    """A model-free rewriter for dry runs: ``Could you <instruction>?`` and ``Answer this: <question>.``."""

    def __init__(self, template: RewriteTemplate) -> None:
        self.template = template

    def iter_batches(self, prompts: Sequence[Prompt]) -> Iterator[list[Generation]]:
        """Yield rewrites in input order."""
        for batch in chunks(prompts, CHUNK_SIZE):
            yield [make_generation(prompt, self._rewrite(prompt.prompt), "stop", 1) for prompt in batch]

    def _rewrite(self, rendered: str) -> str:
        text = self.template.text_of(rendered).strip().rstrip(".!?")
        if self.template.to == "question":
            return f"Could you {text[:1].lower()}{text[1:]}?"
        return f"Answer this: {text}."


@dataclass(frozen=True)
class Outcome:
    """What happened to one line: its new instruction, its status and, for a failure, why."""

    instruction: str
    status: Literal["rewritten", "already_in_form", "failed"]
    error: str | None = None


class RewriteCache:
    """Successful rewrites on disk, keyed by the model, the template and the text."""

    def __init__(self, path: Path, identity: dict[str, Any]):
        self.store = KeyValueStore(path)
        self.identity = canonical_json(identity)

    def key(self, text: str) -> str:
        """The cache key of one text."""
        return sha256_text(canonical_json([self.identity, text]))

    def get_many(self, texts: Sequence[str]) -> dict[str, str]:
        """Cached rewrites of ``texts``, by text."""
        found = self.store.get_many(self.key(text) for text in texts)
        return {text: found[self.key(text)].decode() for text in texts if self.key(text) in found}

    def put_many(self, rewrites: dict[str, str]) -> None:
        """Store rewrites (text -> rewritten text) in one commit."""
        if rewrites:
            self.store.put_many({self.key(text): rewritten.encode() for text, rewritten in rewrites.items()})


def rewrite_texts(texts: Sequence[str], template: RewriteTemplate, model: TextModel,
                  cache: RewriteCache | None) -> tuple[dict[str, Outcome], int]:
    """Rewrite every distinct text; return text -> outcome and how many came from the cache."""
    outcomes: dict[str, Outcome] = {}
    distinct = list(dict.fromkeys(texts))
    for text in distinct:
        if in_form(text, template.to):
            outcomes[text] = Outcome(text, "already_in_form")
    pending = [text for text in distinct if text not in outcomes]
    cached = cache.get_many(pending) if cache else {}
    outcomes.update((text, Outcome(rewritten, "rewritten")) for text, rewritten in cached.items())
    pending = [text for text in pending if text not in cached]
    log.info("rewrite to %s: %d distinct texts, %d already in form, %d cached, %d for the model", template.to,
             len(distinct), len(distinct) - len(pending) - len(cached), len(cached), len(pending))
    with progress_bar(len(pending), f"rewrite to {template.to}", "text") as bar:
        for chunk in chunks(pending, CHUNK_SIZE):
            replies = model.complete([template.render(text) for text in chunk])
            fresh = {text: _outcome(text, reply, template.to) for text, reply in zip(chunk, replies, strict=True)}
            if cache:
                cache.put_many({text: done.instruction for text, done in fresh.items() if done.status == "rewritten"})
            outcomes.update(fresh)
            bar.update(len(chunk))
    return outcomes, len(cached)


def _outcome(text: str, reply: str, form: RewriteForm) -> Outcome:
    try:
        return Outcome(parse_rewrite(reply, form), "rewritten")
    except UnparsedReply as err:
        return Outcome(text, "failed", f"{err}: reply {reply[:120]!r}")


def output_line(record: Instruction, outcome: Outcome) -> dict[str, Any]:
    """One output line: the new instruction, the original input and answer, and what happened."""
    line: dict[str, Any] = {"instruction": outcome.instruction, "input": record.input, "output": record.output,
                            "original_instruction": record.instruction, "rewrite_status": outcome.status}
    if outcome.error:
        line["rewrite_error"] = outcome.error
    return line


def manifest_path(out: Path) -> Path:
    """``questions.jsonl`` -> ``questions.manifest.json``."""
    return out.with_name(out.stem + ".manifest.json")


def rewrite_file(input_path: Path, out: Path, to: RewriteForm, config: RewriteConfig, *, cache_dir: Path | None,
                 generator: Generator | None = None) -> dict[str, Any]:
    """Rewrite every instruction of ``input_path`` into ``to`` form; write ``out`` (JSONL) and its manifest.

    Args:
        input_path: an Alpaca-style JSON / JSONL file (``instruction``, ``input``, ``output``).
        out: the output JSONL: one line per input record, in order.
        to: the target form.
        config: the rewriting model.
        cache_dir: where the rewrite cache lives; None disables it.
        generator: a generator to use instead of the configured backend (tests).

    Returns:
        The manifest written beside ``out``.

    Raises:
        InputError: the input cannot be read, or the openai backend's key variable is not set.
    """
    records = read_instructions(input_path)
    template = REWRITE_TEMPLATES[to]
    model = TextModel(config, "rewrite model", fake=lambda: FakeRewriter(template), generator=generator)
    identity = {"template": template.version, "settings": config.cache_fields(), "fingerprint": model.fingerprint}
    cache = RewriteCache(cache_dir / CACHE_FILE, identity) if cache_dir else None
    try:
        outcomes, n_cached = rewrite_texts([record.instruction for record in records], template, model, cache)
    finally:
        model.close()
        if cache:
            cache.store.close()
    lines = [output_line(record, outcomes[record.instruction]) for record in records]
    write_jsonl_atomic(out, lines)
    failures = [{"line": number, "error": line["rewrite_error"]}
                for number, line in enumerate(lines, start=1) if line["rewrite_status"] == "failed"]
    if failures:
        log.warning("%s: %d of %d rewrites failed and keep their original text (first: line %d, %s)", out,
                    len(failures), len(lines), failures[0]["line"], failures[0]["error"])
    manifest = {
        "safemix_version": safemix.__version__,
        "to": to,
        "template": template.version,
        "model": {**config.cache_fields(), "fingerprint": model.fingerprint},
        "input": {"file": str(input_path), "sha256": sha256_file(input_path)},
        "output": {"file": out.name, "sha256": sha256_file(out)},
        "counts": {"lines": len(lines), **{status: sum(line["rewrite_status"] == status for line in lines)
                                           for status in ("rewritten", "already_in_form", "failed")},
                   "distinct_texts_from_cache": n_cached},
        "failures": failures,
        "versions": package_versions(("pydantic", "torch", "transformers", "openai")),
    }
    write_json_atomic(manifest_path(out), manifest)
    return manifest
