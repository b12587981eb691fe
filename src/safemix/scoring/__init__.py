"""Scorers: named plug-ins that judge responses, loaded lazily so that listing them imports no torch.

``safemix scorers`` prints this registry; ``safemix score --scorer NAME`` builds one with its settings. A registry
entry also says what the scorer's labels mean (its metric kind), which is all ``safemix.metrics``, the report and
the annotation tools need to know about it: adding a scorer is one entry here.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from difflib import get_close_matches
from typing import Any, Literal

from pydantic import ValidationError

from safemix.errors import InputError, setting_problem
from safemix.scoring.base import Judgement, Scorer, ScorerClass, ScorerSettings

__all__ = ["SCORERS", "Judgement", "MetricKind", "Scorer", "ScorerInfo", "ScorerSettings", "build_scorer",
           "get_scorer_info", "score_file_stem", "scorer_metric_key"]

Network = Literal["offline", "optional", "required"]
#: What a scorer's lines measure, which decides its metrics (``safemix.metrics``): ``refusal`` (labels
#: full_compliance / full_refusal / partial_refusal), ``harmfulness`` (a score per answer), ``moderation`` (flagged
#: or not, with a score) or ``unsafe`` (labels safe / unsafe).
MetricKind = Literal["refusal", "harmfulness", "moderation", "unsafe"]


@dataclass(frozen=True)
class ScorerInfo:
    """A registry entry: where the scorer class lives, what it needs, and what its lines measure.

    Attributes:
        kind: the metric kind of its lines.
        template_kinds: for a scorer with templates (``llm-judge``), the kind of each template that differs from
            ``kind``; score lines name their template, and metrics key them ``NAME/TEMPLATE``.
        harm_fields: template -> the field of a refusal line that also says whether the response is harmful
            (its share becomes an ``unsafe_rate``).
    """

    name: str
    target: str
    network: Network
    description: str
    kind: MetricKind
    template_kinds: Mapping[str, MetricKind] = field(default_factory=dict)
    harm_fields: Mapping[str, str] = field(default_factory=dict)

    def kind_of(self, template: str | None) -> MetricKind:
        """The metric kind of the lines written with ``template`` (None: the scorer has no template)."""
        return self.template_kinds.get(template, self.kind) if template else self.kind

    def scorer_class(self) -> ScorerClass:
        """Import and return the scorer class (``module:Class``)."""
        module, _, attr = self.target.partition(":")
        scorer_class: ScorerClass = getattr(importlib.import_module(module), attr)
        return scorer_class


SCORERS: dict[str, ScorerInfo] = {
    info.name: info
    for info in (
        ScorerInfo("refusal-strmatch", "safemix.scoring.strmatch:StringMatchRefusal", "offline",
                   "XSTest's prefix rule: full_refusal / full_compliance (the baseline)", "refusal"),
        ScorerInfo("refusal-judge", "safemix.scoring.judge:RefusalJudge", "offline",
                   "learned refusal classifier reading prompt and response (MiniLM cross-encoder, CPU): "
                   "full_compliance / full_refusal / partial_refusal, value = P(refusal)", "refusal"),
        ScorerInfo("harmfulness-rm", "safemix.scoring.harmfulness:HarmfulnessRewardModel", "optional",
                   "the paper's absolute harmfulness predictor (HF sequence-classification regressor; "
                   "needs the network unless the model is local)", "harmfulness"),
        ScorerInfo("moderation", "safemix.scoring.moderation:OpenAIModeration", "required",
                   "OpenAI moderation API (needs OPENAI_API_KEY): flagged, category scores, value = max score",
                   "moderation"),
        ScorerInfo("llm-judge", "safemix.scoring.llm_judge:LLMJudge", "optional",
                   "a language model as judge (local HF model, or an OpenAI-compatible endpoint): "
                   "templates xstest, llama-guard-3, harmbench, wildguard", "unsafe",
                   template_kinds={"xstest": "refusal", "wildguard": "refusal"},
                   harm_fields={"wildguard": "response_harmful"}),
    )
}


def score_file_stem(scorer: str, template: str | None) -> str:
    """The name of a scorer's score file in a run, without ``.jsonl``: the scorer, plus its template for a scorer
    with templates (``refusal-judge``, ``llm-judge-xstest``); one file per template."""
    return f"{scorer}-{template}" if template else scorer


def scorer_metric_key(scorer: str, template: str | None) -> str:
    """How metrics, the report and ``summary.csv`` name a scorer's lines: the scorer, plus ``/TEMPLATE`` for a
    scorer with templates (``refusal-judge``, ``llm-judge/xstest``)."""
    return f"{scorer}/{template}" if template else scorer


def get_scorer_info(name: str) -> ScorerInfo:
    """Look up a scorer by name; an unknown name is an input error that suggests close ones."""
    if name in SCORERS:
        return SCORERS[name]
    close = get_close_matches(name, SCORERS, n=2)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise InputError(f"unknown scorer {name!r}{hint} (known: {', '.join(SCORERS)})")


def build_scorer(name: str, settings: Mapping[str, Any] | None = None) -> Scorer:
    """Validate ``settings`` against the scorer's settings model and construct the scorer.

    Raises:
        InputError: unknown scorer, an unknown or invalid setting, or a missing requirement (an API key).
    """
    cls = get_scorer_info(name).scorer_class()
    try:
        validated = cls.settings_model.model_validate(dict(settings or {}))
    except ValidationError as err:
        raise InputError(f"scorer {name!r}: {setting_problem(err)}") from None
    return cls(validated)
