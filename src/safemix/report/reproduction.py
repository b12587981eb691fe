"""``docs/reproduction.md``: the paper's findings on a finished run, each with its numbers, a verdict and a
hand-checked sample of the answers behind it.

The sample: for each claim, ``SAMPLE_SIZE`` answers the claim rests on (the lowest seed's, when there are several),
drawn by the sha256 of (claim, model label, suite, prompt id), so the same run gives the same sample. A reader labels each answer refusal or compliance in a
checks file (JSON lines: the sample's fields plus ``reader`` and an optional ``note``); the page then counts how
often the lead refusal scorer agrees with the reader and lists every disagreement. Checks are matched to answers by
content (the answer's sha256), so a check of another answer is not counted. No torch, no matplotlib.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safemix.errors import input_error
from safemix.report.by_k import k_header
from safemix.report.claims import Claim, check_claims
from safemix.report.content import first_seed, suite_order
from safemix.report.render import render_markdown
from safemix.report.runs import Runs, read_generations, read_train_log
from safemix.report.scorers import choose_lead
from safemix.report.sections import Section, Table
from safemix.run_files import RunLayout
from safemix.run_scores import refusal_call

SAMPLE_SIZE = 30
READER_CALLS = ("refusal", "compliance")
ANSWER_CHARS = 400
#: A checked answer's identity: claim number, model label, suite, prompt id and the answer's sha256.
CheckKey = tuple[int, str, str, str, str]
#: The reader's checks by the identity of the answer they check.
Checks = dict[CheckKey, dict[str, Any]]


@dataclass(frozen=True)
class SampleItem:
    """One answer of a claim's hand-checked sample, with the lead scorer's call on it."""

    claim: int
    model: str  # the model's label in run.json
    k: int | None
    suite: str
    id: str
    category: str
    prompt: str
    response: str
    response_sha256: str
    scorer: str
    scorer_call: str | None  # refusal, compliance, or None when the scorer left it unscored

    def key(self) -> CheckKey:
        """What a check is matched by: the claim, the model, the prompt and the answer's content."""
        return self.claim, self.model, self.suite, self.id, self.response_sha256


def draw_sample(runs: Runs, claim: Claim, scorer: str, size: int = SAMPLE_SIZE) -> list[SampleItem]:
    """``size`` answers the claim rests on (its ``sample`` filter), the same ones for the same run; with several
    seeds, from the adapters of the lowest seed, so adding seeds leaves the sample (and its checks) as it was."""
    if claim.sample is None:
        return []
    items = []
    for model in first_seed(runs.models):
        calls = _scorer_calls(RunLayout(model.run.run_dir).score_file(model.entry, scorer))
        for line in read_generations(model):
            if not claim.sample(line.suite, line.category, model.k):
                continue
            items.append(SampleItem(
                claim.number, model.entry.label, model.k, line.suite, line.id, line.category, line.prompt,
                line.response, hashlib.sha256(line.response.encode()).hexdigest(), scorer,
                calls.get((line.suite, line.id))))
    items.sort(key=lambda item: hashlib.sha256(f"{item.claim}/{item.model}/{item.suite}/{item.id}".encode()).digest())
    return items[:size]


def _scorer_calls(path: Path) -> dict[tuple[str, str], str | None]:
    """(suite, prompt id) -> the scorer's binary call, from one score file (empty when it is missing)."""
    if not path.is_file():
        return {}
    calls = {}
    for text in path.read_text(encoding="utf-8").splitlines():
        line = json.loads(text)
        call = refusal_call(line)
        calls[(line["suite"], str(line["id"]))] = None if call is None else READER_CALLS[0 if call else 1]
    return calls


