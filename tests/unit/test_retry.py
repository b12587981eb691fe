"""The shared retry helper: what is retried, how long it waits, and what propagates."""

from __future__ import annotations

import pytest

from safemix import retry
from safemix.retry import call_with_retries


class Transient(Exception):
    pass


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    slept: list[float] = []
    monkeypatch.setattr(retry.time, "sleep", slept.append)
    return slept


def flaky(failures: list[Exception], result: str = "ok"):  # type: ignore[no-untyped-def]
    def call() -> str:
        if failures:
            raise failures.pop(0)
        return result
    return call


def test_retries_with_doubling_delays_capped(sleeps: list[float]) -> None:
    call = flaky([Transient(), Transient(), Transient()])
    assert call_with_retries(call, retryable=lambda e: isinstance(e, Transient), max_retries=3, backoff_s=1.0, max_backoff_s=3.0) == "ok"
    assert sleeps == [1.0, 2.0, 3.0]


def test_the_error_asks_for_its_own_delay(sleeps: list[float]) -> None:
    call = flaky([Transient()])
    call_with_retries(call, retryable=lambda e: True, max_retries=1, backoff_s=1.0, retry_after_s=lambda e: 7.5)
    assert sleeps == [7.5]


def test_last_retryable_error_propagates(sleeps: list[float]) -> None:
    with pytest.raises(Transient):
        call_with_retries(flaky([Transient(), Transient()]), retryable=lambda e: True, max_retries=1, backoff_s=0.5)
    assert sleeps == [0.5]


def test_other_errors_are_not_retried(sleeps: list[float]) -> None:
    with pytest.raises(ValueError):
        call_with_retries(flaky([ValueError("bad request")]), retryable=lambda e: isinstance(e, Transient), max_retries=5, backoff_s=1.0)
    assert sleeps == []
