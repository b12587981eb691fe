"""The shipped measurement of the refusal scorers: ``scoring/heads/refusal-scorers-agreement.json``.

It says how often each refusal scorer's binary call (refusal or not) matched hand labels on a test set, and the
report leads its headline with the scorer measured best when the run has no audit labels of its own. Format::

    {"measured_on": "<one line: which test set>",
     "command": "<command that produced it>",
     "scorers": {"refusal-judge": {"accuracy": 0.96, "ci_low": 0.94, "ci_high": 0.97, "kappa": 0.9, "n": 420},
                 "refusal-strmatch": {...}}}

Scorers are named by their scorer key (``refusal-judge``, ``refusal-strmatch``, ``llm-judge/xstest``). No torch here.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from safemix.errors import first_problem, input_error

#: Where the measurement ships; absent until it has been measured.
AGREEMENT_FILE = Path(__file__).parent / "heads" / "refusal-scorers-agreement.json"


class ScorerAgreement(BaseModel):
    """One scorer's binary accuracy against the hand labels, its 95% interval, Cohen's kappa and the label count."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    accuracy: float = Field(ge=0, le=1)
    ci_low: float = Field(ge=0, le=1)
    ci_high: float = Field(ge=0, le=1)
    kappa: float | None = Field(default=None, ge=-1, le=1)
    n: int = Field(ge=1)

    @model_validator(mode="after")
    def _interval_holds_the_estimate(self) -> ScorerAgreement:
        if not self.ci_low <= self.accuracy <= self.ci_high:
            raise ValueError("needs ci_low <= accuracy <= ci_high")
        return self


class AgreementFile(BaseModel):
    """The whole file: what it was measured on, the command that measured it, and each scorer's numbers."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    measured_on: str = Field(min_length=1)
    command: str = Field(min_length=1)
    scorers: dict[str, ScorerAgreement] = Field(min_length=1)


def read_agreement_file(path: Path | None = None) -> AgreementFile | None:
    """Read the measurement (default: the shipped ``AGREEMENT_FILE``); None when the file does not exist.

    Raises:
        InputError: the file exists but is not valid JSON of the format above (the message names the key).
    """
    path = AGREEMENT_FILE if path is None else Path(path)
    if not path.is_file():
        return None
    try:
        return AgreementFile.model_validate_json(path.read_text(encoding="utf-8"))
    except ValidationError as err:
        raise input_error(path, first_problem(err)) from None