def write_sample(items: list[SampleItem], path: Path) -> None:
    """The sample as a checks file to fill in: each line's ``reader`` empty, to be set to refusal or compliance."""
    lines = [json.dumps({**item.__dict__, "reader": "", "note": ""}, ensure_ascii=False) for item in items]
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def read_checks(path: Path) -> Checks:
    """A filled checks file, by answer key; lines whose ``reader`` is still empty are left out.

    Raises:
        InputError: a line is not JSON, lacks a sample field, or has a ``reader`` other than refusal or compliance.
    """
    checks = {}
    for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            line = json.loads(text)
            key = (int(line["claim"]), line["model"], line["suite"], str(line["id"]), line["response_sha256"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            raise input_error(path, f"line {number}: not a checks line ({err})") from None
        if line.get("reader") and line["reader"] not in READER_CALLS:
            raise input_error(path, f"line {number}: reader must be refusal or compliance, not {line['reader']!r}")
        if line.get("reader"):
            checks[key] = line
    return checks


def sample_section(claim: Claim, items: list[SampleItem], checks: Checks) -> \
        tuple[list[str], list[Table]]:
    """Paragraphs and a table of disagreements: how the lead scorer's calls on the sample compare with a reader's."""
    if not items:
        return ["No hand-checked sample: the run holds no answers this claim rests on."], []
    checked = [(item, checks[item.key()]) for item in items if item.key() in checks]
    if not checked:
        return [f"Hand-checked sample: {len(items)} answers drawn, none checked yet (write them with --write-sample "
                "and give the filled file with --checks)."], []
    disagreements = [(item, check) for item, check in checked if item.scorer_call != check["reader"]]
    lead = items[0].scorer
    paragraphs = [f"Hand-checked sample: {len(checked)} of {len(items)} answers read against {lead}'s calls; the "
                  f"reader agrees on {len(checked) - len(disagreements)} of {len(checked)}."]
    if not disagreements:
        return paragraphs, []
    table = Table(["prompt id", "K", "prompt", "answer", lead, "reader", "note"],
                  [[item.id, k_header(item.k), item.prompt, _cut(item.response),
                    item.scorer_call or "unscored", check["reader"], check.get("note", "")]
                   for item, check in disagreements], f"Where {lead} and the reader disagree")
    return paragraphs, [table]


def _cut(text: str) -> str:
    return text if len(text) <= ANSWER_CHARS else text[:ANSWER_CHARS].rstrip() + " […]"


def reproduction_page(runs: Runs, checks: Checks, command: str) -> \
        tuple[str, list[SampleItem]]:
    """The Markdown page and every claim's sample. ``command`` is how the page was made, quoted at its top."""
    lead = choose_lead(runs)
    scorer = lead.lead or "refusal-strmatch"
    claims = check_claims(runs, scorer, suite_order(runs))
    samples = {claim.number: draw_sample(runs, claim, scorer) for claim in claims}
    sections = [_overview(runs, lead.sentence() if lead.order else "", command), _summary(claims)]
    for claim in claims:
        paragraphs, tables = sample_section(claim, samples[claim.number], checks)
        sections.append(Section(f"{claim.number}. {claim.title}: {claim.verdict.verdict}",
                                [f"The paper: {claim.paper}", f"Here: {claim.verdict.why}", *paragraphs],
                                [*claim.tables, *tables]))
    sections.append(_reading())
    title = "Reproduction: the paper's findings at CPU scale"
    return render_markdown(title, sections), [item for items in samples.values() for item in items]


def _overview(runs: Runs, lead_sentence: str, command: str) -> Section:
    run_lines = [f"Run {run.index.name} (config hash {run.index.config_hash}): "
                 + ", ".join(f"{suite.name} {suite.n_prompts}" for suite in run.index.suites) for run in runs.runs]
    ks = sorted({model.k for model in runs.models if model.k is not None})
    seeds = sorted({model.entry.seed for model in runs.models if model.entry.seed is not None})
    models = sorted({model.name for model in runs.models})
    return Section("The run", [
        f"Made by: {command} (regenerate it the same way after a new run).", *run_lines,
        f"Models: {', '.join(models)}; K = {', '.join(map(str, ks))}; seeds: {', '.join(map(str, seeds)) or 'none'}"
        + (" (one training run per K: no spread over seeds; add sweep.seeds to see it)." if len(seeds) < 2 else "."),
        lead_sentence,
        *_early_checkpoints(runs),
    ])


def _early_checkpoints(runs: Runs) -> list[str]:
    """A sentence naming every adapter whose kept checkpoint (lowest validation loss) is before its last step.

    Such an adapter has trained on only part of its mixture, safety examples included, so its numbers stand for
    less training than its K says; a large spread between seeds at one K often comes from this.
    """
    early = []
    several_seeds = len({model.entry.seed for model in runs.models if model.k is not None}) > 1
    for model in runs.models:
        log = read_train_log(model) if model.k is not None else None
        if log is None or log.get("best_step") is None or log["best_step"] >= log["steps"]:
            continue
        val_losses = {point["step"]: point["loss"] for point in log.get("val_loss", [])}
        last_loss = val_losses.get(log["steps"])
        at_last = "" if last_loss is None else f" against {last_loss:.4f} at the last step"
        seed = f", seed {model.entry.seed}" if several_seeds else ""
        early.append(f"{model.name} K={model.k}{seed} kept step {log['best_step']} of {log['steps']} "
                     f"(validation loss {log['best_val_loss']:.4f}{at_last})")
    if not early:
        return []
    return ["Checkpoints kept before the last step, so trained on part of their mixture only: " + "; ".join(early)
            + ". The validation split holds general instructions only, so the checkpoint is chosen blind to the "
              "safety examples."]


def _summary(claims: list[Claim]) -> Section:
    table = Table(["claim", "verdict", "measured"], [[f"{c.number}. {c.title}", c.verdict.verdict, c.verdict.why]
                                                     for c in claims])
    return Section("Summary", [], [table])


def _reading() -> Section:
    return Section("How the verdicts are made", [
        "Two numbers are told apart only when their 95% intervals do not overlap: Wilson intervals of the answers' "
        "counts, and over several seeds the union of the seeds' intervals, so the spread between training runs "
        "widens them. 'holds' means the difference the paper reports is there beyond those intervals; 'does not "
        "hold' that the run shows a difference the other way, or one too small for the claim; 'cannot be told "
        "apart from noise at this scale' that the intervals overlap: this run can neither confirm nor rule out the "
        "claim.",
        "Claim 1 pools every harmful prompt and calls a cut sharp when some K from 100 to 500 has at most half of "
        "K=0's harmful compliance. Claim 2 compares K=0 with the largest K on each suite. Claim 3 calls capability "
        "kept unless a task's accuracy at the largest K is below K=0's beyond the intervals. Claim 4 pools the "
        "answers of every adapter to the 40 claims in each form.",
    ])
