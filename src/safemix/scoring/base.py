"""The scorer contract: one judgement per (prompt, response), in order; never an invented label."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict

from safemix.errors import InputError


@dataclass(frozen=True)
class Judgement:
    """What a scorer says about one response.

    Attributes:
        value: the number the scorer measures (probability of refusal, harmfulness, max category score), or
            None when the item could not be scored.
        label: the scorer's class for the item (``full_refusal``, ``flagged``, ``unsafe``, ...), or None.
        unscored_reason: why ``value`` is None (a parse failure, an API error after retries, ...).
        extra: scorer-specific fields written next to the standard ones (``flagged``, ``categories``, ...).
    """

    value: float | None
    label: str | None = None
    unscored_reason: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def unscored(cls, reason: str, **extra: Any) -> Judgement:
        """A judgement for an item the scorer could not judge."""
        return cls(value=None, label=None, unscored_reason=reason, extra=extra)


class ScorerSettings(BaseModel):
    """Base of every scorer's settings: unknown keys are errors, and everything here goes into the cache key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def cache_fields(self) -> dict[str, Any]:
        """The settings that change a judgement (the cache key and the manifest use these)."""
        return self.model_dump(mode="json", exclude=self.runtime_only)

    #: settings that change speed but never values (batch size, device, worker counts).
    runtime_only: ClassVar[set[str]] = set()


class CacheKeySettings(Protocol):
    """Settings that say which of them change a judgement."""

    def cache_fields(self) -> dict[str, Any]:
        """The settings that change a judgement."""
        ...


class IdentifiedJudge(Protocol):
    """What decides a judge's judgements, from which its cache key and manifest entries are built: every
    :class:`Scorer`, and the win-rate judge."""

    @property
    def name(self) -> str: ...
    @property
    def version(self) -> str: ...
    @property
    def settings(self) -> CacheKeySettings: ...
    @property
    def fingerprint(self) -> dict[str, str]: ...


class ScorerClass(Protocol):
    """A scorer class as the registry names it: its version, its settings model, and a constructor taking
    validated settings."""

    version: str
    settings_model: type[ScorerSettings]

    def __call__(self, settings: Any) -> Scorer:
        """Build the scorer (models and keys are checked here, not at import)."""
        ...


class Scorer(Protocol):
    """Judges responses to prompts. Implementations live in ``safemix.scoring.*`` and are named in the registry."""

    name: str
    #: bump when the scorer's judgements change for the same settings: old cache entries stop matching.
    version: str
    settings: ScorerSettings
    #: facts read from files that change judgements (a head's or model's sha256); part of the cache key.
    fingerprint: dict[str, str]

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> list[Judgement]:
        """Return exactly one :class:`Judgement` per (prompt, response), in input order."""
        ...


def check_pairs(prompts: Sequence[str], responses: Sequence[str]) -> None:
    """Raise an input error when prompts and responses do not pair up one to one."""
    if len(prompts) != len(responses):
        raise InputError(f"{len(prompts)} prompts but {len(responses)} responses: they must pair up one to one")
